"""The soak: ``make run`` left on, with the routes the original frontend polls asked all along.

``python -m benchmarks.soak [--minutes 60] [--rate 200]`` starts ``make run``'s program (the local stack, the
engine, the API, the bridge and loadgen at ``--rate`` records/s) on free ports with its data in a temporary
directory, waits for the first services, then every ``--every`` seconds asks each route once, one after the
other, as one dashboard would: services over 14 days, a service's metrics at ``interval=45s``, its endpoints,
its root traces (``size=200``), logs (``size=10000``), a trace's detail and spans. It samples the RSS of every
process of the run (the two JVMs included). Every ``--window`` minutes it prints each route's answers, non-200
count and p50/p95/max, and the total RSS; at the end one table for the whole run after the warm-up, and JSON
lines in benchmarks/results/latest.jsonl. It stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import msgspec
import psutil

from benchmarks.report import Report, Target
from panopticon.common.histogram import exact_percentile
from panopticon.devtools.stack import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Route:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0

    def add(self, status: int, ms: float) -> None:
        self.latencies_ms.append(ms)
        self.failures += status != 200


Answer = tuple[str, int, float]  # route, status, milliseconds


def tally(routes: dict[str, Route], answers: list[Answer]) -> None:
    for name, status, ms in answers:
        routes.setdefault(name, Route(name)).add(status, ms)


def get(url: str, timeout: float = 30.0) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            body, status = answer.read(), answer.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    except OSError:
        body, status = b"", 0
    return status, body, (time.perf_counter() - started) * 1000


def rss_mb(root: psutil.Process) -> float:
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


class Dashboard:
    """What one open frontend asks in a round; the ids it follows come from the answers before."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.answers: list[Answer] = []

    def ask(self, name: str, path: str, **params: str) -> object:
        url = f"{self.base}{path}" + (f"?{urlencode(params)}" if params else "")
        status, body, ms = get(url)
        self.answers.append((name, status, ms))
        return msgspec.json.decode(body) if status == 200 else None

    def round(self) -> list[Answer]:
        self.answers = []
        fourteen_days = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 14 * 86_400))
        services = self.ask("services 14d", "/query/services", **{"from": fourteen_days})
        names = [s["service_name"] for s in services["services"]] if isinstance(services, dict) else []
        service = quote(names[0], safe="") if names else "checkout"
        self.ask("metrics interval=45s", f"/query/services/{service}/metrics", interval="45s")
        self.ask("endpoints", f"/query/services/{service}/endpoints")
        traces = self.ask("service traces size=200", f"/query/services/{service}/traces", size="200")
        self.ask("logs size=10000", "/query/logs", size="10000")
        roots = traces.get("traces", []) if isinstance(traces, dict) else []
        if roots:
            self.ask("trace detail", f"/query/traces/{roots[len(roots) // 2]['trace_id']}")
        self.ask("spans", "/query/spans", size="50")
        return self.answers


def p(values: list[float], q: float) -> float:
    return exact_percentile(values, q) if values else float("nan")


def table(title: str, routes: dict[str, Route], rss: list[float]) -> None:
    print(f"\n{title}")
    print(f"{'route':<26}{'answers':>8}{'non-200':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for route in routes.values():
        lat = route.latencies_ms
        print(f"{route.name:<26}{len(lat):>8}{route.failures:>9}{p(lat, 50):>9.1f}{p(lat, 95):>9.1f}"
              f"{max(lat):>9.1f}")
    if rss:
        print(f"RSS of every process of the run: now {rss[-1]:,.0f} MB, max {max(rss):,.0f} MB", flush=True)


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="3 minutes")
    parser.add_argument("--rate", type=int, default=200, help="loadgen records/s (default %(default)s)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between rounds (default %(default)s)")
    parser.add_argument("--window", type=float, default=10.0, help="minutes per printed window")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes left out of the final table")
    args = parser.parse_args(argv)
    minutes = 3.0 if args.quick else args.minutes
    for stop in (signal.SIGINT, signal.SIGTERM):  # also when started in the background, where SIGINT is ignored
        signal.signal(stop, interrupt)
    report = Report("soak")
    with tempfile.TemporaryDirectory(prefix="panopticon-soak-", ignore_cleanup_errors=True) as data_dir:
        ports = {name: str(free_port()) for name in ("PANOPTICON_KAFKA_PORT", "PANOPTICON_SEARCH_PORT", "PORT",
                                                      "ERROR_STREAM_PORT", "ENGINE_METRICS_PORT", "INGEST_PORT")}
        env = {**os.environ, **ports, "PANOPTICON_STACK_DIR": data_dir, "LOADGEN_RATE": str(args.rate)}
        run = subprocess.Popen([sys.executable, "-m", "panopticon.devtools.run"], cwd=ROOT, env=env,
                               stdout=open(Path(data_dir) / "run.out", "wb"),  # noqa: SIM115 - owned by the child
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return soak(args, minutes, run, f"http://127.0.0.1:{ports['PORT']}", report)
        finally:
            run.send_signal(signal.SIGINT)  # devtools.run stops its components, then the stack
            try:
                run.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)


def soak(args: argparse.Namespace, minutes: float, run: subprocess.Popen[bytes], base: str, report: Report) -> int:
    started = time.monotonic()
    while True:  # the stack, the components and the first rollups
        status, body, _ = get(f"{base}/query/services", timeout=5)
        if status == 200 and msgspec.json.decode(body)["services"]:
            break
        if run.poll() is not None or time.monotonic() - started > 600:
            print("make run did not show any service", file=sys.stderr)
            return 1
        time.sleep(1)
    first_data_s = time.monotonic() - started
    print(f"first services {first_data_s:.0f} s after the start (a cold stack in a new directory)", flush=True)
    process, dashboard = psutil.Process(run.pid), Dashboard(base)
    whole: dict[str, Route] = {}
    window: dict[str, Route] = {}
    rss: list[float] = []
    began = time.monotonic()
    windows = 0
    while time.monotonic() - began < minutes * 60 and run.poll() is None:
        round_started = time.monotonic()
        answers = dashboard.round()
        tally(window, answers)
        if round_started - began >= args.warmup * 60:
            tally(whole, answers)
        rss.append(rss_mb(process))
        if time.monotonic() - began >= (windows + 1) * args.window * 60:
            table(f"minutes {windows * args.window:g}-{(windows + 1) * args.window:g}, load average "
                  f"{os.getloadavg()[0]:.1f}", window, rss)
            window, windows = {}, windows + 1
        time.sleep(max(0.0, args.every - (time.monotonic() - round_started)))
    if run.poll() is not None:
        print(f"make run exited early ({run.returncode})", file=sys.stderr)
        return 1
    table(f"the whole soak after {args.warmup:g} min of warm-up ({minutes:g} min at {args.rate} records/s)",
          whole, rss)
    report.add("first_services", first_data_s, "s")
    for route in whole.values():
        report.add(f"{route.name} p95", p(route.latencies_ms, 95), "ms", Target("<=", 300))
        report.add(f"{route.name} non-200", route.failures, "answers", Target("<=", 0))
    report.add("rss_max", max(rss), "MB", Target("<=", 4096))
    report.add("rss_after_warmup_min", min(rss[len(rss) // 10:]), "MB")
    report.add("rss_at_end", rss[-1], "MB")
    report.publish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
