"""A plain WebSocket client's socket with an outbound byte buffer: every write is ONE non-blocking send.

Two threads write to a plain connection: the sender (errors, pings, the server's close frame) and the
connection's reader, simple-websocket's loop on the request thread (handshake, pong answers, close answers).
Both go through ``push``: the bytes are appended behind whatever is still pending and one
``send(MSG_DONTWAIT)`` is made; what the kernel did not take stays in the buffer, in order, so frames never
interleave and nobody ever waits for a client. The sender retries pending bytes on its next tick (``flush``).

Sends and ``close`` hold the same lock, so a send can never reach a file descriptor number that was closed
and reused by another connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
MAX_PENDING_BYTES = 1 << 20  # control frames queued behind a client that does not read


class Outbox:
    def __init__(self, sock: socket.socket, on_close: Callable[[], None] = lambda: None) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._on_close = on_close
        self._closed = False

    # ------------------------------------------------------------ the socket API simple-websocket uses

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        self.push(data)
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.push(data)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._buffer.clear()
            self._sock.close()
        self._on_close()

    # ------------------------------------------------------------ ours

    @property
    def pending(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return len(self._buffer)

    def push(self, data: bytes) -> int:
        """Queue ``data`` behind what is pending and make one non-blocking send; returns the bytes still pending.

        Raises OSError when the connection is closed or broken, or when a client that does not read lets
        more than ``MAX_PENDING_BYTES`` pile up behind a previous write.
        """
        with self._lock:
            if self._closed:
                raise ConnectionAbortedError("connection closed")
            if self._buffer:
                if len(self._buffer) + len(data) > MAX_PENDING_BYTES:
                    raise ConnectionAbortedError("client does not read: outbound buffer full")
                self._buffer += data
                return self._send()
            sent = self._send_now(data)
            if sent < len(data):
                self._buffer += memoryview(data)[sent:]
            return len(self._buffer)

    def flush(self) -> int:
        """One non-blocking send of what is pending; returns the bytes still pending."""
        with self._lock:
            if self._closed:
                raise ConnectionAbortedError("connection closed")
            return self._send() if self._buffer else 0

    def abort(self) -> None:
        """Cut the connection: the reader sees end of stream, later writes fail."""
        with self._lock:
            if self._closed:
                return
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send(self) -> int:
        sent = self._send_now(self._buffer)
        del self._buffer[:sent]
        return len(self._buffer)

    def _send_now(self, data: bytes | bytearray) -> int:
        try:
            return self._sock.send(data, SEND_FLAGS)
        except BlockingIOError:
            return 0
