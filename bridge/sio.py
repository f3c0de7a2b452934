"""Socket.IO v4 clients (Engine.IO over the WebSocket transport): every error is emitted as `error-log`.

python-socketio / python-engineio in threading mode do the protocol (on simple-websocket). Each client
gets the same bounded queue as a plain WebSocket client and a small sending thread that emits from it,
keeping Engine.IO's own (unbounded) packet queue short.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import socketio

from panopticon.bridge.clients import Subscriber, Subscription
from panopticon.bridge.hub import Hub
from panopticon.bridge.metrics import BridgeMetrics
from panopticon.bridge.sockets import GuardedSocket

log = logging.getLogger("bridge.sio")

EVENT = "error-log"
SOCKET_KEY = "bridge.socket"
PING_INTERVAL_S = 25
PING_TIMEOUT_S = 20
MAX_BACKLOG = 32  # Engine.IO packets queued for one client before its sender waits
BACKLOG_WAIT_S = 0.005
TAKE_WAIT_S = 0.5


class SocketIOSide:
    def __init__(self, hub: Hub, metrics: BridgeMetrics, queue_size: int, close_grace_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hub = hub
        self._metrics = metrics
        self._queue_size = queue_size
        self._close_grace_s = close_grace_s
        self._clock = clock
        self._subscribers: dict[str, Subscriber] = {}
        self._lock = threading.Lock()
        self.server = socketio.Server(
            async_mode="threading", transports=["websocket"], cors_allowed_origins="*",
            ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S, always_connect=True,
            logger=False, engineio_logger=False,
        )
        self.server.on("connect", self._on_connect)
        self.server.on("disconnect", self._on_disconnect)

    def handle(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.server.handle_request(environ, start_response)

    # ------------------------------------------------------------ events

    def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        peer = f"{environ.get('REMOTE_ADDR', '?')}:{environ.get('REMOTE_PORT', '?')}"
        subscriber = Subscriber(peer, "socketio", Subscription.from_query(environ.get("QUERY_STRING", "")),
                                self._queue_size, self._clock())
        sock: GuardedSocket | None = environ.get(SOCKET_KEY)
        if sock is not None:
            subscriber.abort = sock.abort
        with self._lock:
            self._subscribers[sid] = subscriber
        if not self._hub.attach(subscriber):
            return False
        self.server.start_background_task(self._pump, sid, subscriber)
        return True

    def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        with self._lock:
            subscriber = self._subscribers.pop(sid, None)
        if subscriber is None:
            return
        text = subscriber.kick.reason if subscriber.kick else str(reason or "client disconnect")
        subscriber.queue.wake()
        self._hub.detach(subscriber, text)

    # ------------------------------------------------------------ sending

    def _connected(self, sid: str) -> bool:
        with self._lock:
            return sid in self._subscribers

    def _pump(self, sid: str, subscriber: Subscriber) -> None:
        try:
            while self._connected(sid) and subscriber.kick is None:
                self._send(sid, subscriber, subscriber.queue.take(TAKE_WAIT_S))
            if subscriber.kick is not None:
                self._leave(sid, subscriber)
        except Exception:
            log.exception("sending to %s failed", subscriber.peer)

    def _send(self, sid: str, subscriber: Subscriber, batch: list[Any]) -> None:
        for delivery in batch:
            if not self._wait_for_room(sid, subscriber):
                return
            self.server.emit(EVENT, delivery.payload, to=sid)
            subscriber.delivered += 1
        if batch:
            self._metrics.delivered.inc(len(batch))
            self._metrics.delay.observe(self._clock() - batch[0].read_at)

    def _backlog(self, sid: str) -> int:
        eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
        socket = self.server.eio.sockets.get(eio_sid) if eio_sid else None
        return socket.queue.qsize() if socket is not None else 0

    def _wait_for_room(self, sid: str, subscriber: Subscriber) -> bool:
        while self._backlog(sid) >= MAX_BACKLOG:
            if subscriber.kick is not None or not self._connected(sid):
                return False
            time.sleep(BACKLOG_WAIT_S)
        return True

    def _leave(self, sid: str, subscriber: Subscriber) -> None:
        """Socket.IO disconnect; if the client does not close its side in time, cut the socket."""
        eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
        self.server.disconnect(sid)
        socket = self.server.eio.sockets.get(eio_sid) if eio_sid else None
        deadline = self._clock() + self._close_grace_s
        while socket is not None and not socket.closed and self._clock() < deadline:
            time.sleep(0.1)
        if socket is not None and not socket.closed:
            subscriber.cut()
