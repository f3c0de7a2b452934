"""A small in-process cache of answers: sliding-window responses (``to`` = now, quantized to 10 s) and, in
``api.red``, rollup answers keyed by the minutes they read.

Entries live ``ttl_s`` seconds and the cache holds at most ``max_entries`` (least recently used goes first);
every new entry drops the expired ones, so sliding-window keys, each asked once, do not pile up until
``max_entries`` (a 10,000-log answer is megabytes).
A missing key is computed by one thread while the others asking for it wait (``through``).
Thread-safe: gunicorn threads of one worker share it. The clock is injected so tests need no sleeps.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class ResponseCache:
    def __init__(self, ttl_s: float = 5.0, max_entries: int = 512,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._flights: dict[Hashable, threading.Lock] = {}  # keys being computed
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= now:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        now = self._clock()
        with self._lock:
            for old in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[old]
            self._entries[key] = (now + self._ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def through(self, key: Hashable | None, compute: Callable[[], T]) -> T:
        """The cached answer for ``key``, computing and keeping it on a miss; ``None`` key: no caching.

        One thread computes a missing key while the others asking for it wait for its answer, so a wall of
        dashboards asking the same question at once costs one computation, not one each."""
        if key is None or self._ttl_s <= 0:
            return compute()
        value = self.get(key)
        if value is not None:
            return cast(T, value)
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        try:
            with flight:
                value = self.get(key)  # computed by the thread this one waited for
                if value is None:
                    value = compute()
                    self.put(key, value)
        finally:
            with self._lock:
                self._flights.pop(key, None)
        return cast(T, value)

    def __len__(self) -> int:
        return len(self._entries)
