"""What the embedded broker itself costs, so the end-to-end figures can be read: its CPU while idle, while a
bare consumer drains the backlog, and while anything at all is produced.

The local broker is preloaded with loadgen records (300,000; ``--quick`` 100,000), then, one phase after the
other, its CPU (user+sys of its process tree, psutil) is read:

- idle: nothing connected, 5 s;
- drain: a bare confluent-kafka consumer (the engine's fetch settings, no commits, no work) reads the backlog
  as fast as it can, then again throttled to 25,000 records/s (about the engine's rate here);
- trickle: one 10-byte record per second produced to another topic for 10 s, nothing consumed.

The engine republishes every ERROR log and dead-letters every reject, so during an end-to-end run the broker is
producing all the time; the trickle phase shows what that costs it regardless of how much is produced.
"""

from __future__ import annotations

import argparse
import time

from confluent_kafka import Consumer, Producer

from benchmarks.bench_e2e import cpu_of
from benchmarks.report import Report
from benchmarks.rig import local_stack, preload, topics_env
from common.clients import RECEIVE_MESSAGE_MAX_BYTES


def drain(env: dict[str, str], records: int, rate: float) -> float:
    """Read ``records`` records (at most ``rate`` per second when rate > 0); returns the seconds taken."""
    consumer = Consumer({"bootstrap.servers": env["KAFKA_BROKERS"], "group.id": f"broker-bench-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "receive.message.max.bytes": RECEIVE_MESSAGE_MAX_BYTES,
                         "queued.max.messages.kbytes": 16 * 1024})
    consumer.subscribe([env["KAFKA_APM_LOG_TOPIC"], env["KAFKA_APM_SPAN_TOPIC"]])
    try:
        while not consumer.assignment():
            consumer.consume(1, 0.1)
        started = time.monotonic()
        read = 0
        while read < records:
            read += len(consumer.consume(1000, 0.5))
            if rate and (ahead := started + read / rate - time.monotonic()) > 0:
                time.sleep(ahead)
        return time.monotonic() - started
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_broker", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 records")
    args = parser.parse_args(argv)
    count = 100_000 if args.quick else 300_000
    with local_stack() as stack:
        env = topics_env(stack, "broker")
        pre = preload(env, count, seed=42)
        report = Report("broker", {"records": pre.records, "backlog_mb": round(pre.bytes / 1e6)})
        time.sleep(2)

        def cpu() -> float:
            return cpu_of(stack.pid)

        before = cpu()
        time.sleep(5)
        report.add("idle_cores", (cpu() - before) / 5, "cores")
        for name, rate in (("drain_fast", 0.0), ("drain_25k", 25_000.0)):
            before = cpu()
            seconds = drain(env, pre.records, rate)
            spent = cpu() - before
            report.add(f"{name}_cpu_s_per_100k", spent / pre.records * 100_000, "CPU-s", seconds=round(seconds, 1))
        producer = Producer({"bootstrap.servers": env["KAFKA_BROKERS"], "linger.ms": 5})
        producer.produce(env["KAFKA_APM_LOG_ERROR_TOPIC"], b"warm-up")
        producer.flush(10)
        time.sleep(3)
        before = cpu()
        for _ in range(10):
            producer.produce(env["KAFKA_APM_LOG_ERROR_TOPIC"], b'{"n":1}')
            producer.poll(0)
            time.sleep(1)
        producer.flush(10)
        report.add("trickle_1_per_s_cores", (cpu() - before) / 10, "cores")
        report.note("trickle: one record per second to another topic makes the broker save its whole state "
                    "again and again; the engine produces (error topic, DLQ) all through an end-to-end run")
        report.publish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
