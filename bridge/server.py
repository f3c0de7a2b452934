"""The WSGI application: routes /health, /metrics and the WebSocket path (plain or Socket.IO).

The `Origin` check and, with API_AUTH_TOKEN set, the token check (``Authorization: Bearer <token>`` or
``?access_token=<token>``, which browsers can send) happen before any upgrade. Nothing here writes a stack
trace to a client: an unexpected error before the upgrade is a plain 500, after it the connection is closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import msgspec
import simple_websocket

from panopticon.bridge.clients import Subscriber, Subscription
from panopticon.bridge.hub import Hub
from panopticon.bridge.metrics import BridgeMetrics
from panopticon.bridge.outbox import Outbox
from panopticon.bridge.plain import InlineReader, PlainSession
from panopticon.bridge.sender import Sender
from panopticon.bridge.sio import SOCKET_KEY, SocketIOSide
from panopticon.bridge.sockets import GuardedSocket, tune
from panopticon.common.auth import bearer, token_matches

log = logging.getLogger("bridge.server")

StartResponse = Callable[..., Any]
SOCKET = "gunicorn.socket"  # simple-websocket finds the connection here
MAX_CLIENT_MESSAGE = 64 * 1024


class Health(msgspec.Struct, frozen=True):
    status: str
    feed: str
    clients: int


class BridgeApp:
    def __init__(self, ws_path: str, origins: frozenset[str], hub: Hub, sender: Sender, sio: SocketIOSide,
                 metrics: BridgeMetrics, feed_state: Callable[[], str], queue_size: int,
                 send_buffer_bytes: int, clock: Callable[[], float] = time.monotonic, token: str = "") -> None:
        self._ws_path = ws_path.rstrip("/") or "/"
        self._origins = origins
        self._token = token
        self._hub = hub
        self._sender = sender
        self._sio = sio
        self._metrics = metrics
        self._feed_state = feed_state
        self._queue_size = queue_size
        self._send_buffer_bytes = send_buffer_bytes
        self._clock = clock
        self._encode = msgspec.json.Encoder().encode

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start_response)
        except StopIteration:
            raise  # the WebSocket is over; gunicorn must not write a response
        except Exception:
            log.exception("request failed: %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return _text(start_response, "500 Internal Server Error", "internal error\n")

    def _route(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/").rstrip("/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == self._ws_path:
            return self._websocket(environ, start_response)
        if method != "GET":
            return _text(start_response, "405 Method Not Allowed", "method not allowed\n")
        if path == "/health":
            return self._health(start_response)
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", self._metrics.content_type)])
            return [self._metrics.render()]
        return _text(start_response, "404 Not Found", "not found\n")

    def _health(self, start_response: StartResponse) -> Iterable[bytes]:
        feed = self._feed_state()
        health = Health(status="ok" if feed == "running" else "unavailable", feed=feed,
                        clients=self._hub.count())
        status = "200 OK" if feed == "running" else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [self._encode(health)]

    # ------------------------------------------------------------ WebSocket

    def _websocket(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        origin = environ.get("HTTP_ORIGIN", "")
        if self._origins and origin not in self._origins:
            self._metrics.rejected.labels("origin").inc()
            log.info("refused: peer=%s origin=%r not allowed", _peer(environ), origin)
            return _text(start_response, "403 Forbidden", "origin not allowed\n")
        if self._token and not self._authorized(environ):
            self._metrics.rejected.labels("unauthorized").inc()
            log.info("refused: peer=%s without the right token", _peer(environ))
            return _text(start_response, "401 Unauthorized", "a bearer token is required\n",
                         [("WWW-Authenticate", "Bearer")])
        raw = environ.get(SOCKET)
        if raw is None or environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            self._metrics.rejected.labels("not-websocket").inc()
            return _text(start_response, "400 Bad Request", "this endpoint speaks WebSocket only\n")
        tune(raw, self._send_buffer_bytes)
        if parse_qs(environ.get("QUERY_STRING", "")).get("EIO") == ["4"]:
            return self._socketio(environ, raw, start_response)
        return self._plain(environ, raw, start_response)

    def _authorized(self, environ: dict[str, Any]) -> bool:
        given = bearer(environ.get("HTTP_AUTHORIZATION"))
        if given is None:
            given = parse_qs(environ.get("QUERY_STRING", "")).get("access_token", [None])[-1]
        return token_matches(given, self._token)

    def _socketio(self, environ: dict[str, Any], raw: Any, start_response: StartResponse) -> Iterable[bytes]:
        sock = GuardedSocket(raw)
        answer: Iterable[bytes] = self._sio.handle({**environ, SOCKET: sock, SOCKET_KEY: sock}, start_response)
        return answer

    def _plain(self, environ: dict[str, Any], raw: Any, start_response: StartResponse) -> Iterable[bytes]:
        """Handshake, then this request thread reads the connection until it ends; the sender writes."""
        subscriber = Subscriber(_peer(environ), "websocket",
                                Subscription.from_query(environ.get("QUERY_STRING", "")),
                                self._queue_size, self._clock())
        outbox = Outbox(raw)
        subscriber.abort = outbox.abort
        try:
            ws = simple_websocket.Server({**environ, SOCKET: outbox}, max_message_size=MAX_CLIENT_MESSAGE,
                                         thread_class=InlineReader)
        except Exception as exc:
            self._metrics.rejected.labels("handshake").inc()
            log.info("refused: peer=%s bad WebSocket handshake (%s)", subscriber.peer, exc.__class__.__name__)
            return _text(start_response, "400 Bad Request", "bad WebSocket handshake\n")
        session = PlainSession(ws, outbox, subscriber, self._clock)
        self._sender.add(session)  # first: the sender must know it before the hub forwards batches for it
        if not self._hub.attach(subscriber, forwarded=True):
            self._sender.remove(session)
            ws.close(1001, "server shutting down")
            raise StopIteration
        reason = "error"
        try:
            reason = session.serve()
        finally:
            self._sender.remove(session)
            self._hub.detach(subscriber, reason)
        raise StopIteration


def _peer(environ: dict[str, Any]) -> str:
    return f"{environ.get('REMOTE_ADDR', '?')}:{environ.get('REMOTE_PORT', '?')}"


def _text(start_response: StartResponse, status: str, body: str,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))),
                            *(headers or [])])
    return [data]
