"""End to end: Kafka backlog -> engine -> a fast fake ``_bulk`` sink and the real OpenSearch, against the naive
consumer.

The local stack's Kafka (real Apache Kafka, KRaft, one node) is preloaded with loadgen records (1,000,000;
``--quick`` 50,000), 4 partitions per topic; both JVMs are then read idle for 5 s. Then, each with a fresh
consumer group on the same backlog:

- ``w1``, ``w2``: the engine with ENGINE_WORKERS=1 and 2 into the sink (``benchmarks.sink``), which stores
  nothing, so the figures are the engine's (and the broker's) cost; the installed build (the hot modules compiled
  by mypyc: ``setup.py``);
- ``w1_pure``, ``w2_pure``: the same with PANOPTICON_PURE_PYTHON=1 (those modules run from their sources);
- ``naive``: the naive one-process consumer (``benchmarks.naive``) into the sink;
- ``os_w1``, ``os_w2``: the engine with 1 and 2 workers into the stack's real OpenSearch (one node, on the same
  two cores), each run under its own index prefix (the ids are deterministic: a second run into the same
  indices would only get 409s), its indices counted after a refresh and then deleted;
- ``outage``: the engine with 2 workers into the sink while the sink answers 503 for a while.

Rate and CPU are measured from the first sample where the engine has read events
(``panopticon_engine_events_total{outcome="received"}``; the naive consumer: the first with a stored
document) to the first sample with all of them stored, or to the end of the run's time cap (120 s; quick
30 s) if the backlog is not drained by then (0.2 s sampling; progress from the engine's
``panopticon_engine_events_total{outcome="stored"}``, the naive consumer's from the sink's document
counter). Engine CPU is user+sys of every process of its group (supervisor + workers, librdkafka threads
included); broker and search CPU are user+sys of the Kafka JVM's and the OpenSearch JVM's process groups, in
the same window; all read with psutil.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import Report, Target
from benchmarks.rig import (
    Engine,
    Group,
    Preloaded,
    Sampler,
    Sink,
    Window,
    bulk_figures,
    cpu_of,
    helper_pids,
    local_stack,
    preload,
    roles,
    stack_cpu,
    topics_env,
    window,
)
from panopticon import _compiled
from panopticon.common.clients import opensearch_client
from panopticon.common.settings import load_settings
from panopticon.devtools.stack import LocalStack

RATE_TARGET, RATIO_TARGET, CPU_TARGET, RSS_TARGET = 100_000, 12.0, 1.5, 200.0
IDLE_S = 5.0


def measure_idle(stack: LocalStack) -> dict[str, float]:
    """Cores each JVM uses with nothing connected (after the preload), over ``IDLE_S``."""
    readers = stack_cpu(stack)
    before = {name: read() for name, read in readers.items()}
    time.sleep(IDLE_S)
    return {name: (read() - before[name]) / IDLE_S for name, read in readers.items()}


def run_engine(env: dict[str, str], pre: Preloaded, stack: LocalStack, workers: int, tag: str, logs: Path,
               timeout_s: float, sink: Sink | None) -> dict[str, Any]:
    """One engine run into the sink, or (``sink`` None) into the stack's OpenSearch under its own prefix."""
    others = stack_cpu(stack)
    if sink is not None:
        sink.reset()
        env = {**env, "OPENSEARCH_URL": sink.url}
        others["sink"] = lambda: cpu_of(sink.process.pid)
    else:
        env = {**env, "OPENSEARCH_INDEX_PREFIX": f"e2e-{tag}-"}
    engine = Engine(env, workers, f"bench-{tag}-{time.time_ns()}", logs / f"engine-{tag}.log")
    try:
        sampler = Sampler(engine, engine.stored, others=others, begun=engine.received)
        sampler.run_until(lambda s: s.progress >= pre.events, timeout_s)
        metrics = engine.metrics()
    finally:
        stop_s, code = engine.stop()
    out = {"window": window(sampler.samples, pre.events), "rss": roles(engine, sampler),
           "bulk": bulk_figures(metrics), "stop": (stop_s, code)}
    if sink is None:
        out["searchable"] = searchable_then_delete(env)
    return out


def searchable_then_delete(env: dict[str, str]) -> int:
    """Documents the run left searchable (logs + traces, after a refresh); then its indices are deleted."""
    client = opensearch_client(load_settings(env), timeout_s=120)
    prefix = env["OPENSEARCH_INDEX_PREFIX"]
    raw = f"{prefix}logs-apm-*,{prefix}traces-apm-*"
    try:
        client.indices.refresh(index=raw)
        return int(client.count(index=raw)["count"])
    finally:
        client.indices.delete(index=f"{prefix}*")


def run_naive(env: dict[str, str], pre: Preloaded, sink: Sink, stack: LocalStack, timeout_s: float
              ) -> dict[str, Any]:
    sink.reset()
    naive = Group([sys.executable, "-m", "benchmarks.naive", "--brokers", env["KAFKA_BROKERS"], "--url", sink.url,
                   "--group", f"bench-naive-{time.time_ns()}", "--log-topic", env["KAFKA_APM_LOG_TOPIC"],
                   "--span-topic", env["KAFKA_APM_SPAN_TOPIC"], "--events", str(pre.events)], {})
    try:
        sampler = Sampler(naive, lambda: float(sink.stats()["docs"]),
                          others={**stack_cpu(stack), "sink": lambda: cpu_of(sink.process.pid)})
        sampler.run_until(lambda s: s.progress >= pre.events, timeout_s)
    finally:
        naive.stop(timeout_s=5)
    return {"window": window(sampler.samples, pre.events), "rss": roles(naive, sampler)}


def run_outage(env: dict[str, str], pre: Preloaded, sink: Sink, logs: Path, pause_s: float,
               lead_s: float) -> dict[str, Any]:
    """Engine with 2 workers; ``lead_s`` after the first stored event (or once a quarter of the backlog is stored,
    if that comes first: a quick backlog drains within seconds) the sink answers 503 for ``pause_s``.

    The run ends ``lead_s`` after the sink is back (or when the backlog is stored).
    """
    sink.reset()
    engine = Engine({**env, "OPENSEARCH_URL": sink.url}, 2, f"bench-outage-{time.time_ns()}",
                    logs / "engine-outage.log")
    marks: dict[str, Any] = {}

    def tick(s: Any) -> None:
        if s.progress > 0 and "first_at" not in marks:
            marks["first_at"] = s.t
        if "first_at" in marks and "paused_at" not in marks and (s.t >= marks["first_at"] + lead_s
                                                                  or s.progress >= pre.events / 4):
            sink.pause(pause_s)
            marks.update(paused_at=s.t, stored_at_pause=s.progress, rss_at_pause=dict(s.rss))
        elif "paused_at" in marks and "resumed_at" not in marks and s.t >= marks["paused_at"] + pause_s:
            marks.update(resumed_at=s.t, stored_at_resume=s.progress)

    def done(s: Any) -> bool:
        return s.progress >= pre.events or ("resumed_at" in marks and s.t >= marks["resumed_at"] + lead_s)

    try:
        sampler = Sampler(engine, engine.stored, interval_s=0.25)
        sampler.run_until(done, 120 + lead_s * 2 + pause_s, tick)
    finally:
        engine.stop()
    if "resumed_at" not in marks:
        return {"complete": False, "marks": sorted(marks)}
    root = engine.process.pid
    during = [s for s in sampler.samples if marks["paused_at"] <= s.t <= marks["resumed_at"]]
    workers = sorted({pid for s in during for pid in s.rss if pid != root} - helper_pids(sampler))
    after = [s for s in sampler.samples if s.t > marks["resumed_at"]]
    # in-flight batches finish within the first second of the outage: count what is stored after that
    settled = next((s for s in during if s.t >= marks["paused_at"] + 1.0), during[-1])
    return {
        "complete": True,
        "stored_during_pause": marks["stored_at_resume"] - settled.progress,
        "rss_at_pause_mb": max((marks["rss_at_pause"].get(p, 0) for p in workers), default=0) / 2**20,
        "rss_max_during_mb": max((s.rss.get(p, 0) for s in during for p in workers), default=0) / 2**20,
        "rss_max_after_mb": max((s.rss.get(p, 0) for s in after for p in workers), default=0) / 2**20,
        "recovery_s": next((s.t for s in after if s.progress > marks["stored_at_resume"]), float("nan"))
        - marks["resumed_at"],
        "rate_after": (after[-1].progress - marks["stored_at_resume"]) / (after[-1].t - marks["resumed_at"])
        if after else float("nan"),
        "refused": sink.stats()["refused"],
    }


WORKERS = {"w1": 1, "w2": 2, "w1_pure": 1, "w2_pure": 2, "os_w1": 1, "os_w2": 2}
SINKS = {"w1": "sink", "w2": "sink", "w1_pure": "sink", "w2_pure": "sink", "naive": "sink", "os_w1": "opensearch",
         "os_w2": "opensearch"}


def publish(pre: Preloaded, idle: dict[str, float], runs: dict[str, dict[str, Any]], outage: dict[str, Any],
            pause_s: float) -> None:
    report = Report("e2e", {"records": pre.records, "events": pre.events, "logs": pre.logs, "spans": pre.spans,
                            "avg_record_bytes": round(pre.bytes / pre.records), "partitions": 4,
                            "kafka": "Apache Kafka 4.1 (KRaft, 1 node)", "search": "OpenSearch 2.19.1 (1 node)",
                            "sink": "benchmarks.sink (fake _bulk)", "bulk_batch_size": 5000,
                            "bulk_max_parallel_flushes": 2, "engine_shm_blocks": 4, "build": _compiled.build()})
    report.add("preload_records_per_s", pre.records / pre.seconds if pre.seconds else float("nan"), "records/s",
               seconds=round(pre.seconds, 1), mb=round(pre.bytes / 1e6))
    for name, cores in idle.items():
        report.add(f"idle.{name}_cores", cores, "cores", seconds=IDLE_S)
    naive: Window | None = runs["naive"]["window"] if "naive" in runs else None
    for tag, run in runs.items():
        w: Window = run["window"]
        engine = tag != "naive"
        extra = {"workers": WORKERS.get(tag), "into": SINKS[tag], "complete": w.complete,
                 "seconds": round(w.seconds, 2), "pure_python": tag.endswith("_pure")}
        report.add(f"{tag}.events_per_s", w.rate, "events/s",
                   Target(">=", RATE_TARGET) if tag == "w2" else None, **extra)
        report.add(f"{tag}.cpu_s_per_100k", w.cpu_per_100k, "CPU-s",
                   Target("<=", CPU_TARGET) if engine else None, **extra)
        for role, mb in run["rss"].items():
            name = {"root": "supervisor"}.get(role, role.replace("child", "worker")) if engine else role
            is_worker = engine and name.startswith("worker")
            report.add(f"{tag}.peak_rss_{name}", mb, "MB", Target("<=", RSS_TARGET) if is_worker else None, **extra)
        report.add(f"{tag}.broker_cpu_s_per_100k", w.other_per_100k("broker"), "CPU-s", **extra)
        if SINKS[tag] == "opensearch":
            report.add(f"{tag}.search_cpu_s_per_100k", w.other_per_100k("search"), "CPU-s", **extra)
            report.add(f"{tag}.searchable_docs", run["searchable"], "docs", expected=pre.events, **extra)
        else:
            report.add(f"{tag}.sink_cpu_pct", 100 * w.other_cores("sink"), "% of a core", **extra)
        if engine:
            if naive is not None and SINKS[tag] == "sink":
                report.add(f"{tag}.vs_naive", w.rate / naive.rate, "x", Target(">=", RATIO_TARGET) if tag == "w2"
                           else None, **extra)
            stop_s, code = run["stop"]
            if code != 0:
                report.note(f"{tag}: the engine did not exit on SIGTERM within 15 s (drain); it was killed")
            else:
                report.add(f"{tag}.sigterm_exit_s", stop_s, "s", **extra)
            for key, value in run["bulk"].items():
                report.add(f"{tag}.bulk_{key}", value, {"requests": "requests", "docs_per_request": "docs"}.get(
                    key, "bytes" if key.startswith("bytes") else "ms"), **extra)
    if outage.get("rss_at_pause_mb"):
        growth = outage["rss_max_during_mb"] - outage["rss_at_pause_mb"]
        cond = {"workers": 2, "pause_s": pause_s}
        report.add("outage.rss_worker_at_pause", outage["rss_at_pause_mb"], "MB", **cond)
        report.add("outage.rss_worker_max_during", outage["rss_max_during_mb"], "MB",
                   Target("<=", RSS_TARGET), **cond)
        report.add("outage.rss_growth_during", growth, "MB", Target("<=", 10), **cond)
        report.add("outage.rss_worker_max_after", outage["rss_max_after_mb"], "MB", **cond)
        report.add("outage.stored_during_pause", outage["stored_during_pause"], "events", **cond)
        report.add("outage.recovery_s", outage["recovery_s"], "s", **cond)
        report.add("outage.events_per_s_after", outage["rate_after"], "events/s", **cond)
        report.add("outage.bulk_503_answers", outage["refused"], "requests", **cond)
    else:
        report.note(f"outage variant incomplete: {outage}")
    report.note("rates: first read (naive: first stored) -> all stored; CPU = user+sys of the engine's process "
                "group in that window; "
                "broker / search = the Kafka / OpenSearch JVM's process group in the same window")
    report.note("bulk_latency_p50/p99_le_ms are histogram bucket upper bounds; mean is exact")
    report.publish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_e2e", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50,000 records, 30 s caps, 8 s outage")
    parser.add_argument("--records", type=int, default=0)
    parser.add_argument("--cap", type=float, default=0.0,
                        help="stop a run after this many seconds (default 120, quick 30): the rate is then over "
                             "the part stored, with complete=false in its conditions")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-opensearch", action="store_true", help="no runs into the real OpenSearch")
    args = parser.parse_args(argv)
    count = args.records or (50_000 if args.quick else 1_000_000)
    pause_s = 8.0 if args.quick else 20.0
    lead_s = 5.0 if args.quick else 10.0
    cap = args.cap or (30.0 if args.quick else 120.0)
    logs = Path(tempfile.mkdtemp(prefix="panopticon-bench-logs-"))
    with local_stack() as stack:
        env = topics_env(stack, "bench")
        print(f"e2e: preloading {count:,} records ...", flush=True)
        pre = preload(env, count, seed=42)
        print(f"e2e: preloaded {pre.events:,} events ({pre.bytes / 1e6:.0f} MB) in {pre.seconds:.0f}s", flush=True)
        idle = measure_idle(stack)
        sink = Sink()
        try:
            runs: dict[str, dict[str, Any]] = {}
            for build, build_env in (("", {}), ("_pure", {_compiled.PURE_ENV: "1"})):
                for workers in (1, 2):
                    tag = f"w{workers}{build}"
                    runs[tag] = run_engine({**env, **build_env}, pre, stack, workers, tag, logs, cap, sink)
                    print(f"e2e: engine ({'pure Python' if build else _compiled.build()}) with {workers} worker(s) "
                          f"into the sink: {runs[tag]['window'].rate:,.0f} events/s", flush=True)
            if not args.skip_naive:
                runs["naive"] = run_naive(env, pre, sink, stack, cap)
                print(f"e2e: naive into the sink: {runs['naive']['window'].rate:,.0f} events/s", flush=True)
            if not args.skip_opensearch:
                for workers in (1, 2):
                    tag = f"os_w{workers}"
                    runs[tag] = run_engine(env, pre, stack, workers, tag, logs, cap, None)
                    print(f"e2e: engine with {workers} worker(s) into OpenSearch: "
                          f"{runs[tag]['window'].rate:,.0f} events/s, {runs[tag]['searchable']:,} searchable",
                          flush=True)
            outage = run_outage(env, pre, sink, logs, pause_s, lead_s)
        finally:
            sink.stop()
    publish(pre, idle, runs, outage, pause_s)
    print(f"engine logs: {logs}  (load average now {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
