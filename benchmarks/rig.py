"""What the end-to-end benchmarks share: the stack, the sink, the engine as a process group, sampling.

Every process started here is in its own process group and is stopped by that group in a ``finally``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from common.loadgen import produce
from common.settings import Settings, load_settings
from common.stack import LocalStack, free_port
from common.topics import create_topics
from common.traffic import generate

ROOT = Path(__file__).resolve().parents[1]
_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", re.M)


@contextmanager
def local_stack() -> Iterator[LocalStack]:
    """The embedded stack on free ports in a temporary directory; always stopped, by its process group if need be.

    With a large backlog the broker can take longer than ``noida-db down``'s 30 s to save its state.
    """
    with tempfile.TemporaryDirectory(prefix="panopticon-bench-", ignore_cleanup_errors=True) as data_dir:
        stack = LocalStack(data_dir, free_port(), free_port()).start()
        try:
            yield stack
        finally:
            try:
                stack.stop()
            except Exception as exc:  # noqa: BLE001 - whatever failed, the processes must go
                print(f"stopping the local stack: {exc!r}; stopping its process group", file=sys.stderr)
            kill_group(stack.pid, grace_s=20.0)


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


def topics_env(stack: LocalStack, name: str) -> dict[str, str]:
    return {**stack.env(), "KAFKA_APM_LOG_TOPIC": f"{name}.logs", "KAFKA_APM_SPAN_TOPIC": f"{name}.spans",
            "KAFKA_APM_LOG_ERROR_TOPIC": f"{name}.logs.error", "KAFKA_APM_DLQ_TOPIC": f"{name}.dlq"}


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
        super().__init__([sys.executable, "-m", "common.cli", "engine"],
                         {**env, "ENGINE_WORKERS": str(workers), "ENGINE_GROUP_ID": group,
                          "ENGINE_INSTANCE_ID": group, "ENGINE_METRICS_PORT": str(self.metrics_port)}, log_path)
        self.log_path = log_path

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> tuple[float, int | None]:
        """SIGTERM to the supervisor only (a drain, as an orchestrator does it; SIGTERM to the whole group
        would reach each worker twice, which is the fast stop), then SIGKILL to the group. A killed
        supervisor leaves its shared memory: remove it."""
        outcome = super().stop(sig, timeout_s, whole_group=False)
        for path in Path("/dev/shm").glob(f"panopticon-{self.process.pid}-*"):
            path.unlink(missing_ok=True)
        return outcome

    def stored(self) -> float:
        try:
            return metric_sum(self.metrics(), "panopticon_engine_events_total", outcome="stored")
        except OSError:
            return 0.0


@dataclass
class Sample:
    t: float
    progress: float
    cpu: float  # user+sys of every process of the group (exited ones at their last value)
    rss: dict[int, int]


@dataclass
class Sampler:
    """Samples a process group's CPU and RSS with a progress counter, every ``interval_s``."""

    group: Group
    progress: Callable[[], float]
    interval_s: float = 0.2
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
        s = Sample(time.monotonic(), self.progress(), sum(self._cpu.values()), rss)
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
    """From the first sample with progress to the first that reached the goal."""

    events: float
    seconds: float
    cpu_s: float
    complete: bool

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_s / self.events * 100_000 if self.events else float("nan")


def window(samples: list[Sample], goal: float) -> Window:
    started = next((s for s in samples if s.progress > 0), None)
    if started is None:
        return Window(0, 0, 0, False)
    last = next((s for s in samples if s.progress >= goal), samples[-1])
    return Window(last.progress - started.progress, last.t - started.t, last.cpu - started.cpu,
                  last.progress >= goal)


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
