"""A worker process: one consumer-group member, its partitions, and the three steps its records go through.

The cycle: heartbeat -> fetch (unless held back) -> building (``engine/building.py``: records into the open
bulk batch, rollups beside them, sealing) -> flushing (``engine/flushing.py``: answers read back, dead
letters, republished errors) -> committing (``engine/committing.py``: what is safe, on an interval). The
worker keeps the fetching, the backpressure and the rebalance callbacks. Kafka and search clients are created
here, after the fork, and handed to the steps.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from panopticon.common.clients import consumer_config, opensearch_client, producer_config
from panopticon.common.clock import now_ms
from panopticon.common.indices import IndexCreator, IndexNames
from panopticon.common.settings import Settings, SettingsError
from panopticon.engine.batch import SPAN
from panopticon.engine.batch import TopicPartition as TP
from panopticon.engine.building import Builder
from panopticon.engine.bulk import Flusher
from panopticon.engine.committing import Committing
from panopticon.engine.counters import Counter, CounterSlot, LagTable
from panopticon.engine.decode import EventDecoder
from panopticon.engine.flushing import Flushing
from panopticon.engine.lag import LagReport
from panopticon.engine.publish import Publisher
from panopticon.engine.rollups import RollupStage
from panopticon.engine.shm import BlockPool

log = logging.getLogger(__name__)

FETCH_MAX = 1000
EXIT_REFUSED = 2  # the search cluster refused the credentials: the supervisor halts, the engine exits with it
EXIT_BOOT_FAILURE = 3  # init_process failed: the supervisor halts instead of restarting
HALTS = {EXIT_REFUSED: "was refused by the search cluster", EXIT_BOOT_FAILURE: "failed to boot"}


class Worker:
    def __init__(self, settings: Settings, slot: int, pool: BlockPool, counters: CounterSlot,
                 lag: LagTable | None = None, instance_id: str | None = None) -> None:
        self.settings = settings
        self.slot = slot
        self.pool = pool
        self.counters = counters
        self.lag_table = lag
        self.instance_id = instance_id
        self.stopping = False
        self.fast_stop = False
        self.exit_code = 0
        self.held: deque[Message] = deque()
        self.paused = False
        self.assigned: set[TP] = set()  # shared with the steps; changed in place only

    # ------------------------------------------------------------------ lifecycle

    def init_process(self) -> None:
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_int)
        signal.signal(signal.SIGQUIT, self.handle_int)
        s = self.settings
        names = IndexNames(s.opensearch_index_prefix)
        self.rollups = RollupStage(names, s.rollup_grace_ms, msgspec.json.Encoder().encode, s.service_map_wait_ms,
                                   s.service_map_waiting_max, s.service_map)
        extra: dict[str, Any] = {"session.timeout.ms": s.engine_session_timeout_ms, "max.poll.interval.ms": 300_000}
        if self.instance_id:
            extra["group.instance.id"] = self.instance_id
        self.consumer = Consumer(consumer_config(s, s.engine_group_id, "panopticon-engine", **extra))
        publisher = Publisher(Producer(producer_config(s, "panopticon-engine")), s.kafka_apm_dlq_topic,
                              s.kafka_apm_log_error_topic, self.counters)
        flusher = Flusher(s, IndexCreator(opensearch_client(s), names).ensure, s.bulk_max_parallel_flushes,
                          counters=self.counters)
        self.committing = Committing(self.consumer, self.rollups, self.counters, self.assigned, now_ms)
        self.flushing = Flushing(flusher, publisher, self.pool, self.counters, self.committing)
        decoder = EventDecoder(names, s.kafka_apm_log_topic, s.kafka_apm_span_topic, s.engine_max_message_bytes,
                               otlp_span_topic=s.kafka_otlp_span_topic, otlp_log_topic=s.kafka_otlp_log_topic,
                               default_environment=s.otlp_default_environment)
        self.building = Builder(s, decoder, self.rollups, self.pool, publisher, self.counters, self.flushing.submit,
                                self.assigned, now_ms)
        self.lag = None if self.lag_table is None else LagReport(self.consumer, self.lag_table, self.slot,
                                                                  self.committing.tracker, now_ms)
        try:
            self.consumer.subscribe(list(s.input_topics), on_assign=self.on_assign, on_revoke=self.on_revoke,
                                    on_lost=self.on_lost)
        except KafkaException as exc:
            raise SettingsError("KAFKA_APM_LOG_TOPIC / KAFKA_APM_SPAN_TOPIC / KAFKA_OTLP_*_TOPIC",
                                f"cannot subscribe to {list(s.input_topics)}: {exc.args[0].str()}") from None

    def handle_term(self, *_: Any) -> None:
        if self.stopping:
            self.fast_stop = True
        self.stopping = True

    def handle_int(self, *_: Any) -> None:
        self.stopping = True
        self.fast_stop = True

    def run(self) -> int:
        """The cycle until a signal (or a refusal) stops it; ``init_process`` has run."""
        try:
            while not self.stopping:
                self.cycle()
            if not self.fast_stop:
                self.drain(self.settings.engine_shutdown_timeout_s - 2)
        finally:
            self.close()
        return self.exit_code

    def cycle(self) -> None:
        self.heartbeat()
        self.fetch()
        self.building.poll()
        self.flushing.poll()
        if self.committing.poll() and self.lag is not None:
            self.lag.report(self.assigned)
        if self.flushing.refusal is not None and not self.exit_code:
            self.stop_refused(self.flushing.refusal)
        self.resume_if_possible()

    def close(self) -> None:
        self.flushing.close()
        try:
            self.consumer.close()
        except KafkaException as exc:
            log.warning("closing the consumer: %s", exc)
        self.building.close()

    def drain(self, timeout_s: float) -> None:
        """Stop fetching, flush, commit. Everything acknowledged before exit is stored."""
        self.pause()
        self.finish(set(self.assigned), time.monotonic() + max(1.0, timeout_s))
        log.info("worker %d drained: %d batches unfinished", self.slot, self.committing.inflight)

    def finish(self, partitions: set[TP], deadline: float) -> None:
        """The final rollup writes of ``partitions``, every batch flushed (until ``deadline``), then a
        synchronous commit of theirs."""
        written = self.building.join(partitions)
        while (self.committing.inflight or not written) and time.monotonic() < deadline and not self.fast_stop:
            self.flushing.poll(timeout_s=0.05)
            self.committing.advance()
            self.heartbeat()
            written = written or self.building.join(partitions)
        self.committing.join(partitions & self.assigned)

    def stop_refused(self, refusal: SettingsError) -> None:
        """The search cluster refused the credentials: no retry can help. Stop at once; what was not stored is
        never committed (its batch never finishes), and the supervisor halts the engine on the exit code."""
        log.error("worker %d: %s; stopping the engine", self.slot, refusal)
        self.exit_code = EXIT_REFUSED
        self.stopping = self.fast_stop = True

    # ------------------------------------------------------------------ fetching and backpressure

    def heartbeat(self) -> None:
        self.counters.set(Counter.heartbeat_ms, now_ms())

    def fetch(self) -> None:
        if self.held:
            held = list(self.held)
            taken = self.building.submit(held)
            self.held = deque(held[taken:])
        if self.paused:  # keep serving the group (a 50 ms wait, not a spin); anything delivered waits in `held`
            self.held.extend(self.consumer.consume(FETCH_MAX, 0.05))
            return
        messages = self.consumer.consume(FETCH_MAX, 0.1)
        taken = self.building.submit(messages)
        if taken < len(messages):
            self.held.extend(messages[taken:])
            self.pause()

    def pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        self.counters.set(Counter.paused, 1)
        if self.assigned:
            self.consumer.pause([TopicPartition(t, p) for t, p in self.assigned])

    def resume_if_possible(self) -> None:
        if self.paused and self.pool.free > 0 and not self.held and not self.stopping:
            self.paused = False
            self.counters.set(Counter.paused, 0)
            if self.assigned:
                self.consumer.resume([TopicPartition(t, p) for t, p in self.assigned])

    # ------------------------------------------------------------------ rebalances

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        added = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned |= added
        log.info("worker %d assigned %s", self.slot, sorted(added))
        spans = [tp for tp in partitions if self.building.decoder.kind_of(tp.topic) == SPAN]
        if spans:
            try:
                committed = consumer.committed(spans, timeout=30)
            except KafkaException as exc:
                log.warning("could not read the committed rollup watermark (%s): starting from none", exc)
                committed = spans
            for tp in committed:
                self.rollups.assign(tp.topic, tp.partition, tp.metadata)
        if self.paused:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        log.info("worker %d revoked %s", self.slot, sorted(gone))
        wait_s = 0.0 if self.stopping else min(20.0, self.settings.engine_shutdown_timeout_s)  # drain() waited
        self.finish(gone, time.monotonic() + wait_s)
        self._leave(gone)
        if self.committing.inflight:
            log.warning("worker %d gave up %d unfinished batches at a rebalance", self.slot,
                        self.committing.inflight)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        log.warning("worker %d lost %s", self.slot, sorted(gone))
        self._leave(gone)

    def _leave(self, gone: set[TP]) -> None:
        self.assigned -= gone
        if self.lag is not None:
            self.lag.forget(gone)
        self.committing.forget(gone)
        for tp in gone:
            self.rollups.forget(tp)
        self.held = deque(m for m in self.held if (m.topic(), m.partition()) not in gone)


def run_worker(settings: Settings, slot: int, pool: BlockPool, counters: CounterSlot, lag: LagTable | None,
               instance_id: str | None) -> int:
    """Entry point in the child after fork. A failure before the cycle starts is a boot failure: the
    supervisor halts the engine instead of replacing the worker again and again."""
    worker = Worker(settings, slot, pool, counters, lag, instance_id)
    try:
        worker.init_process()
    except Exception as exc:
        log.error("worker %d failed to boot: %s", slot, exc)
        return EXIT_BOOT_FAILURE
    try:
        return worker.run()
    except KafkaException as exc:
        log.error("worker %d: fatal Kafka error: %s", slot, exc)
        return 1
