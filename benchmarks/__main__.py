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
    Bench("core", "benchmarks.bench_core", limit_s=300),
    Bench("e2e", "benchmarks.bench_e2e", limit_s=900),
    # what the embedded broker costs by itself (idle, draining, while anything is produced): reads e2e's figures
    Bench("broker", "benchmarks.bench_broker", limit_s=240),
    Bench("local", "benchmarks.bench_local", limit_s=300),
    Bench("freshness", "benchmarks.bench_freshness", limit_s=240),
    Bench("bridge", "benchmarks.bench_bridge", limit_s=420),  # another engineer's module
    # another engineer's module: writes 24 h of rollups into the embedded server first (5+ min here), so it
    # runs only when asked for: --only rollup_reads
    Bench("rollup_reads", "benchmarks.rollup_reads", quick_flag=False, in_quick=False, in_full=False, limit_s=900),
    # the query API at 16 clients, every route for 30 s after loading 250k loadgen documents + 14 days of rollups;
    # on a slow VM (2026-12-02) each raw-document route took ~2 min (its requests time out at 30 s) and the whole
    # module needed more than 1500 s
    Bench("api", "benchmarks.bench_api", limit_s=2400),
]
NOT_BENCHMARKS = {"__init__", "__main__", "report", "rig", "sink", "naive"}


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
            code = child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        child.wait(60)
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
