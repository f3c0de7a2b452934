"""What a newcomer sees: a Kafka backlog through the engine into the local stack's real OpenSearch.

The local stack (Apache Kafka and OpenSearch, one JVM each, on the same cores as the engine) is preloaded
with loadgen records (100,000; ``--quick`` 30,000); the engine runs with its default worker count (the input
partitions capped at the CPU count). The rate is from the first event read to the last stored, by the engine's
counters; the CPU of the engine's process group, of the Kafka JVM's and of the OpenSearch JVM's is
read in the same window; OpenSearch's own count (after a refresh) is checked at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.report import Report, Target
from benchmarks.rig import Engine, Sampler, bulk_figures, local_stack, preload, roles, stack_cpu, topics_env, window
from panopticon.common.clients import opensearch_client
from panopticon.common.settings import load_settings

RSS_TARGET = 200.0


def searchable(env: dict[str, str]) -> int:
    client = opensearch_client(load_settings(env), timeout_s=60)
    client.indices.refresh(index="logs-apm-*,traces-apm-*")
    return int(client.count(index="logs-apm-*,traces-apm-*")["count"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_local", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="30,000 records")
    parser.add_argument("--records", type=int, default=0)
    args = parser.parse_args(argv)
    count = args.records or (30_000 if args.quick else 100_000)
    logs = Path(tempfile.mkdtemp(prefix="panopticon-bench-logs-"))
    with local_stack() as stack:
        env = topics_env(stack, "local")
        pre = preload(env, count, seed=5)
        print(f"local: preloaded {pre.events:,} events in {pre.seconds:.0f}s", flush=True)
        engine = Engine(env, 0, f"bench-local-{time.time_ns()}", logs / "engine-local.log")
        try:
            sampler = Sampler(engine, engine.stored, interval_s=0.25, others=stack_cpu(stack), begun=engine.received)
            sampler.run_until(lambda s: s.progress >= pre.events, max(300.0, pre.events / 300))
            metrics = engine.metrics()
        finally:
            engine.stop()
        found = searchable(env)
    w = window(sampler.samples, pre.events)
    rss = roles(engine, sampler)
    workers = len([r for r in rss if r.startswith("child")])
    report = Report("local", {"records": pre.records, "events": pre.events, "workers": workers,
                              "search": "OpenSearch 2.19.1 (local stack, 1 node)",
                              "kafka": "Apache Kafka 4.1 (local stack, KRaft, 1 node)", "complete": w.complete})
    report.add("events_per_s", w.rate, "events/s")
    report.add("cpu_s_per_100k", w.cpu_per_100k, "CPU-s")
    report.add("broker_cpu_s_per_100k", w.other_per_100k("broker"), "CPU-s")
    report.add("search_cpu_s_per_100k", w.other_per_100k("search"), "CPU-s")
    for role, mb in rss.items():
        name = {"root": "supervisor"}.get(role, role.replace("child", "worker"))
        report.add(f"peak_rss_{name}", mb, "MB", Target("<=", RSS_TARGET) if name.startswith("worker") else None)
    report.add("searchable_docs", found, "docs", expected=pre.events)
    for key, value in bulk_figures(metrics).items():
        report.add(f"bulk_{key}", value, {"requests": "requests", "docs_per_request": "docs"}.get(
            key, "bytes" if key.startswith("bytes") else "ms"))
    report.note("CPU figures cover the same window (first event read -> all stored): the engine's process group, "
                "the Kafka JVM's (broker) and the OpenSearch JVM's (search)")
    report.publish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
