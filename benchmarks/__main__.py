"""``make bench`` / ``python -m benchmarks [--quick] [--only NAME ...]``: every benchmark, one after the other.

Each benchmark runs as its own process (``python -m benchmarks.<module>``), so one that fails or is cut
by its time limit does not stop the others, and each cleans up its own stack and process groups. Each
prints its table and appends its figures to benchmarks/results/latest.jsonl; a run without ``--only``
starts that file afresh. At the end, every figure that has a target is listed with "met" / "NOT MET".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import RESULTS, ROOT, fmt


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    quick_flag: bool = True  # the module takes --quick
    in_quick: bool = True  # run it in a --quick run
    in_full: bool = True  # run it in a plain run (False: only with --only NAME)
    limit_s: float = 900.0  # cut (SIGINT, then SIGKILL) after this long


BENCHES = [
    # every benchmark but core starts its own local stack (Kafka + OpenSearch JVMs, 10-30 s here)
    Bench("core", "benchmarks.bench_core", limit_s=300),
    # OpenTelemetry input: the three input paths per CPU-second (no servers, ~15 s), then the OTLP/HTTP receiver
    # at 16 clients on its own Kafka (stack start 10-30 s + 23 s of load); 40-60 s here (quick: ~20 s)
    Bench("otlp", "benchmarks.bench_otlp", limit_s=300),
    # 1M-record backlog: preload, 5 runs capped at 120 s each (sink w1/w2, naive, OpenSearch w1/w2), the outage
    # run; ~12-15 min estimated on the 2-vCPU VM (quick: 100 s)
    Bench("e2e", "benchmarks.bench_e2e", limit_s=1500),
    Bench("local", "benchmarks.bench_local", limit_s=420),
    Bench("freshness", "benchmarks.bench_freshness", limit_s=300),
    Bench("bridge", "benchmarks.bench_bridge", limit_s=420),
    # the service map: engine events per CPU-second with and without edges (~1 min), then the 14-day map route
    Bench("service_map", "benchmarks.bench_service_map", limit_s=420),
    # another engineer's module: writes 24 h of rollups into OpenSearch first, so it runs only when asked
    # for: --only rollup_reads
    Bench("rollup_reads", "benchmarks.rollup_reads", quick_flag=False, in_quick=False, in_full=False, limit_s=900),
    # the query API at 16 clients, every route for 30 s after loading 1M spans + 1M logs + 14 days of rollups;
    # a quick run loaded ~3.8k docs/s on a loaded 2-vCPU VM (2026-12-07): ~9 min of load, ~1 min of rollups,
    # 16 routes x ~35 s: ~20 min estimated, 50 min allowed for a slower or busier machine
    Bench("api", "benchmarks.bench_api", limit_s=3000),
    # make run left on for an hour with the frontend's routes polled: only with --only soak (--quick: 3 minutes)
    Bench("soak", "benchmarks.soak", in_quick=False, in_full=False, limit_s=4500),
]
NOT_BENCHMARKS = {"__init__", "__main__", "report", "rig", "sink", "naive"}
# after its SIGINT a benchmark stops the engine (15 s), the sink, and each JVM of its stack (15 s + SIGKILL)
STOP_WAIT_S = 120


def discovered() -> list[Bench]:
    """Registered benchmarks whose module exists, then any other ``benchmarks/bench_*.py``."""
    here = Path(__file__).parent
    known = {b.module for b in BENCHES}
    out = [b for b in BENCHES if (here / f"{b.module.rsplit('.', 1)[1]}.py").exists()]
    for path in sorted(here.glob("bench_*.py")):
        module = f"benchmarks.{path.stem}"
        if module not in known and path.stem not in NOT_BENCHMARKS:
            out.append(Bench(path.stem.removeprefix("bench_"), module))
    return out


def run(bench: Bench, quick: bool) -> tuple[int, float]:
    argv = [sys.executable, "-m", bench.module] + (["--quick"] if quick and bench.quick_flag else [])
    print(f"\n######## {bench.name}: {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    child = subprocess.Popen(argv, cwd=ROOT)
    try:
        code = child.wait(bench.limit_s)
    except subprocess.TimeoutExpired:
        print(f"######## {bench.name}: over its {bench.limit_s:.0f}s limit: interrupting", flush=True)
        child.send_signal(signal.SIGINT)  # KeyboardInterrupt: its finally blocks stop what it started
        try:
            code = child.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    return code, time.monotonic() - started


def summary(since: int) -> None:
    """Every figure of this run that has a target."""
    if not RESULTS.exists():
        return
    with RESULTS.open() as results:
        results.seek(since)
        lines = [json.loads(line) for line in results if line.strip()]
    judged = [f for f in lines if "verdict" in f]
    if not judged:
        return
    width = max(len(f["name"]) for f in judged)
    print("\n======== targets")
    for f in judged:
        value = "n/a" if f["value"] is None else fmt(f["value"])
        print(f"{f['name']:<{width}} {value:>14} {f['unit']:<10} {f['target']:<24} {f['verdict']}")


def main(argv: list[str] | None = None) -> int:
    benches = discovered()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short smoke run (a few minutes)")
    parser.add_argument("--only", action="append", metavar="NAME", choices=[b.name for b in benches],
                        help=f"run only this benchmark (repeatable): {', '.join(b.name for b in benches)}")
    args = parser.parse_args(argv)
    chosen = [b for b in benches if b.name in args.only] if args.only else \
        [b for b in benches if (b.in_quick if args.quick else b.in_full)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not args.only:
        RESULTS.write_text("")
    since = RESULTS.stat().st_size if RESULTS.exists() else 0
    load = os.getloadavg()
    print(f"benchmarks: {', '.join(b.name for b in chosen)}{' (quick)' if args.quick else ''}; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    outcomes = []
    for bench in chosen:
        code, seconds = run(bench, args.quick)
        outcomes.append((bench.name, code, seconds))
    print("\n======== runs")
    for name, code, seconds in outcomes:
        print(f"{name:<14} {'ok' if code == 0 else f'exit {code}':<8} {seconds:6.0f}s")
    summary(since)
    print(f"\nfigures: {RESULTS.relative_to(ROOT)}")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
