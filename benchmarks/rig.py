"""What the end-to-end benchmarks share: the stack, the sink, the engine as a process group, sampling.

Every process started here is in its own process group and is stopped by that group in a ``finally``;
the local stack's two JVMs (Kafka, OpenSearch) lead a process group each and are stopped the same way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import psutil

from panopticon.common.settings import Settings, load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools.loadgen import produce
from panopticon.devtools.stack import LocalStack, StackError, free_port, stop_group
from panopticon.devtools.traffic import generate

ROOT = Path(__file__).resolve().parents[1]
_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", re.M)
STACK_GRACE_S = 15.0  # SIGTERM -> SIGKILL per JVM; the runner waits 120 s after its SIGINT
_shield_depth = 0  # how many ``shielded()`` blocks the main thread is in


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as SIGINT does), so ``finally`` blocks stop what was started."""
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold off SIGINT and SIGTERM while stopping things (a second Ctrl-C, or the runner's SIGINT after the
    terminal's, must not leave processes behind); one that came meanwhile is raised afterwards. Nests: only
    the outermost block holds and raises."""
    global _shield_depth
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield
        return
    if _shield_depth:
        _shield_depth += 1
        try:
            yield
        finally:
            _shield_depth -= 1
        return
    caught: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]} while stopping")


@contextmanager
def local_stack(attempts: int = 3) -> Iterator[LocalStack]:
    """The local stack (real Kafka and OpenSearch, two JVMs) on free ports in a temporary directory.

    Always stopped, also when the start fails half-way or the benchmark is interrupted (SIGINT or SIGTERM):
    each JVM's process group gets SIGTERM, then SIGKILL after ``STACK_GRACE_S``. A start that fails with a
    ``StackError`` (a port taken meanwhile by another program; Kafka's storage format refusing a random
    cluster id that begins with "-") is tried again, on new ports in a new directory, up to ``attempts``.
    """
    with tempfile.TemporaryDirectory(prefix="panopticon-bench-", ignore_cleanup_errors=True) as data_dir, \
            interrupt_on_sigterm():
        for attempt in range(1, attempts + 1):
            stack = LocalStack(str(Path(data_dir) / f"stack-{attempt}"), free_port(), free_port())
            try:
                print(f"starting the local stack (Kafka :{stack.kafka_port}, OpenSearch :{stack.search_port}) ...",
                      flush=True)
                started = time.monotonic()
                stack.start()
                print(f"local stack up in {time.monotonic() - started:.0f}s", flush=True)
                break
            except StackError as exc:
                stop_stack(stack)
                if attempt == attempts:
                    raise
                print(f"the local stack did not start ({exc}); again", file=sys.stderr, flush=True)
            except BaseException:
                stop_stack(stack)
                raise
        try:
            yield stack
        finally:
            stop_stack(stack)


def stop_stack(stack: LocalStack) -> None:
    """Both JVMs by process group: SIGTERM, then SIGKILL after ``STACK_GRACE_S`` (shielded from interrupts)."""
    pids = [pid for pid in (stack.search_pid, stack.kafka_pid) if pid]
    with shielded():
        try:
            for pid in pids:
                stop_group(pid, grace_s=STACK_GRACE_S)
            stack.stop()  # nothing left to stop: removes the state file
        except Exception:
            for pid in pids:
                kill_group(pid, grace_s=0.0)
            raise


def kill_group(pgid: int, grace_s: float) -> None:
    """SIGTERM to a process group, then SIGKILL if it is still there after ``grace_s``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class GroupCpu:
    """user+sys CPU-seconds of every live process of a process group (each JVM of the stack leads one).

    The members are looked up again every ``refresh_s``; a member that exits takes its CPU with it.
    """

    def __init__(self, pgid: int, refresh_s: float = 2.0) -> None:
        self.pgid = pgid
        self._refresh_s = refresh_s
        self._members: list[psutil.Process] = []
        self._found_at = -refresh_s

    def _lookup(self) -> None:
        members = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self.pgid:
                    members.append(proc)
            except (OSError, psutil.Error):
                continue
        self._members, self._found_at = members, time.monotonic()

    def __call__(self) -> float:
        if not self.pgid:
            return 0.0
        if time.monotonic() - self._found_at >= self._refresh_s:
            self._lookup()
        total = 0.0
        for proc in self._members:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total


def stack_cpu(stack: LocalStack) -> dict[str, Callable[[], float]]:
    """CPU-seconds readers of the Kafka JVM's process group ("broker") and OpenSearch's ("search")."""
    return {"broker": GroupCpu(stack.kafka_pid), "search": GroupCpu(stack.search_pid)}


def cpu_of(pid: int) -> float:
    """user+sys of a process and its descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


def topics_env(stack: LocalStack, name: str) -> dict[str, str]:
    return {**stack.env(), "KAFKA_APM_LOG_TOPIC": f"{name}.logs", "KAFKA_APM_SPAN_TOPIC": f"{name}.spans",
            "KAFKA_APM_LOG_ERROR_TOPIC": f"{name}.logs.error", "KAFKA_APM_DLQ_TOPIC": f"{name}.dlq",
            "KAFKA_OTLP_SPAN_TOPIC": "", "KAFKA_OTLP_LOG_TOPIC": ""}  # the JSON topics only: workers share them evenly


@dataclass
class Preloaded:
    settings: Settings
    records: int
    events: int
    logs: int
    spans: int
    bytes: int
    seconds: float


def preload(env: dict[str, str], count: int, seed: int, partitions: int = 4) -> Preloaded:
    """Create the topics and produce ``count`` loadgen records (timestamps of the last hour) at full speed."""
    settings = load_settings(env)
    create_topics(settings, partitions)
    tally = {"events": 0, "log": 0, "span": 0, "bytes": 0}

    def counted() -> Iterator[Any]:
        for record in generate(seed=seed, count=count, base_time_ms=int(time.time() * 1000) - 3_600_000):
            tally["events"] += record.n_events
            tally[record.kind] += record.n_events
            tally["bytes"] += len(record.value)
            yield record

    started = time.monotonic()
    summary = produce(settings, counted(), progress=False, flush_timeout_s=120)
    if summary.interrupted:  # produce() stops on Ctrl-C and returns: the benchmark must stop too
        raise KeyboardInterrupt
    if summary.delivery_errors:
        raise RuntimeError(f"preload: {summary.line()}")
    return Preloaded(settings, count, tally["events"], tally["log"], tally["span"], tally["bytes"],
                     time.monotonic() - started)


def get_json(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return msgspec.json.decode(answer.read())


def scrape(port: int) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels as written by prometheus_client)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {m.group(1) + (m.group(2) or ""): float(m.group(3)) for m in _METRIC.finditer(text)}


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include ``labels``."""
    total = 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for key, value in metrics.items():
        if key == name or key.startswith(name + "{"):
            if all(w in key for w in want):
                total += value
    return total


class Group:
    """A child started in a new session (its own process group), stopped by group."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path | None = None) -> None:
        out: Any = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(argv, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, cwd=ROOT,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if log_path is None
                                        else out, stderr=subprocess.STDOUT, start_new_session=True)
        if log_path:
            out.close()
        self.root = psutil.Process(self.process.pid)

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0,
             whole_group: bool = True) -> tuple[float, int | None]:
        """Signal the group (or its root only), wait, then SIGKILL the group.

        Returns (seconds, exit code or None if it had to be killed).
        """
        started = time.monotonic()
        code: int | None = None
        with shielded():
            try:
                if whole_group:
                    os.killpg(self.process.pid, sig)
                else:
                    self.process.send_signal(sig)
                code = self.process.wait(timeout_s)
            except ProcessLookupError:
                code = self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
        return time.monotonic() - started, code


class Sink(Group):
    def __init__(self) -> None:
        self.port = free_port()
        super().__init__([sys.executable, "-m", "benchmarks.sink", "--port", str(self.port)], {})
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the sink did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return dict(get_json(self.url + "/_bench/stats"))

    def reset(self) -> None:
        get_json(self.url + "/_bench/reset", "POST")

    def pause(self, seconds: float) -> None:
        get_json(f"{self.url}/_bench/pause?seconds={seconds}", "POST")


class Engine(Group):
    """``panopticon engine`` (supervisor + forked workers) with its metrics on a free port."""

    def __init__(self, env: dict[str, str], workers: int, group: str, log_path: Path) -> None:
        self.metrics_port = free_port()
        super().__init__([sys.executable, "-m", "panopticon", "engine"],
                         {**env, "ENGINE_WORKERS": str(workers), "ENGINE_GROUP_ID": group,
                          "ENGINE_INSTANCE_ID": group, "ENGINE_METRICS_PORT": str(self.metrics_port)}, log_path)
        self.log_path = log_path
        self.group = group
        self.brokers = env["KAFKA_BROKERS"]
        self.topics = [env.get("KAFKA_APM_LOG_TOPIC", "apm.logs"), env.get("KAFKA_APM_SPAN_TOPIC", "apm.spans")]

    def wait_assigned(self, timeout_s: float = 120.0) -> int:
        """Wait until every worker is up and the consumer group is stable with every input partition assigned
        (a cooperative rebalance takes two rounds); returns the number of workers."""
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.brokers})
        wanted = {(topic, p) for topic in self.topics
                  for p in admin.list_topics(topic, timeout=10).topics[topic].partitions}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                break
            try:
                workers = int(self.metrics().get("panopticon_engine_workers", 0))
                group = admin.describe_consumer_groups([self.group], request_timeout=5)[self.group].result()
            except Exception:  # noqa: BLE001 - not up yet (metrics port, group coordinator): ask again
                time.sleep(0.3)
                continue
            assigned = {(tp.topic, tp.partition) for member in group.members
                        for tp in (member.assignment.topic_partitions if member.assignment else [])}
            if workers and group.state == ConsumerGroupState.STABLE and len(group.members) == workers \
                    and assigned >= wanted:
                return workers
            time.sleep(0.3)
        raise TimeoutError(f"the engine's group {self.group} did not settle; see {self.log_path}")

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> tuple[float, int | None]:
        """SIGTERM to the supervisor only (a drain, as an orchestrator does it; SIGTERM to the whole group
        would reach each worker twice, which is the fast stop), then SIGKILL to the group. A killed
        supervisor leaves its shared memory: remove it."""
        with shielded():
            outcome = super().stop(sig, timeout_s, whole_group=False)
            for path in Path("/dev/shm").glob(f"panopticon-{self.process.pid}-*"):
                path.unlink(missing_ok=True)
        return outcome

    def stored(self) -> float:
        try:
            return metric_sum(self.metrics(), "panopticon_engine_events_total", outcome="stored")
        except OSError:
            return 0.0

    def received(self) -> float:
        """Events the workers have read and decoded (stored or not yet)."""
        try:
            return metric_sum(self.metrics(), "panopticon_engine_events_total", outcome="received")
        except OSError:
            return 0.0


@dataclass
class Sample:
    t: float
    progress: float
    cpu: float  # user+sys of every process of the group (exited ones at their last value)
    rss: dict[int, int]
    others: dict[str, float] = field(default_factory=dict)  # CPU-seconds of the processes beside it, by name
    begun: float = 0.0  # work begun (e.g. events received), if the Sampler has a ``begun`` reader


@dataclass
class Sampler:
    """Samples a process group's CPU and RSS with a progress counter, every ``interval_s``; the CPU of the
    processes beside it (``others``: name -> CPU-seconds reader, e.g. ``stack_cpu(stack)`` and the sink); and,
    optionally, a counter of work begun (``begun``, e.g. ``Engine.received``) that starts the window."""

    group: Group
    progress: Callable[[], float]
    interval_s: float = 0.2
    others: dict[str, Callable[[], float]] = field(default_factory=dict)
    begun: Callable[[], float] | None = None
    samples: list[Sample] = field(default_factory=list)
    peak_rss: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    _cpu: dict[int, float] = field(default_factory=dict)

    def sample(self) -> Sample:
        rss = {}
        for proc in self.group.processes():
            try:
                if proc.pid not in self.names:
                    self.names[proc.pid] = " ".join(proc.cmdline())
                times = proc.cpu_times()
                self._cpu[proc.pid] = times.user + times.system
                rss[proc.pid] = proc.memory_info().rss
            except psutil.Error:
                continue
            self.peak_rss[proc.pid] = max(self.peak_rss.get(proc.pid, 0), rss[proc.pid])
        others = {name: read() for name, read in self.others.items()}
        begun = self.begun() if self.begun is not None else 0.0
        s = Sample(time.monotonic(), self.progress(), sum(self._cpu.values()), rss, others, begun)
        self.samples.append(s)
        return s

    def run_until(self, done: Callable[[Sample], bool], timeout_s: float,
                  tick: Callable[[Sample], None] | None = None) -> Sample:
        deadline = time.monotonic() + timeout_s
        while True:
            s = self.sample()
            if tick:
                tick(s)
            if done(s) or time.monotonic() > deadline or not self.group.alive():
                return s
            time.sleep(self.interval_s)


@dataclass
class Window:
    """From the first sample with work begun (or, without a ``begun`` reader, with progress) to the first that
    reached the goal, or the last sample."""

    events: float
    seconds: float
    cpu_s: float
    complete: bool
    others_cpu_s: dict[str, float] = field(default_factory=dict)  # the ``others`` of the Sampler, same window

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_s / self.events * 100_000 if self.events else float("nan")

    def other_per_100k(self, name: str) -> float:
        """CPU-seconds of ``name`` (e.g. "broker", "search") per 100k events stored in the window."""
        if not self.events or name not in self.others_cpu_s:
            return float("nan")
        return self.others_cpu_s[name] / self.events * 100_000

    def other_cores(self, name: str) -> float:
        """Cores ``name`` used on average over the window."""
        if self.seconds <= 0 or name not in self.others_cpu_s:
            return float("nan")
        return self.others_cpu_s[name] / self.seconds


def window(samples: list[Sample], goal: float) -> Window:
    started = next((s for s in samples if s.begun > 0 or s.progress > 0), None)
    if started is None:
        return Window(0, 0, 0, False)
    last = next((s for s in samples if s.progress >= goal), samples[-1])
    others = {name: last.others.get(name, 0.0) - value for name, value in started.others.items()}
    return Window(last.progress - started.progress, last.t - started.t, last.cpu - started.cpu,
                  last.progress >= goal, others)


def roles(group: Group, sampler: Sampler) -> dict[str, float]:
    """Peak RSS in MB by role: the group's root process, multiprocessing helpers, the other children in pid order."""
    out = {}
    root = group.process.pid
    peak = sampler.peak_rss
    if root in peak:
        out["root"] = peak[root] / 2**20
    children = 0
    for pid in sorted(p for p in peak if p != root):
        if "resource_tracker" in sampler.names.get(pid, ""):
            out["resource_tracker"] = peak[pid] / 2**20
        else:
            out[f"child{children}"] = peak[pid] / 2**20
            children += 1
    return out


def helper_pids(sampler: Sampler) -> set[int]:
    return {pid for pid, name in sampler.names.items() if "resource_tracker" in name}


def bulk_figures(metrics: dict[str, float]) -> dict[str, float]:
    """Bulk latency and fill from the engine's /metrics."""
    requests = metric_sum(metrics, "panopticon_engine_bulk_requests_total")
    docs = metric_sum(metrics, "panopticon_engine_batch_docs_total")
    count = metrics.get("panopticon_engine_bulk_latency_seconds_count", 0.0)
    total = metrics.get("panopticon_engine_bulk_latency_seconds_sum", 0.0)
    buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in metrics.items()
                     if k.startswith("panopticon_engine_bulk_latency_seconds_bucket"))

    def quantile(q: float) -> float:
        for bound, cumulative in buckets:
            if count and cumulative >= q * count:
                return bound
        return float("nan")

    return {"requests": requests, "docs_per_request": docs / requests if requests else float("nan"),
            "latency_mean_ms": 1000 * total / count if count else float("nan"),
            "latency_p50_le_ms": 1000 * quantile(0.5), "latency_p99_le_ms": 1000 * quantile(0.99),
            "bytes_per_request": metric_sum(metrics, "panopticon_engine_bulk_bytes_total") / requests
            if requests else float("nan")}


def start_server(command: str, env: dict[str, str], log_dir: Path) -> tuple[Group, int]:
    """``panopticon <command>`` (api, ingest) on a free port, its metrics in ``log_dir``; (group, port) once /health
    answers 200."""
    import http.client

    port = free_port()
    server = Group([sys.executable, "-m", "panopticon", command, "--bind", f"127.0.0.1:{port}"],
                   {**env, "PROMETHEUS_MULTIPROC_DIR": str(log_dir / "prom")}, log_dir / f"{command}.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.alive():
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"panopticon {command} did not come up; see {log_dir / f'{command}.log'}")
