"""Fan-out: every error from the feed to every attached client, plus the replay ring and the sweeper.

``publish`` runs on the feed thread and never blocks on a client. It hands each batch, numbered, to
``forward`` (the plain-WebSocket sender, which fans it out to its clients on its own thread, in its next
pass) and appends it to the bounded queues of the other clients (Socket.IO). ``attach`` records the number of
the last batch a client's replay covers, so a client neither misses nor repeats a batch. Kicks call
``notify`` (the sender's ``wake``).
``sweep`` (the janitor thread, a few times a second) kicks clients whose queue stayed full too long and
cuts the sockets of kicked clients that did not leave within the grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from panopticon.bridge.clients import GOING_AWAY, POLICY_VIOLATION, Subscriber
from panopticon.bridge.codec import Delivery
from panopticon.bridge.loop import LoopThread
from panopticon.bridge.metrics import BridgeMetrics

log = logging.getLogger("bridge.hub")


class Hub:
    def __init__(self, replay: int, slow_client_s: float, metrics: BridgeMetrics,
                 clock: Callable[[], float] = time.monotonic, close_grace_s: float = 5.0,
                 notify: Callable[[], None] = lambda: None,
                 forward: Callable[[int, Sequence[Delivery]], None] = lambda seq, deliveries: None) -> None:
        self._ring: deque[Delivery] = deque(maxlen=replay) if replay else deque(maxlen=0)
        self._subscribers: set[Subscriber] = set()
        self._queued: set[Subscriber] = set()  # clients whose queue publish fills (the others are forwarded)
        self._seq = 0  # number of the last published batch
        self._lock = threading.Lock()
        self._slow_client_s = slow_client_s
        self._close_grace_s = close_grace_s
        self._metrics = metrics
        self._clock = clock
        self._notify = notify
        self._forward = forward
        self._closing = False

    # ------------------------------------------------------------ clients

    def attach(self, subscriber: Subscriber, forwarded: bool = False) -> bool:
        """Queue the replay (oldest first) and start fanning out to the client; False when shutting down.

        ``forwarded``: the client gets later batches through ``forward`` (it must be registered there
        first), not from ``publish``."""
        with self._lock:
            if self._closing:
                return False
            replay = [d for d in self._ring if subscriber.subscription.matches(d)]
            subscriber.queue.offer(replay, self._clock())
            subscriber.attached_seq = self._seq
            self._subscribers.add(subscriber)
            if not forwarded:
                self._queued.add(subscriber)
        self._metrics.clients.labels(subscriber.protocol).inc()
        self._metrics.connections.labels(subscriber.protocol).inc()
        log.info("client connected: peer=%s protocol=%s filters=%s replay=%d", subscriber.peer,
                 subscriber.protocol, subscriber.subscription.describe(), len(replay))
        return True

    def detach(self, subscriber: Subscriber, reason: str) -> None:
        with self._lock:
            if subscriber not in self._subscribers:
                return
            self._subscribers.discard(subscriber)
            self._queued.discard(subscriber)
        label = subscriber.kick.label if subscriber.kick else reason
        self._metrics.clients.labels(subscriber.protocol).dec()
        self._metrics.disconnects.labels(label).inc()
        log.info("client disconnected: peer=%s protocol=%s reason=%s delivered=%d dropped=%d after=%.1fs",
                 subscriber.peer, subscriber.protocol, reason, subscriber.delivered, subscriber.dropped,
                 self._clock() - subscriber.connected_at)

    def count(self) -> int:
        return len(self._subscribers)

    # ------------------------------------------------------------ fan-out

    def publish(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self._lock:
            self._ring.extend(deliveries)
            self._seq += 1
            seq = self._seq
            subscribers = tuple(self._queued)
        self._forward(seq, deliveries)
        now = self._clock()
        dropped = filtered = 0
        for subscriber in subscribers:
            batch = deliveries
            if subscriber.subscription.filters:
                batch = [d for d in deliveries if subscriber.subscription.matches(d)]
                filtered += len(deliveries) - len(batch)
            if batch:
                lost = subscriber.queue.offer(batch, now)
                subscriber.dropped += lost
                dropped += lost
        self._metrics.relayed.inc(len(deliveries))
        if dropped:
            self._metrics.dropped.inc(dropped)
        if filtered:
            self._metrics.filtered.inc(filtered)

    # ------------------------------------------------------------ housekeeping

    def sweep(self) -> None:
        now = self._clock()
        with self._lock:
            subscribers = tuple(self._subscribers)
        for subscriber in subscribers:
            self._sweep_one(subscriber, now)

    def _sweep_one(self, subscriber: Subscriber, now: float) -> None:
        kick = subscriber.kick
        if kick is not None:
            if now - kick.at >= self._close_grace_s:
                subscriber.cut()
            return
        full_since = subscriber.queue.full_since()
        if full_since is not None and now - full_since >= self._slow_client_s:
            log.warning("slow client: peer=%s protocol=%s queue full for %.1fs, disconnecting",
                        subscriber.peer, subscriber.protocol, now - full_since)
            if subscriber.ask_to_leave(POLICY_VIOLATION, "slow client", "slow", now):
                self._metrics.slow_clients.inc()
                self._notify()

    def close_all(self) -> None:
        """Refuse new clients and ask every client to go (close code 1001)."""
        now = self._clock()
        with self._lock:
            self._closing = True
            subscribers = tuple(self._subscribers)
        for subscriber in subscribers:
            subscriber.ask_to_leave(GOING_AWAY, "server shutting down", "shutdown", now)
        self._notify()

    def wait_empty(self, timeout_s: float, step_s: float = 0.05) -> bool:
        """Wait (after ``close_all``) until every client has gone; False if some are still there."""
        deadline = self._clock() + timeout_s
        while self._subscribers and self._clock() < deadline:
            time.sleep(step_s)
        return not self._subscribers


class Janitor(LoopThread):
    """A thread that calls ``hub.sweep()`` every ``interval_s`` until closed."""

    def __init__(self, hub: Hub, interval_s: float) -> None:
        super().__init__("bridge-janitor")
        self._hub = hub
        self._interval_s = interval_s

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._hub.sweep()
            except Exception:  # never let housekeeping die silently
                log.exception("sweep failed")
