"""Socket tuning, and a Socket.IO connection's socket as python-engineio sees it: writes that never block forever.

(Plain WebSocket clients use ``bridge.outbox`` instead: their writes never wait at all.) Several threads write
to one Socket.IO connection (engineio's writer, simple-websocket's reader). Every write goes through one lock
and is sent in full, so frames never interleave. Writes use ``MSG_DONTWAIT`` and wait for writability in short
steps, so a client that stopped reading can be aborted (``abort``) from another thread at any time.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

WAIT_STEP_MS = 250


def tune(sock: socket.socket, send_buffer_bytes: int) -> None:
    """Low latency for small frames; a bounded kernel buffer so backpressure reaches the client queue."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if send_buffer_bytes:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    except OSError:
        pass


class GuardedSocket:
    def __init__(self, sock: socket.socket, on_close: Callable[[], None] = lambda: None) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._on_close = on_close
        self._aborted = False

    # the part of the socket API simple-websocket uses

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        self.write(data)
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.write(data)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._on_close()
        self._sock.close()

    # ours

    def write(self, data: bytes) -> None:
        """Send all of ``data``; raises OSError once the connection is aborted or broken."""
        view = memoryview(data)
        with self._lock:
            while view:
                if self._aborted:
                    raise ConnectionAbortedError("connection aborted by the server")
                try:
                    sent = self._sock.send(view, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    self._wait_writable()
                    continue
                view = view[sent:]

    def _wait_writable(self) -> None:
        fd = self._sock.fileno()
        if fd < 0:
            raise ConnectionAbortedError("connection closed")
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        poller.poll(WAIT_STEP_MS)

    def abort(self) -> None:
        """Cut the connection: pending and future writes fail, the reader thread sees end of stream."""
        self._aborted = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
