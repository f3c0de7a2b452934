"""The lifecycle the bridge's own threads share (feed, sender, janitor): ``start``, ``close``, ``join``."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


class LoopThread(ABC):
    """One daemon thread running ``_run``, which returns once ``_stop`` is set.

    ``close`` only asks (it never blocks); ``join`` waits for the thread to end."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @abstractmethod
    def _run(self) -> None:
        """The loop, until ``_stop`` is set."""
