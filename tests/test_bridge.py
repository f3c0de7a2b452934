"""The live error feed (bridge/): unit tests of its parts, then integration tests with real clients.

Integration tests start `python -m panopticon bridge` as a subprocess on a free 127.0.0.1 port against the
session's local stack, produce to a fresh error topic and read with websocket-client and the official
python-socketio client.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
import websocket
from confluent_kafka import Producer
from hypothesis import example, given
from hypothesis import strategies as st

from panopticon.bridge.clients import ClientQueue, Subscriber, Subscription
from panopticon.bridge.codec import PING_FRAME, Delivery, ErrorRecordDecoder, Malformed, text_frame
from panopticon.bridge.hub import Hub
from panopticon.bridge.metrics import BridgeMetrics
from panopticon.bridge.outbox import Outbox
from panopticon.bridge.plain import Fresh, Keepalive, PlainSession, Tally
from panopticon.common.clients import producer_config
from panopticon.common.settings import Settings
from panopticon.common.topics import create_topics
from panopticon.devtools.stack import free_port
from tests.harness import eventually

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = "https://ui.example"


# ---------------------------------------------------------------- unit: codec, queue, filters, keepalive

def _delivery(service: str = "svc", environment: str = "production") -> Delivery:
    return Delivery(service=service, environment=environment, frame=b"", payload={})


@given(st.binary())
@example(b'{"message": "\x80"}')  # a JSON string of invalid UTF-8: msgspec raises UnicodeDecodeError
def test_decoder_never_raises_on_arbitrary_bytes(value: bytes) -> None:
    assert isinstance(ErrorRecordDecoder().decode(value), (Delivery, Malformed))


def test_decoder_builds_the_event_and_its_frame() -> None:
    doc = {"@timestamp": "2024-05-01T10:00:00.000Z", "ingested_at": "2024-05-01T10:00:01.000Z",
           "service_name": "checkout", "environment": "PROD", "level": "ERROR", "message": "boom",
           "http_status_code": 502, "type": "log"}
    delivery = ErrorRecordDecoder().decode(json.dumps(doc).encode())
    assert isinstance(delivery, Delivery)
    expected = {"timestamp": "2024-05-01T10:00:00.000Z", "service_name": "checkout", "environment": "PROD",
                "level": "ERROR", "message": "boom", "http_status_code": 502}
    assert delivery.payload == expected
    assert delivery.environment == "production"
    header = 2 if delivery.frame[1] < 126 else 4
    assert delivery.frame[0] == 0x81 and json.loads(delivery.frame[header:]) == expected


@pytest.mark.parametrize("size, header", [(5, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)],
                         ids=["tiny", "max7bit", "min16bit", "max16bit", "64bit"])
def test_text_frame_lengths(size: int, header: int) -> None:
    frame = text_frame(b"x" * size)
    assert len(frame) == size + header and frame[0] == 0x81 and frame[1] & 0x80 == 0


def test_queue_drops_oldest_and_remembers_since_when_it_is_full() -> None:
    queue = ClientQueue(3)
    items = [_delivery(service=str(i)) for i in range(5)]
    assert queue.offer(items[:2], now=1.0) == 0 and queue.full_since() is None
    assert queue.offer(items[2:], now=2.0) == 2
    assert queue.full_since() == 2.0
    assert [d.service for d in queue.take(0)] == ["2", "3", "4"]
    assert queue.full_since() is None and queue.take(0) == []


@pytest.mark.parametrize("query, service, environment, expected", [
    ("", "a", "production", True),
    ("service=a&service=b", "b", "staging", True),
    ("service=a&service=b", "c", "staging", False),
    ("environment=prod", "x", "production", True),
    ("environment=Staging", "x", "production", False),
    ("service=a&environment=dev", "a", "development", True),
], ids=["none", "service-hit", "service-miss", "env-alias", "env-miss", "both"])
def test_subscription(query: str, service: str, environment: str, expected: bool) -> None:
    assert Subscription.from_query(query).matches(_delivery(service, environment)) is expected


def test_keepalive_pings_every_interval_and_times_out_without_pong() -> None:
    keepalive = Keepalive(now=0.0, interval_s=25.0, timeout_s=20.0)
    assert keepalive.step(24.9, pong_received=True) is None
    assert keepalive.step(25.0, pong_received=True) == "ping"
    assert keepalive.step(30.0, pong_received=True) is None  # answered: next ping at 50
    assert keepalive.step(49.0, pong_received=False) is None
    assert keepalive.step(50.0, pong_received=False) == "ping"
    assert keepalive.step(69.9, pong_received=False) is None
    assert keepalive.step(70.0, pong_received=False) == "timeout"


# ---------------------------------------------------------------- unit: the sender's side of a plain client

class FakeWebSocket:
    """What PlainSession uses of simple_websocket.Server; like it, it writes its close frame to the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.connected = True
        self.pong_received = True
        self.input_buffer: list[str] = ["hello from the client"]

    def close(self, reason: int, message: str) -> None:
        payload = struct.pack("!H", reason) + message.encode()
        self.outbox.send(bytes((0x88, len(payload))) + payload)
        self.connected = False


Wire = tuple[socket.socket, socket.socket]


@pytest.fixture
def wire() -> Iterator[Wire]:
    """A connected pair with small kernel buffers: the bridge's end and the client's end."""
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    yield server, client
    server.close()
    client.close()


def _session(server: socket.socket, queue_size: int,
             subscription: Subscription | None = None) -> tuple[PlainSession, Subscriber, FakeWebSocket]:
    outbox = Outbox(server)
    subscriber = Subscriber("peer", "websocket", subscription or Subscription(), queue_size, connected_at=0.0)
    subscriber.attached_seq = 0
    ws = FakeWebSocket(outbox)
    return PlainSession(ws, outbox, subscriber, clock=lambda: 0.0), subscriber, ws  # type: ignore[arg-type]


def _frames(first: int, count: int, size: int) -> list[Delivery]:
    return [Delivery(service="s", environment="e", frame=text_frame(b"%06d" % i + b"x" * size), payload={})
            for i in range(first, first + count)]


def _read_all(client: socket.socket, session: PlainSession, tally: Tally, size: int) -> bytes:
    """The client reads while the sender keeps pumping, until ``size`` bytes arrived."""
    data = b""
    while len(data) < size:
        session.pump(tally)
        try:
            data += client.recv(65536)
        except BlockingIOError:
            pass
    return data


def test_one_send_carries_every_queued_error_and_counts_them_once_the_kernel_took_them(wire: Wire) -> None:
    server, client = wire
    session, subscriber, _ = _session(server, queue_size=8)
    frames = _frames(0, 3, 10)
    subscriber.queue.offer(frames, now=0.0)
    tally = Tally()
    session.pump(tally)
    assert (tally.delivered, tally.pending, subscriber.delivered, len(tally.read_at)) == (3, 0, 3, 1)
    assert client.recv(65536) == b"".join(d.frame for d in frames)


def test_a_client_that_does_not_read_keeps_its_bytes_pending_and_its_queue_fills(wire: Wire) -> None:
    server, client = wire
    session, subscriber, _ = _session(server, queue_size=4)
    first, later = _frames(0, 4, 50_000), _frames(4, 6, 50_000)
    subscriber.queue.offer(first, now=0.0)
    tally = Tally()
    session.pump(tally)
    assert tally.pending == 1 and tally.delivered == 0  # the kernel took part of 200 KB
    assert subscriber.queue.offer(later, now=1.0) == 2  # the queue is the bound: oldest dropped
    session.pump(Tally())
    assert len(subscriber.queue) == 4 and subscriber.queue.full_since() == 1.0  # only pending bytes moved
    expected = b"".join(d.frame for d in first + later[2:])
    assert _read_all(client, session, tally, len(expected)) == expected  # in order, nothing interleaved
    assert tally.delivered == 8


def test_a_kicked_client_gets_its_close_frame_behind_the_pending_bytes_and_nothing_after(wire: Wire) -> None:
    server, client = wire
    session, subscriber, ws = _session(server, queue_size=4)
    subscriber.queue.offer(_frames(0, 2, 50_000), now=0.0)
    tally = Tally()
    session.pump(tally)
    subscriber.ask_to_leave(1008, "slow client", "slow", now=1.0)
    subscriber.queue.offer(_frames(2, 2, 10), now=1.0)
    size = sum(len(d.frame) for d in _frames(0, 2, 50_000)) + 4 + len("slow client")
    data = _read_all(client, session, tally, size)
    assert data[-len("slow client") - 4:] == b"\x88\x0d\x03\xf0slow client" and not ws.connected
    session.pump(tally)
    with pytest.raises(BlockingIOError):
        client.recv(65536)


def test_tend_pings_when_due_and_asks_a_silent_client_to_leave(wire: Wire) -> None:
    server, client = wire
    session, subscriber, ws = _session(server, queue_size=4)
    session.tend(now=24.9)
    assert ws.input_buffer == []  # what clients send is discarded
    session.tend(now=25.0)
    assert client.recv(65536) == PING_FRAME and ws.pong_received is False
    session.tend(now=44.9)
    assert subscriber.kick is None
    session.tend(now=45.0)
    assert subscriber.kick is not None and subscriber.kick.label == "ping-timeout"


def _joined(deliveries: list[Delivery]) -> bytes:
    return b"".join(d.frame for d in deliveries)


def test_fresh_errors_go_to_a_client_with_nothing_queued_as_the_shared_buffer(wire: Wire) -> None:
    server, client = wire
    session, subscriber, _ = _session(server, queue_size=8)
    first, second = _frames(0, 2, 10), _frames(2, 3, 10)
    fresh = Fresh([(1, first), (2, second)])
    tally = Tally()
    session.pump(tally, fresh, now=0.0)
    assert client.recv(65536) == fresh.frames == _joined(first + second)
    assert (tally.delivered, len(subscriber.queue), subscriber.delivered) == (5, 0, 5)


def test_a_client_attached_after_a_batch_gets_only_the_later_ones(wire: Wire) -> None:
    server, client = wire
    session, subscriber, _ = _session(server, queue_size=8)
    subscriber.attached_seq = 1  # its replay already held batch 1
    first, second = _frames(0, 2, 10), _frames(2, 3, 10)
    tally = Tally()
    session.pump(tally, Fresh([(1, first), (2, second)]), now=0.0)
    assert client.recv(65536) == _joined(second) and tally.delivered == 3


def test_fresh_errors_wait_behind_queued_ones(wire: Wire) -> None:
    server, client = wire
    session, subscriber, _ = _session(server, queue_size=8)
    replay, fresh = _frames(0, 2, 10), _frames(2, 2, 10)
    subscriber.queue.offer(replay, now=0.0)
    session.pump(Tally(), Fresh([(1, fresh)]), now=0.0)
    assert client.recv(65536) == _joined(replay + fresh)


def test_fresh_errors_queue_behind_pending_bytes_and_the_oldest_are_dropped_and_counted(wire: Wire) -> None:
    server, client = wire
    session, subscriber, _ = _session(server, queue_size=4)
    big, later = _frames(0, 4, 50_000), _frames(4, 6, 10)
    tally = Tally()
    session.pump(tally, Fresh([(1, big)]), now=0.0)
    assert tally.pending == 1  # the kernel took part of 200 KB
    session.pump(tally, Fresh([(2, later)]), now=1.0)
    assert (tally.dropped, subscriber.dropped, len(subscriber.queue)) == (2, 2, 4)
    assert subscriber.queue.full_since() == 1.0
    expected = _joined(big + later[2:])
    assert _read_all(client, session, tally, len(expected)) == expected


def test_filters_apply_to_fresh_errors_and_are_counted(wire: Wire) -> None:
    server, client = wire
    session, subscriber, _ = _session(server, queue_size=8, subscription=Subscription(frozenset({"a"})))
    wanted = [Delivery(service="a", environment="e", frame=text_frame(b"a%d" % i), payload={}) for i in range(2)]
    other = [Delivery(service="b", environment="e", frame=text_frame(b"b%d" % i), payload={}) for i in range(3)]
    tally = Tally()
    session.pump(tally, Fresh([(1, [wanted[0], *other, wanted[1]])]), now=0.0)
    assert client.recv(65536) == _joined(wanted)
    assert (tally.delivered, tally.filtered) == (2, 3)


def test_hub_forwards_numbered_batches_and_fills_only_the_queues_of_the_other_clients() -> None:
    forwarded: list[tuple[int, int]] = []
    hub = Hub(replay=10, slow_client_s=30.0, metrics=BridgeMetrics(), clock=lambda: 0.0,
              forward=lambda seq, deliveries: forwarded.append((seq, len(deliveries))))
    plain = Subscriber("p", "websocket", Subscription(), 8, connected_at=0.0)
    sio = Subscriber("s", "socketio", Subscription(), 8, connected_at=0.0)
    hub.publish([_delivery(), _delivery()])
    assert hub.attach(plain, forwarded=True) and hub.attach(sio)
    assert plain.attached_seq == sio.attached_seq == 1 and len(plain.queue) == len(sio.queue) == 2  # replay
    hub.publish([_delivery()])
    assert forwarded == [(1, 2), (2, 1)]
    assert len(plain.queue) == 2 and len(sio.queue) == 3


# ---------------------------------------------------------------- integration helpers

class RunningBridge:
    def __init__(self, env: dict[str, str], log_path: Path, extra_args: list[str]) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._terminated = False
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "panopticon", "bridge", "--host", "127.0.0.1", *extra_args],
            env={**os.environ, **env, "ERROR_STREAM_PORT": str(self.port)}, cwd=ROOT,
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/error-logs"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        def healthy() -> bool:
            assert self.process.poll() is None, f"bridge exited:\n{self.log()}"
            return self.health()[0] == 200

        eventually(healthy, timeout_s, lambda: f"the bridge to be healthy:\n{self.log()}")

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.http_url}/health", timeout=2) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return 0, {}

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=2) as answer:
            text = answer.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def wait_metric(self, name: str, predicate: Callable[[float], bool], timeout_s: float = 10.0) -> float:
        value = 0.0

        def reached() -> bool:
            nonlocal value
            value = self.metrics().get(name, 0.0)
            return predicate(value)

        eventually(reached, timeout_s, lambda: f"{name} (still {value}):\n{self.log()}")
        return value

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def terminate(self) -> None:
        if self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.terminate()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


@pytest.fixture
def error_settings(settings: Settings) -> Settings:
    create_topics(settings, partitions=4)
    return settings


class Bridges:
    """Starts bridges for one test; ``launch`` does not wait, so a test needing two starts them side by side."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self._env = {**env, "ERROR_STREAM_REPLAY": "0"}
        self._tmp_path = tmp_path
        self.started: list[RunningBridge] = []

    def launch(self, *extra_args: str, **env: str) -> RunningBridge:
        bridge = RunningBridge({**self._env, **env}, self._tmp_path / f"bridge-{len(self.started)}.log",
                               list(extra_args))
        self.started.append(bridge)
        return bridge

    def __call__(self, *extra_args: str, **env: str) -> RunningBridge:
        bridge = self.launch(*extra_args, **env)
        bridge.wait_healthy()
        return bridge

    def stop_all(self) -> None:
        for bridge in self.started:  # SIGTERM to all first: they shut down side by side
            bridge.terminate()
        for bridge in self.started:
            bridge.stop()


@pytest.fixture
def start_bridge(settings_env: dict[str, str], error_settings: Settings, tmp_path: Path) -> Iterator[Bridges]:
    bridges = Bridges(settings_env, tmp_path)
    yield bridges
    bridges.stop_all()


class ErrorProducer:
    """Produces stored-log-shaped errors; remembers when each was produced (by message id)."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(producer_config(settings, "test-bridge", **{"linger.ms": 0}))
        self._topic = settings.kafka_apm_log_error_topic
        self.sent_at: dict[str, float] = {}
        # connected before any error is timed: a new producer's first send waits for its connection and
        # metadata, which is the producer's delay, not the bridge's
        self._producer.list_topics(self._topic, timeout=10)

    def error(self, message: str, service: str = "checkout", environment: str = "production",
              key: str | None = None, **extra: Any) -> dict[str, Any]:
        doc = {"@timestamp": "2024-05-01T10:00:00.123Z", "ingested_at": "2024-05-01T10:00:00.200Z",
               "type": "log", "service_name": service, "environment": environment, "level": "ERROR",
               "message": message, **extra}
        self.raw(json.dumps(doc).encode(), key)
        self.sent_at[message] = time.time()  # wall clock: comparable with kernel receive timestamps
        return doc

    def raw(self, value: bytes | None, key: str | None = None) -> None:
        self._producer.produce(self._topic, value, key)
        self._producer.poll(0)

    def flush(self) -> None:
        assert self._producer.flush(10) == 0


def expected_event(doc: dict[str, Any]) -> dict[str, Any]:
    """What a browser must receive for a stored document: the documented fields, absent ones omitted."""
    event = {"timestamp": doc["@timestamp"]}
    for key in ("service_name", "environment", "level", "message", "trace_id", "span_id", "labels",
                "http_method", "http_path", "http_status_code"):
        if doc.get(key) not in (None, {}):
            event[key] = doc[key]
    return event


class PlainReader:
    """A websocket-client connection read on a thread; records each error with its arrival time.

    websocket-client's pure-Python UTF-8 check costs ~8 ms per 4 KB frame and is redundant (text frames are
    decoded as UTF-8 anyway), so it is skipped: the readers must not starve the process they share.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self.ws = websocket.create_connection(url, timeout=10, skip_utf8_validation=True, **options)
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                text = self.ws.recv()
                self.received.append((time.time(), json.loads(text)))
        except Exception:
            pass

    def messages(self) -> list[str]:
        return [event["message"] for _, event in self.received]

    def close(self) -> None:
        self.ws.close()


SO_TIMESTAMPNS = 35  # Linux (asm-generic); the socket module does not export it
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
READ_CHUNK = 8192  # small reads: a receive timestamp then belongs to the frame just read, not to a later one


class StampedReaders:
    """Plain WebSocket clients that cannot fall behind, with delivery times taken by the kernel.

    They exist to watch the bridge, so nothing about the test process may make them slow: 4 MiB receive
    buffers (more than a whole test's errors), one selector thread parsing frames from raw sockets (no
    per-frame Python work beyond ``json.loads``), and each error's arrival time is the kernel's receive
    timestamp (``SO_TIMESTAMPNS``) of the read that completed its frame. A descheduled test process can
    therefore neither make these clients drop errors nor inflate their latencies.
    """

    def __init__(self, url: str, count: int) -> None:
        host_port, _, path = url.removeprefix("ws://").partition("/")
        host, _, port = host_port.partition(":")
        self.received: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(count)]
        self._selector = selectors.DefaultSelector()
        for index in range(count):
            sock, rest = self._connect(host, int(port), "/" + path)
            buffer = bytearray()
            self._selector.register(sock, selectors.EVENT_READ, (index, buffer))
            if rest:
                buffer += rest
                self._frames(index, buffer, time.time())
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _connect(host: str, port: int, path: str) -> tuple[socket.socket, bytes]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # before connect: window scaling
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.settimeout(10)
        sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, "closed during the handshake"
            answer += chunk
        head, rest = answer.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        sock.setblocking(False)
        return sock, rest

    def _run(self) -> None:
        while not self._halt.is_set():
            for key, _ in self._selector.select(0.1):
                index, buffer = key.data
                try:
                    data, ancillary, _, _ = key.fileobj.recvmsg(READ_CHUNK, socket.CMSG_SPACE(16))  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data, ancillary = b"", []
                if not data:
                    self._selector.unregister(key.fileobj)
                    continue
                at = time.time()
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        seconds, nanoseconds = struct.unpack("qq", value[:16])
                        at = seconds + nanoseconds / 1e9
                buffer += data
                self._frames(index, buffer, at)

    def _frames(self, index: int, buffer: bytearray, at: float) -> None:
        """Take the complete (unmasked, unfragmented) server frames off ``buffer``."""
        while len(buffer) >= 2:
            length, header = buffer[1] & 0x7F, 2
            if length == 126:
                length, header = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, header = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < header + length:
                return
            if buffer[0] & 0x0F == 0x1:
                self.received[index].append((at, json.loads(buffer[header:header + length])))
            del buffer[:header + length]

    def close(self) -> None:
        self._halt.set()
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


class SocketIOReader:
    def __init__(self, http_url: str, origin: str | None = None, query: str = "",
                 headers: dict[str, str] | None = None) -> None:
        options = {"origin": origin} if origin else {}
        self.client = socketio.Client(reconnection=False, websocket_extra_options=options)
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.client.on("error-log", lambda data: self.received.append((time.time(), data)))
        url = f"{http_url}?{query}" if query else http_url
        self.client.connect(url, headers=headers or {}, socketio_path="/ws/error-logs", transports=["websocket"],
                            wait_timeout=5)

    def messages(self) -> list[str]:
        return [event["message"] for _, event in self.received]

    def close(self) -> None:
        self.client.disconnect()


def wait_connected(bridge: RunningBridge, websocket_clients: int = 0, socketio_clients: int = 0) -> None:
    """Clients count as connected once the hub fans out to them (the handshake alone is not enough)."""
    bridge.wait_metric('panopticon_bridge_clients{protocol="websocket"}', lambda v: v == websocket_clients)
    bridge.wait_metric('panopticon_bridge_clients{protocol="socketio"}', lambda v: v == socketio_clients)


def ws_status(url: str, origin: str | None, header: list[str] | None = None) -> int:
    """HTTP status of a WebSocket handshake: 101 when it connects."""
    try:
        ws = websocket.create_connection(url, timeout=5, origin=origin, suppress_origin=origin is None,
                                         header=header or [])
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    ws.close()
    return 101


# ---------------------------------------------------------------- integration tests

def test_plain_and_socketio_clients_receive_every_error_with_the_documented_fields(
        start_bridge: Bridges, error_settings: Settings) -> None:
    bridge = start_bridge()
    plain = PlainReader(bridge.ws_url)
    sio = SocketIOReader(bridge.http_url)
    wait_connected(bridge, websocket_clients=1, socketio_clients=1)
    producer = ErrorProducer(error_settings)
    docs = []
    for i in range(40):
        extra: dict[str, Any] = {}
        if i % 2:
            extra = {"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "http_method": "POST",
                     "http_path": "/api/pay", "http_status_code": 500, "labels": {"region": "eu", "n": i}}
        docs.append(producer.error(f"error {i}", service=f"svc-{i % 3}", **extra))
        time.sleep(0.01)
    producer.flush()

    expected = [expected_event(doc) for doc in docs]
    for reader in (plain, sio):
        eventually(lambda r=reader: len(r.received) >= len(docs), 5, f"{type(reader).__name__} errors")
        assert sorted((e for _, e in reader.received), key=lambda e: e["message"]) == \
            sorted(expected, key=lambda e: e["message"])
    first = next(event for _, event in plain.received if event["message"] == "error 0")
    assert set(first) == {"timestamp", "service_name", "environment", "level", "message"}
    metrics = bridge.metrics()
    assert metrics["panopticon_bridge_relayed_total"] == len(docs)
    assert metrics["panopticon_bridge_delivered_total"] == 2 * len(docs)
    plain.close()
    sio.close()
    wait_connected(bridge, 0, 0)


def test_origin_is_checked_before_the_upgrade(start_bridge: Bridges) -> None:
    bridge = start_bridge.launch(ERROR_STREAM_WS_ORIGINS=f"{ALLOWED}, https://other.example")
    open_bridge = start_bridge.launch()  # empty allow-list: any origin
    bridge.wait_healthy()
    assert ws_status(bridge.ws_url, "https://evil.example") == 403
    assert ws_status(bridge.ws_url, None) == 403
    assert ws_status(bridge.ws_url, ALLOWED) == 101
    assert ws_status(bridge.ws_url, "https://other.example") == 101
    with pytest.raises(socketio.exceptions.ConnectionError):
        SocketIOReader(bridge.http_url, origin="https://evil.example")
    SocketIOReader(bridge.http_url, origin=ALLOWED).close()
    assert bridge.metrics()['panopticon_bridge_rejected_total{reason="origin"}'] == 3

    open_bridge.wait_healthy()
    assert ws_status(open_bridge.ws_url, "https://evil.example") == 101
    SocketIOReader(open_bridge.http_url, origin="https://evil.example").close()


def test_api_auth_token_is_checked_before_the_upgrade(start_bridge: Bridges) -> None:
    token = "s3cret-token"
    bridge = start_bridge(API_AUTH_TOKEN=token)  # /health answers without it (wait_healthy), /metrics too
    right, wrong = [f"Authorization: Bearer {token}"], ["Authorization: Bearer nope"]
    assert ws_status(bridge.ws_url, None) == 401
    assert ws_status(bridge.ws_url, None, wrong) == 401
    assert ws_status(f"{bridge.ws_url}?access_token=nope", None) == 401
    assert ws_status(bridge.ws_url, None, right) == 101
    assert ws_status(f"{bridge.ws_url}?access_token={token}", None) == 101  # what a browser can send
    with pytest.raises(socketio.exceptions.ConnectionError):
        SocketIOReader(bridge.http_url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        SocketIOReader(bridge.http_url, headers={"Authorization": "Bearer nope"})
    SocketIOReader(bridge.http_url, headers={"Authorization": f"Bearer {token}"}).close()
    SocketIOReader(bridge.http_url, query=f"access_token={token}").close()
    assert bridge.metrics()['panopticon_bridge_rejected_total{reason="unauthorized"}'] == 5


def test_filters_deliver_only_matching_errors(start_bridge: Bridges,
                                              error_settings: Settings) -> None:
    bridge = start_bridge()
    filtered = PlainReader(f"{bridge.ws_url}?service=api&service=web&environment=PROD")
    everything = PlainReader(bridge.ws_url)
    wait_connected(bridge, websocket_clients=2)
    producer = ErrorProducer(error_settings)
    cases = [("api", "production", True), ("web", "production", True), ("api", "staging", False),
             ("worker", "production", False), ("web", "prod", True), ("db", "development", False)]
    wanted = []
    for round_ in range(3):
        for service, environment, match in cases:
            message = f"{service}/{environment}/{round_}"
            producer.error(message, service=service, environment=environment)
            if match:
                wanted.append(message)
    producer.flush()
    eventually(lambda: len(everything.received) == 3 * len(cases), 5, "unfiltered errors")
    eventually(lambda: len(filtered.received) >= len(wanted), 5, "filtered errors")
    time.sleep(0.3)
    assert sorted(filtered.messages()) == sorted(wanted)
    assert bridge.metrics()["panopticon_bridge_filtered_total"] == 3 * len(cases) - len(wanted)


def test_replay_gives_the_last_errors_oldest_first(start_bridge: Bridges,
                                                  error_settings: Settings) -> None:
    bridge = start_bridge(ERROR_STREAM_REPLAY="5")
    producer = ErrorProducer(error_settings)
    for i in range(8):
        producer.error(f"old {i}", service="svc", key="one-partition")  # arrival order = produced order
    producer.flush()
    bridge.wait_metric("panopticon_bridge_relayed_total", lambda v: v == 8)
    late = PlainReader(bridge.ws_url)
    filtered = PlainReader(f"{bridge.ws_url}?service=nobody")
    eventually(lambda: len(late.received) >= 5, 5, "replay")
    producer.error("new", service="svc")
    producer.flush()
    eventually(lambda: len(late.received) >= 6, 5, "live error after the replay")
    assert late.messages() == ["old 3", "old 4", "old 5", "old 6", "old 7", "new"]
    assert filtered.received == []


def test_two_instances_each_deliver_every_error(start_bridge: Bridges,
                                                error_settings: Settings) -> None:
    first, second = start_bridge.launch(), start_bridge.launch()
    first.wait_healthy()
    second.wait_healthy()
    readers = [PlainReader(first.ws_url), PlainReader(second.ws_url), SocketIOReader(second.http_url)]
    wait_connected(first, websocket_clients=1)
    wait_connected(second, websocket_clients=1, socketio_clients=1)
    producer = ErrorProducer(error_settings)
    messages = [f"fan-out {i}" for i in range(60)]
    for message in messages:
        producer.error(message)
    producer.flush()
    for reader in readers:
        eventually(lambda r=reader: len(r.received) >= len(messages), 5, "every error on every instance")
        assert sorted(reader.messages()) == sorted(messages)


def _read_until_closed(ws: websocket.WebSocket, timeout_s: float) -> int | None:
    """Drain a connection; the close code it ends with (None when it ends without a close frame)."""
    ws.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            opcode, frame = ws.recv_data_frame(True)
        except (websocket.WebSocketConnectionClosedException, OSError):
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int(struct.unpack("!H", frame.data[:2])[0]) if len(frame.data) >= 2 else None
    raise AssertionError("the slow client was never disconnected")


def test_a_client_that_never_reads_does_not_delay_the_others_and_is_disconnected(
        start_bridge: Bridges, error_settings: Settings) -> None:
    bridge = start_bridge("--send-buffer-kb", "16", ERROR_STREAM_QUEUE_SIZE="64",
                          ERROR_STREAM_SLOW_CLIENT_S="1.5")
    # A cold producer holds its first second of errors until it has a producer id, then sends them at once:
    # the feed would publish ~100 errors in one batch and every 64-slot queue, fast or not, would drop the
    # oldest (that, not CPU starvation, made the fast clients stall at ~270). Warm it up, and the bridge's
    # consumer with it, so the errors reach the bridge at the rate they are produced.
    producer = ErrorProducer(error_settings)
    producer.error("warm-up")
    producer.flush()
    bridge.wait_metric("panopticon_bridge_relayed_total", lambda v: v == 1)
    stuck = websocket.create_connection(bridge.ws_url, timeout=10,
                                        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    fast = StampedReaders(bridge.ws_url, 3)
    wait_connected(bridge, websocket_clients=4)
    body = "x" * 4000  # big errors fill the stuck client's socket buffers quickly
    messages = [f"load {i} {body}" for i in range(300)]
    for message in messages:
        producer.error(message)
        time.sleep(0.01)
    producer.flush()

    # kicked while the errors were still flowing; it reads now and finds the close frame
    bridge.wait_metric("panopticon_bridge_slow_clients_total", lambda v: v == 1)
    assert _read_until_closed(stuck, timeout_s=10) == 1008, bridge.log()
    bridge.wait_metric('panopticon_bridge_disconnects_total{reason="slow"}', lambda v: v == 1)
    eventually(lambda: all(len(r) >= len(messages) for r in fast.received), 5,
               lambda: f"fast clients: {[len(r) for r in fast.received]} {bridge.metrics()}")
    for received in fast.received:
        latencies = sorted(at - producer.sent_at[event["message"]] for at, event in received)
        assert len(latencies) == len(messages)
        assert latencies[int(len(latencies) * 0.99)] < 1.0, latencies[-10:]
    metrics = bridge.metrics()
    assert metrics["panopticon_bridge_dropped_total"] > 0  # all of it the stuck client's: the others got all
    assert metrics["panopticon_bridge_delivered_total"] >= 3 * len(messages)
    wait_connected(bridge, websocket_clients=3)
    fast.close()


def test_malformed_records_are_skipped_and_the_bridge_keeps_running(
        start_bridge: Bridges, error_settings: Settings) -> None:
    bridge = start_bridge()
    reader = PlainReader(bridge.ws_url)
    wait_connected(bridge, websocket_clients=1)
    producer = ErrorProducer(error_settings)
    for value in (b"not json", b'{"message": "no service"}', b"[1, 2, 3]", b"", None,
                  b'{"@timestamp": 5, "service_name": "s", "environment": "e", "level": "ERROR", '
                  b'"message": "m"}', b"\xff\xfe\x00"):
        producer.raw(value)
    producer.flush()
    bridge.wait_metric("panopticon_bridge_malformed_total", lambda v: v == 7)
    producer.error("still alive")
    producer.flush()
    eventually(lambda: reader.messages() == ["still alive"], 5, "a valid error after malformed ones")
    assert bridge.process.poll() is None
    assert bridge.health() == (200, {"status": "ok", "feed": "running", "clients": 1})
