"""The bridge in one object: metrics, sender, hub, Kafka feed, janitor, Socket.IO side and the WSGI app.

Built after the fork (in the gunicorn worker): it owns threads and a Kafka consumer.
Lifecycle: ``start`` -> ``shutdown`` (stop taking clients, ask them to go, stop the feed) -> ``close`` (wait for
the clients to go, then stop the threads).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from confluent_kafka import Consumer

from panopticon.bridge.feed import ConsumerFactory, ErrorFeed
from panopticon.bridge.hub import Hub, Janitor
from panopticon.bridge.metrics import BridgeMetrics
from panopticon.bridge.sender import Sender
from panopticon.bridge.server import BridgeApp
from panopticon.bridge.sio import SocketIOSide
from panopticon.common.settings import Settings

log = logging.getLogger("bridge")

SWEEP_EVERY_S = 0.25
CLOSE_GRACE_S = 5.0


class ServerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the process serves, from the command line (the rest comes from Settings)."""

    host: str = "0.0.0.0"
    port: int = 3010
    max_clients: int = 2000
    send_buffer_bytes: int = 256 * 1024


class Bridge:
    def __init__(self, settings: Settings, options: ServerOptions,
                 consumer_factory: ConsumerFactory = Consumer) -> None:
        self.metrics = BridgeMetrics()
        self.sender = Sender(self.metrics)
        self.hub = Hub(settings.error_stream_replay, settings.error_stream_slow_client_s, self.metrics,
                       close_grace_s=CLOSE_GRACE_S, notify=self.sender.wake, forward=self.sender.forward)
        self.feed = ErrorFeed(settings, self.hub, self.metrics, consumer_factory)
        self.janitor = Janitor(self.hub, min(SWEEP_EVERY_S, settings.error_stream_slow_client_s / 4))
        self.sio = SocketIOSide(self.hub, self.metrics, settings.error_stream_queue_size, CLOSE_GRACE_S)
        self.app = BridgeApp(
            settings.error_stream_ws_path, settings.origins(settings.error_stream_ws_origins), self.hub,
            self.sender, self.sio, self.metrics, lambda: self.feed.state, settings.error_stream_queue_size,
            options.send_buffer_bytes, token=settings.api_auth_token,
        )
        self._shut_down = False

    def start(self) -> None:
        self.sender.start()
        self.feed.start()
        self.janitor.start()

    def shutdown(self) -> None:
        """Graceful: refuse new clients, ask connected ones to go (1001), stop reading the topic."""
        if self._shut_down:
            return
        self._shut_down = True
        log.info("shutting down: closing %d client(s)", self.hub.count())
        self.hub.close_all()
        self.feed.close()

    def close(self, timeout_s: float = 10.0) -> None:
        """Shutdown, then let the clients go (the sender writes the close frames, the janitor cuts the sockets
        of clients that do not leave within the grace period: their request threads must end for the
        process to exit), then stop the threads."""
        self.shutdown()
        if not self.hub.wait_empty(CLOSE_GRACE_S + 1.0):
            log.warning("%d client(s) still connected at exit", self.hub.count())
        self.feed.join(timeout_s)
        self.janitor.close()
        self.janitor.join(timeout_s)
        self.sender.close()
        self.sender.join(timeout_s)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)
