"""The one thread that writes to every plain WebSocket client.

The hub hands every published batch to ``forward``, which only appends it to an inbox: the fan-out to the
clients happens here, on this thread, once per pass, so the feed thread does not walk every client for every
batch (and the two threads do not fight over the GIL for it). A pass takes the inbox (``Fresh``) and visits
every client once (``PlainSession.pump``): it takes the fresh errors and makes at most one non-blocking send,
the rest of the previous write if the kernel did not take all of it, else everything fresh or queued for the
client, as one buffer of pre-built frames (for most clients the same bytes, joined once per pass).
Passes run when the hub publishes (``wake``), at most once per ``tick_s`` so a
busy feed is written in batches, every ``tick_s`` while some client still has pending bytes, and every
``tend_every_s`` for keep-alive and kicks (``PlainSession.tend``). No per-client thread wakes up for an error,
and no write ever waits for a client: a client that does not read keeps its bytes pending, its queue fills,
drops the oldest errors and the hub's sweep disconnects it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from panopticon.bridge.codec import Delivery
from panopticon.bridge.loop import LoopThread
from panopticon.bridge.metrics import BridgeMetrics
from panopticon.bridge.plain import Fresh, PlainSession, Tally

log = logging.getLogger("bridge.sender")

TICK_S = 0.015
TEND_EVERY_S = 0.25


class Sender(LoopThread):
    def __init__(self, metrics: BridgeMetrics, tick_s: float = TICK_S, tend_every_s: float = TEND_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("bridge-sender")
        self._metrics = metrics
        self._tick_s = tick_s
        self._tend_every_s = tend_every_s
        self._clock = clock
        self._sessions: set[PlainSession] = set()
        self._inbox: list[tuple[int, Sequence[Delivery]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        super().close()
        self._wake.set()

    # ------------------------------------------------------------ sessions

    def add(self, session: PlainSession) -> None:
        """Register before the hub attaches its subscriber, so no batch published in between is missed."""
        with self._lock:
            self._sessions.add(session)
        self._wake.set()  # its replay is queued

    def remove(self, session: PlainSession) -> None:
        with self._lock:
            self._sessions.discard(session)

    def wake(self) -> None:
        """Something changed (a kick): run a pass soon."""
        self._wake.set()

    def forward(self, seq: int, deliveries: Sequence[Delivery]) -> None:
        """The hub published batch ``seq``: the next pass fans it out (called on the feed thread)."""
        with self._lock:
            self._inbox.append((seq, deliveries))
        self._wake.set()

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        tend_at = 0.0
        pending = False
        while not self._stop.is_set():
            if not pending:
                self._wake.wait(max(0.0, tend_at - self._clock()))
            self._wake.clear()
            started = self._clock()
            try:
                pending = self._pass(started >= tend_at, started)
            except Exception:  # never let the sender die silently
                log.exception("sender pass failed")
                pending = True
            if started >= tend_at:
                tend_at = started + self._tend_every_s
            self._stop.wait(max(0.0, started + self._tick_s - self._clock()))

    def _pass(self, tend: bool, now: float) -> bool:
        """Pump every session (and tend them when due); returns whether some still have pending bytes."""
        with self._lock:
            sessions = list(self._sessions)
            fresh = Fresh(self._inbox)
            self._inbox = []
        if tend:
            for session in sessions:
                session.tend(now)
        tally = Tally()
        for session in sessions:
            session.pump(tally, fresh, now)
        self._record(tally)
        return tally.pending > 0

    def _record(self, tally: Tally) -> None:
        if tally.dropped:
            self._metrics.dropped.inc(tally.dropped)
        if tally.filtered:
            self._metrics.filtered.inc(tally.filtered)
        if not tally.delivered:
            return
        self._metrics.delivered.inc(tally.delivered)
        now = self._clock()
        observe = self._metrics.delay.observe
        for read_at in tally.read_at:
            observe(now - read_at)
