"""What a newcomer sees: a Kafka backlog through the engine into the embedded search server.

The embedded stack (broker + Elasticsearch-compatible search, one noida-db process) is preloaded with
loadgen records (100,000; ``--quick`` 10,000); the engine runs with its default worker count (the input
partitions capped at the CPU count). The rate is from the first stored event to the last, by the engine's
stored counter; the search server's own count is checked at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.bench_e2e import cpu_of
from benchmarks.report import Report
from benchmarks.rig import Engine, Sampler, bulk_figures, local_stack, preload, roles, topics_env, window
from common.clients import opensearch_client
from common.settings import load_settings


def searchable(env: dict[str, str]) -> int:
    client = opensearch_client(load_settings(env), timeout_s=60)
    client.indices.refresh(index="logs-apm-*,traces-apm-*")
    return int(client.count(index="logs-apm-*,traces-apm-*")["count"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_local", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 records")
    parser.add_argument("--records", type=int, default=0)
    args = parser.parse_args(argv)
    count = args.records or (10_000 if args.quick else 100_000)
    logs = Path(tempfile.mkdtemp(prefix="panopticon-bench-logs-"))
    with local_stack() as stack:
        env = topics_env(stack, "local")
        pre = preload(env, count, seed=5)
        print(f"local: preloaded {pre.events:,} events in {pre.seconds:.0f}s", flush=True)
        stack_cpu = cpu_of(stack.pid)
        engine = Engine(env, 0, f"bench-local-{time.time_ns()}", logs / "engine-local.log")
        try:
            sampler = Sampler(engine, engine.stored, interval_s=0.25)
            sampler.run_until(lambda s: s.progress >= pre.events, max(300.0, pre.events / 300))
            metrics = engine.metrics()
        finally:
            engine.stop()
        stack_cpu = cpu_of(stack.pid) - stack_cpu
        found = searchable(env)
    w = window(sampler.samples, pre.events)
    rss = roles(engine, sampler)
    workers = len([r for r in rss if r.startswith("child")])
    report = Report("local", {"records": pre.records, "events": pre.events, "workers": workers,
                              "search": "embedded (noida-db)", "complete": w.complete})
    report.add("events_per_s", w.rate, "events/s")
    report.add("cpu_s_per_100k", w.cpu_per_100k, "CPU-s")
    report.add("stack_cpu_s_per_100k", stack_cpu / pre.events * 100_000, "CPU-s")
    report.add("searchable_docs", found, "docs", expected=pre.events)
    for key, value in bulk_figures(metrics).items():
        report.add(f"bulk_{key}", value, {"requests": "requests", "docs_per_request": "docs"}.get(
            key, "bytes" if key.startswith("bytes") else "ms"))
    report.note("stack CPU (broker + search in one noida-db process) covers the whole run, preload excluded")
    report.publish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
