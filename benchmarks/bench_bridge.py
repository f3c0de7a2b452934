"""Benchmark of the live error feed: delivery latency, CPU and memory of one bridge process.

    python -m benchmarks.bench_bridge            # 100 and 1,000 clients, 200 errors/s for 30 s each
    python -m benchmarks.bench_bridge --quick    # 8 s per phase

Starts its own local stack (free ports) and a bridge (`python -m panopticon bridge`), measures the Kafka leg
alone (produce -> readable by a plain consumer, no clients), then for each client count: connects that many
real WebSocket clients (TCP + RFC 6455 handshake; load processes of up to 500 clients each, one selector loop
per process, so the load side stays cheap enough to share two cores with the bridge), produces errors at a
fixed rate to the error topic, and measures the time from produce to receipt of every frame on ~100 timed
clients per phase; the other clients only walk frame headers and count (parsing every frame of 1,000 clients,
200,000 frames/s, would make the load side the bottleneck: its clients stop reading and the bridge rightly
drops for them). Also the bridge's CPU per delivered frame and the load average, since the machine may be
shared. Prints a table and appends one JSON line per figure to benchmarks/results/latest.jsonl.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks.rig import local_stack
from panopticon.common.clients import consumer_config, producer_config
from panopticon.common.settings import Settings, load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools.stack import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "latest.jsonl"
CLIENTS_PER_LOADER = 500
TIMED_CLIENTS = 100  # clients per phase that time every frame; the others count frames
HIST_MS = 20_000
MARK = b'"bench_sent":'
PONG = b"\x8a\x80\x00\x00\x00\x00"  # masked (zero key), empty


# ---------------------------------------------------------------- load side (a separate process)

def _handshake(host: str, port: int, path: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((host, port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Origin: http://bench.local\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        answer += chunk
    head, rest = answer.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    sock.setblocking(False)
    return sock, rest


class Reader:
    """Frames of one connection. A timed reader takes each error's latency from its `bench_sent` label; the
    others only count frames (and answer pings), so the load side stays cheap at 200,000 frames/s."""

    __slots__ = ("sock", "buf", "closed", "timed")

    def __init__(self, sock: socket.socket, rest: bytes, timed: bool) -> None:
        self.sock = sock
        self.buf = bytearray(rest)
        self.closed = False
        self.timed = timed

    def feed(self, now: float, hist: list[int]) -> int:
        buf = self.buf
        pos = received = 0
        size = len(buf)
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                header = 10
            end = pos + header + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 1:
                received += 1
                if self.timed:
                    self._time(buf, pos + header, end, now, hist)
            elif opcode == 9:
                self.sock.sendall(PONG)
            elif opcode == 8:
                self.closed = True
            pos = end
        del buf[:pos]
        return received

    @staticmethod
    def _time(buf: bytearray, start: int, end: int, now: float, hist: list[int]) -> None:
        at = buf.find(MARK, start, end)
        if at < 0:
            return
        begin = stop = at + len(MARK)
        while buf[stop] not in b",}":
            stop += 1
        latency_ms = int((now - float(buf[begin:stop])) * 1000)
        hist[min(max(latency_ms, 0), HIST_MS - 1)] += 1


def load_worker(url: str, clients: int, timed_every: int) -> None:
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.partition(":")
    readers = [Reader(*_handshake(host, int(port), "/" + path), timed=i % timed_every == 0)
               for i in range(clients)]
    selector = selectors.DefaultSelector()
    for reader in readers:
        selector.register(reader.sock, selectors.EVENT_READ, reader)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    print("ready", flush=True)
    hist = [0] * HIST_MS
    received = 0
    running = True
    while running:
        for key, _ in selector.select(1.0):
            reader = key.data
            if reader is None:
                running = False
                sys.stdin.readline()
                break
            try:
                chunk = reader.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                reader.closed = True
                selector.unregister(reader.sock)
                continue
            reader.buf += chunk
            received += reader.feed(time.time(), hist)
    closed = sum(r.closed for r in readers)
    for reader in readers:
        reader.sock.close()
    cpu = psutil.Process().cpu_times()
    try:
        print(json.dumps({"hist": hist, "received": received, "closed": closed,
                          "timed": sum(r.timed for r in readers), "cpu_s": cpu.user + cpu.system}), flush=True)
    except BrokenPipeError:  # the orchestrator gave up on this phase
        pass


# ---------------------------------------------------------------- orchestration

class BridgeUnderTest:
    def __init__(self, env: dict[str, str], log_path: Path, max_clients: int) -> None:
        self.port = int(env["ERROR_STREAM_PORT"])
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "panopticon", "bridge", "--host", "127.0.0.1",
             "--max-clients", str(max_clients)],
            env={**os.environ, **env}, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the bridge exited at start")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("the bridge did not become healthy")

    def processes(self) -> list[psutil.Process]:
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def cpu_seconds(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes())

    def rdkafka_cpu_seconds(self) -> float:
        """CPU of librdkafka's own threads (named rdk:*) in the worker, reported apart so the bridge's own
        cost per frame stays visible (Kafka holds empty fetches for fetch.wait.max.ms, so they idle cheaply)."""
        worker = self.processes()[-1]
        total = 0.0
        for thread in worker.threads():
            try:
                name = Path(f"/proc/{worker.pid}/task/{thread.id}/comm").read_text()
            except OSError:
                continue
            if name.startswith("rdk:"):
                total += thread.user_time + thread.system_time
        return total

    def worker_peak_rss_mb(self) -> float:
        worker = self.processes()[-1]
        for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return worker.memory_info().rss / 2**20

    def gauge(self, name: str) -> float:
        """A metric's value; NaN while the bridge is too busy to answer /metrics."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as answer:
                for line in answer.read().decode().splitlines():
                    if line.startswith(name + " "):
                        return float(line.rsplit(" ", 1)[1])
        except OSError:
            return math.nan
        return 0.0

    def delay_buckets(self) -> dict[float, float]:
        """Cumulative counts of the bridge's own delay histogram (topic read -> client write), by bound."""
        prefix = 'panopticon_bridge_delivery_delay_seconds_bucket{le="'
        buckets = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(prefix):
                    bound = line[len(prefix):].split('"', 1)[0]
                    buckets[math.inf if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
        return buckets

    def wait_clients(self, count: int, timeout_s: float = 120.0) -> None:
        name = 'panopticon_bridge_clients{protocol="websocket"}'
        deadline = time.monotonic() + timeout_s
        while self.gauge(name) != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} clients, the bridge has {self.gauge(name):.0f}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _error_doc(seq: int) -> bytes:
    doc = {"@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "ingested_at": "x",
           "type": "log", "service_name": f"checkout-{seq % 7}", "environment": "production",
           "level": "ERROR", "message": f"payment provider timeout after 3 retries (order {seq:08d})",
           "trace_id": f"{seq:032x}", "span_id": f"{seq:016x}", "http_method": "POST",
           "http_path": "/api/v1/payments", "http_status_code": 504,
           "labels": {"region": "eu-west-1", "bench_seq": seq, "bench_sent": time.time()}}
    return json.dumps(doc).encode()


def produce(producer: Producer, topic: str, rate: int, duration_s: float) -> int:
    interval = 1.0 / rate
    count = int(rate * duration_s)
    start = time.monotonic()
    for seq in range(count):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.produce(topic, _error_doc(seq))
        producer.poll(0)
    producer.flush(30)
    return count


def _bucket_percentile(before: dict[float, float], after: dict[float, float], fraction: float) -> float:
    """Upper bound (ms) of the histogram bucket holding the percentile, over the phase."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    if not counts or counts[-1][1] == 0:
        return math.nan
    target = counts[-1][1] * fraction
    return next(bound * 1000 for bound, n in counts if n >= target)


def _percentile(hist: list[int], fraction: float) -> float:
    total = sum(hist)
    if not total:
        return math.nan
    target = math.ceil(total * fraction)
    seen = 0
    for ms, n in enumerate(hist):
        seen += n
        if seen >= target:
            return float(ms)
    return float(len(hist))


class KafkaBaseline(threading.Thread):
    """A plain consumer: how long an error takes from produce to readable from Kafka.

    It runs in a phase of its own (``measure_kafka``), not next to the clients, so that its CPU (it parses
    every record) is not taken from the bridge and the load processes a phase measures."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self._topic = settings.kafka_apm_log_error_topic
        self._consumer = Consumer(consumer_config(settings, f"bench-baseline-{os.getpid()}", "bench-baseline"))
        partitions = self._consumer.list_topics(self._topic, timeout=10).topics[self._topic].partitions
        self._consumer.assign([
            TopicPartition(self._topic, p, self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, p), timeout=10)[1]) for p in partitions])
        self._halt = threading.Event()
        self.hist = [0] * HIST_MS

    def run(self) -> None:
        while not self._halt.is_set():
            first = self._consumer.poll(0.05)  # consume(n, timeout) would wait the whole timeout for n records
            if first is None:
                continue
            for message in [first, *self._consumer.consume(999, 0)]:
                if message.error() is None:
                    now = time.time()
                    labels = json.loads(message.value())["labels"]
                    self.hist[min(int((now - labels["bench_sent"]) * 1000), HIST_MS - 1)] += 1
        self._consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join()


def measure_kafka(producer: Producer, settings: Settings, rate: int, duration_s: float) -> dict[str, float]:
    """Produce -> readable by a plain consumer, with the bridge running and no clients."""
    baseline = KafkaBaseline(settings)
    baseline.start()
    produce(producer, settings.kafka_apm_log_error_topic, rate, duration_s)
    time.sleep(1.0)
    baseline.stop()
    return {"kafka_p50_ms": _percentile(baseline.hist, 0.50), "kafka_p99_ms": _percentile(baseline.hist, 0.99)}


class Sampler(threading.Thread):
    """Peak RSS of the bridge worker, sampled while a phase runs."""

    def __init__(self, bridge: BridgeUnderTest) -> None:
        super().__init__(daemon=True)
        self._bridge = bridge
        self._halt = threading.Event()
        self.peak_mb = 0.0

    def run(self) -> None:
        while not self._halt.wait(0.2):
            try:
                rss = sum(p.memory_info().rss for p in self._bridge.processes()[1:]) / 2**20
            except psutil.Error:
                continue
            self.peak_mb = max(self.peak_mb, rss)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak_mb


def run_phase(bridge: BridgeUnderTest, producer: Producer, settings: Settings, clients: int, rate: int,
              duration_s: float) -> dict[str, Any]:
    topic = settings.kafka_apm_log_error_topic
    url = f"ws://127.0.0.1:{bridge.port}/ws/error-logs"
    loaders = []
    timed_every = max(1, clients // TIMED_CLIENTS)
    for first in range(0, clients, CLIENTS_PER_LOADER):
        count = min(CLIENTS_PER_LOADER, clients - first)
        loaders.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_bridge", "--load-worker", url, "--clients", str(count),
             "--timed-every", str(timed_every)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for loader in loaders:
        assert loader.stdout is not None
        if loader.stdout.readline().strip() != "ready":
            raise RuntimeError("a load process failed to connect its clients")
    bridge.wait_clients(clients)
    time.sleep(1.0)
    sampler = Sampler(bridge)
    sampler.start()
    load_before = os.getloadavg()[0]
    cpu_before = bridge.cpu_seconds()
    rdkafka_before = bridge.rdkafka_cpu_seconds()
    delay_before = bridge.delay_buckets()
    produced = produce(producer, topic, rate, duration_s)
    time.sleep(2.0)
    cpu = bridge.cpu_seconds() - cpu_before
    rdkafka_cpu = bridge.rdkafka_cpu_seconds() - rdkafka_before
    load_after = os.getloadavg()[0]
    delay_after = bridge.delay_buckets()
    peak = sampler.stop()
    hist = [0] * HIST_MS
    received = closed = timed = 0
    loader_cpu = 0.0
    for loader in loaders:
        out, _ = loader.communicate("stop\n", timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        hist = [a + b for a, b in zip(hist, result["hist"], strict=True)]
        received += result["received"]
        closed += result["closed"]
        timed += result["timed"]
        loader_cpu += result["cpu_s"]
    bridge.wait_clients(0)
    return {"inbridge_p50_ms": _bucket_percentile(delay_before, delay_after, 0.50),
            "inbridge_p99_ms": _bucket_percentile(delay_before, delay_after, 0.99),
            "clients": clients, "timed_clients": timed, "produced": produced, "received": received,
            "delivered_pct": 100.0 * received / (produced * clients), "closed": closed,
            "p50_ms": _percentile(hist, 0.50), "p99_ms": _percentile(hist, 0.99),
            "max_ms": _percentile(hist, 1.0), "cpu_s": cpu, "cpu_pct": 100.0 * cpu / (duration_s + 2.0),
            "rdkafka_cpu_s": rdkafka_cpu,
            "cpu_us_per_frame": 1e6 * (cpu - rdkafka_cpu) / received if received else math.nan,
            "peak_rss_mb": peak, "loader_cpu_s": loader_cpu, "load_before": load_before, "load_after": load_after}


def report(rows: list[dict[str, Any]], rate: int, duration_s: float) -> None:
    print(f"\nbridge benchmark: {rate} errors/s for {duration_s:.0f}s, {os.cpu_count()} CPUs, "
          "one bridge process (gunicorn gthread + one sender thread), plain WebSocket clients, "
          "real Kafka (local stack)")
    print("latency ms: produce -> client receipt, every frame of the timed clients (~100 per phase; all clients\n"
          "  count frames for 'delivered'); kafka: produce -> readable by a plain consumer (a phase of its own,\n"
          "  no clients, so its CPU is not taken from the phases);\n"
          "  in-bridge: bridge read it off the topic -> written to the client, per write (histogram bucket bound);\n"
          "  CPU s: bridge CPU ((rdk): of it librdkafka's threads);\n"
          "  us/frame: bridge CPU without librdkafka's per delivered frame; load: 1-min load average, start->end")
    print(f"{'clients':>7} {'p50':>6} {'p99':>6} {'max':>6} {'kafka p50':>9} {'kafka p99':>9} "
          f"{'in-bridge p50':>13} {'in-bridge p99':>13} {'delivered':>9}"
          f" {'CPU s':>6} {'(rdk)':>6} {'CPU %':>5} {'us/frame':>8} {'RSS MB':>6} {'load CPU s':>10} {'load':>11}")
    for r in rows:
        print(f"{r['clients']:>7} {r['p50_ms']:>6.0f} {r['p99_ms']:>6.0f} {r['max_ms']:>6.0f} "
              f"{r['kafka_p50_ms']:>9.0f} {r['kafka_p99_ms']:>9.0f} "
              f"{'<=' + format(r['inbridge_p50_ms'], 'g'):>13} "
              f"{'<=' + format(r['inbridge_p99_ms'], 'g'):>13} {r['delivered_pct']:>8.2f}% "
              f"{r['cpu_s']:>6.1f} {r['rdkafka_cpu_s']:>6.1f} {r['cpu_pct']:>4.0f}% {r['cpu_us_per_frame']:>8.1f} "
              f"{r['peak_rss_mb']:>6.0f} {r['loader_cpu_s']:>10.1f} "
              f"{r['load_before']:>5.1f}->{r['load_after']:<5.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    figures = [("delivery_latency_p50", "p50_ms", "ms"), ("delivery_latency_p99", "p99_ms", "ms"),
               ("delivery_latency_max", "max_ms", "ms"), ("kafka_latency_p50", "kafka_p50_ms", "ms"),
               ("kafka_latency_p99", "kafka_p99_ms", "ms"), ("inbridge_delay_p50_max", "inbridge_p50_ms", "ms"),
               ("inbridge_delay_p99_max", "inbridge_p99_ms", "ms"), ("delivered", "delivered_pct", "%"),
               ("cpu", "cpu_s", "s"), ("cpu_rdkafka", "rdkafka_cpu_s", "s"),
               ("cpu_per_frame_without_rdkafka", "cpu_us_per_frame", "us"),
               ("peak_rss", "peak_rss_mb", "MB")]
    with RESULTS.open("a") as out:
        for r in rows:
            conditions = {"clients": r["clients"], "errors_per_s": rate, "duration_s": duration_s,
                          "cpus": os.cpu_count(), "server": "gunicorn gthread + sender thread",
                          "protocol": "websocket", "errors_produced": r["produced"],
                          "timed_clients": r["timed_clients"], "kafka": "Apache Kafka 4.1 (local stack)",
                          "load_avg_1m": [round(r["load_before"], 2), round(r["load_after"], 2)]}
            for name, key, unit in figures:
                out.write(json.dumps({"name": f"bridge.{name}", "value": round(r[key], 3), "unit": unit,
                                      "conditions": conditions}) + "\n")
    print(f"appended to {RESULTS.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_bridge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 s per phase instead of 30 s")
    parser.add_argument("--clients", default="100,1000", help="comma list of client counts")
    parser.add_argument("--rate", type=int, default=200, help="errors per second")
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase")
    parser.add_argument("--load-worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--timed-every", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_worker:
        load_worker(args.load_worker, int(args.clients), max(1, args.timed_every))
        return 0
    duration = args.duration or (8.0 if args.quick else 30.0)
    counts = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp, local_stack() as stack:
        bridge = None
        try:
            env = {**stack.env(), "KAFKA_APM_LOG_ERROR_TOPIC": "bench.logs.error",
                   "ERROR_STREAM_PORT": str(free_port()), "ERROR_STREAM_REPLAY": "0", "LOG_LEVEL": "WARNING"}
            settings = load_settings(env)
            create_topics(settings, partitions=4)
            bridge = BridgeUnderTest(env, Path(tmp) / "bridge.log", max(counts) + 100)
            bridge.wait_healthy()
            producer = Producer(producer_config(settings, "bench-bridge"))
            producer.produce(settings.kafka_apm_log_error_topic, _error_doc(0))  # connected before timing
            producer.flush(30)
            print(f"phase: Kafka alone, {args.rate} errors/s for {min(duration, 8.0):.0f}s ...", flush=True)
            kafka = measure_kafka(producer, settings, args.rate, min(duration, 8.0))
            rows = []
            for count in counts:
                print(f"phase: {count} clients, {args.rate} errors/s for {duration:.0f}s ...", flush=True)
                rows.append({**run_phase(bridge, producer, settings, count, args.rate, duration), **kafka})
            report(rows, args.rate, duration)
        finally:
            if bridge is not None:
                bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
