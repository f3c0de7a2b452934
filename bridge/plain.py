"""A plain WebSocket client (RFC 6455): one JSON ErrorEvent per text frame.

simple-websocket does the handshake and reads from the peer on its own thread (pongs, close, pings);
the session runs on the request thread and is the only sender of errors and pings. Errors are written as
pre-built frames (the same bytes for every client), several per write when the client has a backlog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import simple_websocket

from bridge.clients import POLICY_VIOLATION, Subscriber
from bridge.codec import PING_FRAME
from bridge.metrics import BridgeMetrics
from bridge.sockets import GuardedSocket

log = logging.getLogger("bridge.plain")

PING_INTERVAL_S = 25.0
PING_TIMEOUT_S = 20.0
MAX_WAIT_S = 0.5
CLOSE_WAIT_S = 2.0


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

    def wait_s(self, now: float) -> float:
        deadline = self.ping_sent + self.timeout_s if self.ping_sent is not None else self.next_ping
        return max(0.0, min(MAX_WAIT_S, deadline - now))


class PlainSession:
    def __init__(self, ws: simple_websocket.Server, sock: GuardedSocket, subscriber: Subscriber,
                 metrics: BridgeMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self._ws = ws
        self._sock = sock
        self._subscriber = subscriber
        self._metrics = metrics
        self._clock = clock
        self._keepalive = Keepalive(clock())

    def serve(self) -> str:
        """Send until the client goes or is told to go; returns the reason, for the log."""
        try:
            reason = None
            while reason is None:
                reason = self._step()
            return reason
        except OSError as exc:
            kick = self._subscriber.kick
            return kick.reason if kick is not None else f"write failed ({exc.__class__.__name__})"
        finally:
            self._finish()

    def _step(self) -> str | None:
        kick = self._subscriber.kick
        if kick is not None:
            self._close(kick.code, kick.reason)
            return kick.reason
        if not self._ws.connected:
            return "closed by client"
        batch = self._subscriber.queue.take(self._keepalive.wait_s(self._clock()))
        self._discard_input()
        if batch:
            self._sock.write(b"".join(d.frame for d in batch))
            self._subscriber.delivered += len(batch)
            self._metrics.delivered.inc(len(batch))
            self._metrics.delay.observe(self._clock() - batch[0].read_at)
        return self._ping()

    def _ping(self) -> str | None:
        action = self._keepalive.step(self._clock(), self._ws.pong_received)
        if action == "ping":
            self._ws.pong_received = False
            self._sock.write(PING_FRAME)
        elif action == "timeout":
            self._subscriber.ask_to_leave(POLICY_VIOLATION, "ping timeout", "ping-timeout", self._clock())
        return None

    def _discard_input(self) -> None:
        """Clients have nothing to say; do not let what they send pile up."""
        try:
            while self._ws.connected and self._ws.receive(timeout=0) is not None:
                pass
        except simple_websocket.ConnectionClosed:
            pass

    def _close(self, code: int, reason: str) -> None:
        if self._ws.connected:
            self._ws.close(code, reason)

    def _finish(self) -> None:
        """Wait briefly for the peer's close answer, then make sure the reader thread ends."""
        self._ws.connected = False
        self._ws.thread.join(CLOSE_WAIT_S)
        if self._ws.thread.is_alive():
            self._sock.abort()
            self._ws.thread.join(CLOSE_WAIT_S)
