"""One connected client: its filters, its bounded queue, and whether it has been told to go.

``offer`` never blocks (the feed thread calls it for every client); overflow drops the oldest errors.
``drain`` (the plain-WebSocket sender, never waits) and ``take`` (a Socket.IO client's sending thread, waits
a little) hand over everything queued at once, so a client that keeps up receives several errors per write.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs

import msgspec

from panopticon.bridge.codec import Delivery
from panopticon.common.normalize import normalize_environment

POLICY_VIOLATION = 1008
GOING_AWAY = 1001
NOT_ATTACHED = sys.maxsize


class Subscription(msgspec.Struct, frozen=True):
    """Server-side filters from the query string: ``service`` (repeatable) and ``environment``."""

    services: frozenset[str] = frozenset()
    environment: str | None = None

    @classmethod
    def from_query(cls, query: str) -> Subscription:
        params = parse_qs(query, keep_blank_values=False)
        services = frozenset(s.strip() for s in params.get("service", []) if s.strip())
        environments = [normalize_environment(e) for e in params.get("environment", []) if e.strip()]
        return cls(services, environments[-1] if environments else None)

    @property
    def filters(self) -> bool:
        return bool(self.services) or self.environment is not None

    def matches(self, delivery: Delivery) -> bool:
        if self.services and delivery.service not in self.services:
            return False
        return self.environment is None or delivery.environment == self.environment

    def describe(self) -> str:
        parts = [f"service={s}" for s in sorted(self.services)]
        if self.environment is not None:
            parts.append(f"environment={self.environment}")
        return ",".join(parts) or "none"


class ClientQueue:
    """Bounded FIFO of deliveries; remembers since when it has been full."""

    def __init__(self, size: int) -> None:
        self._items: deque[Delivery] = deque(maxlen=size)
        self._size = size
        self._cond = threading.Condition(threading.Lock())
        self._woken = False
        self._waiting = False  # a ``take`` waits: only then does ``offer`` notify
        self._full_since: float | None = None

    def offer(self, items: Sequence[Delivery], now: float) -> int:
        """Append; returns how many of the oldest queued errors were dropped to make room."""
        with self._cond:
            dropped = max(0, len(self._items) + len(items) - self._size)
            self._items.extend(items)
            if len(self._items) == self._size and self._full_since is None:
                self._full_since = now
            if self._waiting:
                self._cond.notify()
        return dropped

    def drain(self) -> list[Delivery]:
        """Everything queued (possibly nothing), without waiting."""
        with self._cond:
            batch = list(self._items)
            self._items.clear()
            self._full_since = None
            return batch

    def take(self, timeout: float) -> list[Delivery]:
        """Everything queued (possibly nothing), waiting up to ``timeout`` for something to arrive."""
        with self._cond:
            if not self._items and not self._woken:
                self._waiting = True
                self._cond.wait(timeout)
                self._waiting = False
            batch = list(self._items)
            self._items.clear()
            self._full_since = None
            self._woken = False
            return batch

    def wake(self) -> None:
        """Make a waiting ``take`` return now (the client was kicked or its socket closed)."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    @property
    def size(self) -> int:
        return self._size

    def full_since(self) -> float | None:
        return self._full_since

    def __len__(self) -> int:
        return len(self._items)


class Kick(msgspec.Struct, frozen=True):
    """Why the server ends a client: close code, text for the peer, label for metrics, and when."""

    code: int
    reason: str
    label: str
    at: float


class Subscriber:
    """A client as the hub sees it. The session that serves it sets ``abort`` to cut the socket."""

    def __init__(self, peer: str, protocol: str, subscription: Subscription, queue_size: int,
                 connected_at: float) -> None:
        self.peer = peer
        self.protocol = protocol
        self.subscription = subscription
        self.queue = ClientQueue(queue_size)
        self.connected_at = connected_at
        self.delivered = 0
        self.dropped = 0
        self.kick: Kick | None = None
        self.abort: Callable[[], None] = lambda: None
        self.aborted = False
        self.attached_seq = NOT_ATTACHED  # the hub's publish sequence at attach: its replay covers up to it

    def ask_to_leave(self, code: int, reason: str, label: str, now: float) -> bool:
        """First call wins; wakes a waiting ``take``. Returns whether this call kicked it."""
        if self.kick is not None:
            return False
        self.kick = Kick(code, reason, label, now)
        self.queue.wake()
        return True

    def cut(self) -> None:
        """The kicked client did not leave in time: shut its socket down."""
        if not self.aborted:
            self.aborted = True
            self.abort()
