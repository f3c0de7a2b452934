"""gunicorn as the bridge's server: one gthread worker holding a thread per WebSocket connection.

simple-websocket (and python-engineio in threading mode) take the connection's socket from gunicorn
and keep the request thread for the life of the connection, so the worker needs as many threads as
clients. For plain WebSocket clients that thread only reads (it is simple-websocket's reader loop and
sleeps in ``recv``); one sender thread writes to all of them (``bridge.sender``). The Bridge (threads,
Kafka consumer) is built in the worker, after the fork.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from panopticon.bridge.service import Bridge, ServerOptions
from panopticon.common.settings import Settings

SPARE_THREADS = 32  # /health, /metrics and handshakes in flight
THREAD_STACK_BYTES = 1024 * 1024


class BridgeApplication(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: ServerOptions) -> None:
        self.settings = settings
        self.options = options
        self.bridge: Bridge | None = None
        super().__init__()

    def load_config(self) -> None:
        threads = self.options.max_clients + SPARE_THREADS
        config: dict[str, Any] = {
            "bind": [f"{self.options.host}:{self.options.port}"],
            "workers": 1,
            "worker_class": f"{__name__}.BridgeWorker",
            "threads": threads,
            "worker_connections": threads + SPARE_THREADS,  # room for kept-alive HTTP connections
            "backlog": 2048,
            "timeout": 30,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": self.settings.log_level.lower(),
            "proc_name": "panopticon-bridge",
            "worker_exit": _worker_exit,
            "control_socket_disable": True,  # one per host by default; instances would collide
        }
        for key, value in config.items():
            self.cfg.set(key, value)

    def load(self) -> Bridge:
        self.bridge = Bridge(self.settings, self.options)
        self.bridge.start()
        return self.bridge


class BridgeWorker(ThreadWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        threading.stack_size(THREAD_STACK_BYTES)  # thousands of connection threads
        sys.setswitchinterval(0.0005)
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: gunicorn stops accepting; we ask the clients to go, so their threads end."""
        super().handle_exit(sig, frame)
        bridge = self.app.bridge
        if bridge is not None:
            threading.Thread(target=bridge.shutdown, name="bridge-shutdown", daemon=True).start()


def _worker_exit(_server: Any, worker: Any) -> None:
    bridge = worker.app.bridge
    if bridge is not None:
        bridge.close()
