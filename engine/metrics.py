"""Prometheus exposition of the engine, read from the workers' shared-memory counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from panopticon.engine.counters import LATENCY_BOUNDS, Counter

if TYPE_CHECKING:
    from panopticon.engine.supervisor import Supervisor

P = "panopticon_engine_"


class EngineCollector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        sup = self.supervisor
        if sup.counters is None:
            return
        totals = sup.counters.totals()
        logs, spans = sup.settings.kafka_apm_log_topic, sup.settings.kafka_apm_span_topic

        records = CounterMetricFamily(P + "records", "Kafka records by topic and outcome",
                                      labels=["topic", "outcome"])
        records.add_metric([logs, "consumed"], totals[Counter.consumed_logs])
        records.add_metric([spans, "consumed"], totals[Counter.consumed_spans])
        yield records

        events = CounterMetricFamily(P + "events", "Events (array elements count one each) by topic and outcome",
                                     labels=["topic", "outcome"])
        events.add_metric([logs, "received"], totals[Counter.events_logs])
        events.add_metric([spans, "received"], totals[Counter.events_spans])
        events.add_metric([logs, "stored"], totals[Counter.stored_logs])
        events.add_metric([spans, "stored"], totals[Counter.stored_spans])
        events.add_metric([logs, "dlq"], totals[Counter.dlq_logs])
        events.add_metric([spans, "dlq"], totals[Counter.dlq_spans])
        yield events

        for name, counter, text in (
            ("duplicates", Counter.duplicates, "Bulk items answered 409: already stored"),
            ("errors_republished", Counter.errors_published, "ERROR/FATAL logs republished to the error topic"),
            ("bulk_retries", Counter.retries, "Bulk attempts retried after a transient failure"),
            ("bulk_retry_streaks", Counter.retry_streaks,
             "Requests to the search cluster still failing after BULK_RETRY_STREAK_S (each logged at WARNING)"),
            ("bulk_bytes", Counter.bytes_sent, "Bytes sent to _bulk"),
            ("bulk_requests", Counter.bulk_requests, "Bulk batches flushed"),
            ("batch_docs", Counter.batch_docs, "Documents in flushed batches (divide by bulk_requests for the fill)"),
            ("dropped_keys", Counter.dropped_keys, "Unknown non-scalar top-level keys dropped by normalization"),
            ("rollup_docs", Counter.rollup_docs, "Rollup documents written"),
            ("calls_unpaired", Counter.calls_unpaired,
             "Client spans whose server never came and whose labels name no callee (service map)"),
            ("calls_evicted", Counter.calls_evicted,
             "Halves of calls let go before SERVICE_MAP_WAIT_MS because SERVICE_MAP_WAITING_MAX were waiting"),
        ):
            yield CounterMetricFamily(P + name, text, value=totals[counter])

        latency = HistogramMetricFamily(P + "bulk_latency_seconds", "Time to store one batch, retries included")
        buckets, running = [], 0
        for i, bound in enumerate(LATENCY_BOUNDS):
            running += totals[Counter.latency_bucket_0 + i]
            buckets.append((str(bound), running))
        running += totals[Counter.latency_bucket_0 + len(LATENCY_BOUNDS)]
        buckets.append(("+Inf", running))
        latency.add_metric([], buckets, sum_value=totals[Counter.bulk_latency_us] / 1e6)
        yield latency

        yield GaugeMetricFamily(P + "calls_waiting", "Halves of calls waiting for their other half (service map)",
                                value=totals[Counter.calls_waiting])
        yield GaugeMetricFamily(P + "inflight_bytes", "Bytes sealed and not yet stored",
                                value=totals[Counter.inflight_bytes])
        blocks = GaugeMetricFamily(P + "shm_blocks", "Shared-memory bulk blocks", labels=["state"])
        total_blocks = len(sup.slots) * sup.settings.engine_shm_blocks
        blocks.add_metric(["used"], totals[Counter.blocks_in_use])
        blocks.add_metric(["free"], total_blocks - totals[Counter.blocks_in_use])
        yield blocks
        yield CounterMetricFamily(P + "worker_restarts", "Workers replaced after exiting or hanging",
                                  value=sum(s.restarts for s in sup.slots))
        workers = GaugeMetricFamily(P + "workers", "Live worker processes", value=len(sup.live()))
        yield workers
        if sup.lag is not None:
            lag = GaugeMetricFamily(P + "consumer_lag", "High watermark minus committed offset, per partition",
                                    labels=["topic", "partition"])
            for topic, partition, value in sup.lag.items():
                lag.add_metric([topic, str(partition)], value)
            yield lag
        paused = GaugeMetricFamily(P + "paused", "1 while a worker has paused fetching", labels=["worker"])
        for slot in sup.slots:
            paused.add_metric([str(slot.index)], sup.counters.slots[slot.index].get(Counter.paused))
        yield paused
