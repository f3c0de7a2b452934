"""A plain WebSocket client (RFC 6455): one JSON ErrorEvent per text frame.

simple-websocket does the handshake and then reads from the peer (pongs, close, the client's pings) in its
loop, which runs on the request thread itself (``InlineReader``: no extra thread per client). Everything the
server sends on its own (errors, pings, the close frame) is written by the sender thread (``bridge.sender``)
through the connection's ``Outbox``: ``pump`` makes one non-blocking send per client and pass, of all the
client's queued errors as pre-built frames (the same bytes for every client), or of the close frame when the
client was told to go; ``tend`` does keep-alive and input hygiene a few times a second.

The errors published since the previous pass (``Fresh``) reach a client in its ``pump``: a client without
filters, queue or pending bytes (the usual case) is sent the pass's one shared buffer of them as is; any
other client gets them through its bounded queue (filters, drop-oldest, the slow-client clock).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import simple_websocket

from panopticon.bridge.clients import POLICY_VIOLATION, Subscriber
from panopticon.bridge.codec import PING_FRAME, Delivery
from panopticon.bridge.outbox import Outbox

log = logging.getLogger("bridge.plain")

PING_INTERVAL_S = 25.0
PING_TIMEOUT_S = 20.0


class Keepalive:
    """Ping schedule, given ``now`` so it is testable without sleeping."""

    def __init__(self, now: float, interval_s: float = PING_INTERVAL_S, timeout_s: float = PING_TIMEOUT_S):
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.next_ping = now + interval_s
        self.ping_sent: float | None = None

    def step(self, now: float, pong_received: bool) -> str | None:
        """``"ping"`` when a ping is due, ``"timeout"`` when the last one went unanswered, else None."""
        if self.ping_sent is not None:
            if pong_received:
                self.next_ping = self.ping_sent + self.interval_s
                self.ping_sent = None
            elif now - self.ping_sent >= self.timeout_s:
                return "timeout"
            else:
                return None
        if now >= self.next_ping:
            self.ping_sent = now
            return "ping"
        return None


class InlineReader:
    """Stands in for simple-websocket's reader thread: ``start`` does nothing, the request thread calls ``run``."""

    def __init__(self, target: Callable[[], None]) -> None:
        self._target = target
        self.name = "bridge-reader"

    def start(self) -> None:
        pass

    def run(self) -> None:
        self._target()


class Tally:
    """What one sender pass did, summed over its clients (metrics are updated once per pass)."""

    __slots__ = ("delivered", "read_at", "pending", "dropped", "filtered")

    def __init__(self) -> None:
        self.delivered = 0
        self.read_at: list[float] = []  # per completed write: when its oldest error was read off the topic
        self.pending = 0  # clients with bytes the kernel did not take yet
        self.dropped = 0  # errors dropped from full queues (oldest first)
        self.filtered = 0  # errors a client's filters left out


class Fresh:
    """The batches the hub published since the previous pass, numbered, shared by every client of the pass."""

    __slots__ = ("_batches", "deliveries", "_first_seq", "_frames")

    def __init__(self, batches: Sequence[tuple[int, Sequence[Delivery]]] = ()) -> None:
        self._batches = batches
        self.deliveries: list[Delivery] = [d for _, published in batches for d in published]
        self._first_seq = batches[0][0] if batches else 0
        self._frames: bytes | None = None

    def since(self, attached_seq: int) -> list[Delivery]:
        """What a client attached after batch ``attached_seq`` has not had yet (its replay has the rest)."""
        if attached_seq < self._first_seq:
            return self.deliveries
        return [d for seq, published in self._batches if seq > attached_seq for d in published]

    @property
    def frames(self) -> bytes:
        """Every fresh error's frame in one buffer, joined once per pass."""
        if self._frames is None:
            self._frames = b"".join([d.frame for d in self.deliveries])
        return self._frames


NOTHING_FRESH = Fresh()


class PlainSession:
    def __init__(self, ws: simple_websocket.Server, outbox: Outbox, subscriber: Subscriber,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ws = ws
        self._outbox = outbox
        self._subscriber = subscriber
        self._clock = clock
        self._keepalive = Keepalive(clock())
        self._in_flight = 0  # errors of the write still (partly) in the outbox
        self._in_flight_read_at = 0.0
        self.failed: OSError | None = None

    # ------------------------------------------------------------ request thread

    def serve(self) -> str:
        """Read until the client goes or is cut; returns the reason, for the log."""
        self._ws.thread.run()  # simple-websocket's loop; closes the outbox
        kick = self._subscriber.kick
        if kick is not None:
            return kick.reason
        if self.failed is not None:
            return f"write failed ({self.failed.__class__.__name__})"
        return "closed by client"

    # ------------------------------------------------------------ sender thread

    def pump(self, tally: Tally, fresh: Fresh = NOTHING_FRESH, now: float = 0.0) -> None:
        """Take the fresh errors, then one non-blocking send: the close frame of a kicked client (behind its
        pending bytes), else the rest of the previous write, else every fresh or queued error."""
        if self.failed is not None:
            return
        new = fresh.since(self._subscriber.attached_seq) if fresh.deliveries else []
        direct = bool(new) and self._take(new, fresh, now, tally)
        try:
            kick = self._subscriber.kick
            if kick is not None and self._ws.connected:
                self._ws.close(kick.code, kick.reason)  # through the outbox; the client may not read it
                left = self._outbox.pending
            elif self._outbox.pending:
                left = self._outbox.flush()
            elif direct:
                if not self._ws.connected:
                    return
                self._in_flight = len(new)
                self._in_flight_read_at = new[0].read_at
                left = self._outbox.push(fresh.frames)
            else:
                queue = self._subscriber.queue
                if not len(queue) or not self._ws.connected:
                    return
                batch = queue.drain()
                if not batch:
                    return
                self._in_flight = len(batch)
                self._in_flight_read_at = batch[0].read_at
                left = self._outbox.push(batch[0].frame if len(batch) == 1 else b"".join([d.frame for d in batch]))
        except (OSError, simple_websocket.ConnectionClosed) as exc:  # closed by the peer meanwhile
            self._fail(exc if isinstance(exc, OSError) else ConnectionAbortedError(str(exc)))
            return
        if left:
            tally.pending += 1
        elif self._in_flight:
            self._subscriber.delivered += self._in_flight
            tally.delivered += self._in_flight
            tally.read_at.append(self._in_flight_read_at)
            self._in_flight = 0

    def _take(self, new: list[Delivery], fresh: Fresh, now: float, tally: Tally) -> bool:
        """Queue the fresh errors this client wants; True when, instead, they can go out as the shared buffer
        (no filters, nothing queued or pending before them, no kick, within the queue's bound)."""
        subscriber = self._subscriber
        queue = subscriber.queue
        if subscriber.subscription.filters:
            wanted = [d for d in new if subscriber.subscription.matches(d)]
            tally.filtered += len(new) - len(wanted)
            new = wanted
        elif (new is fresh.deliveries and subscriber.kick is None and not self._outbox.pending
              and not len(queue) and len(new) <= queue.size):
            return True
        if new:
            lost = queue.offer(new, now)
            subscriber.dropped += lost
            tally.dropped += lost
        return False

    def tend(self, now: float) -> None:
        """Keep-alive and input hygiene; a few times a second."""
        if self.failed is not None:
            return
        self._ws.input_buffer.clear()  # clients have nothing to say; do not let what they send pile up
        if self._subscriber.kick is not None or not self._ws.connected:
            return
        try:
            action = self._keepalive.step(now, self._ws.pong_received)
            if action == "ping":
                self._ws.pong_received = False
                self._outbox.push(PING_FRAME)
            elif action == "timeout":
                self._subscriber.ask_to_leave(POLICY_VIOLATION, "ping timeout", "ping-timeout", now)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """The connection broke under a write: cut it, so the reader (and the request thread) ends."""
        self.failed = exc
        self._ws.connected = False
        self._outbox.abort()
