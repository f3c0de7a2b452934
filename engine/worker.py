"""A worker process: one consumer-group member, its partitions, its blocks and its flusher threads.

The loop is one fixed cycle: heartbeat -> fetch (unless held back) -> submit records into the open
batch -> seal what is full or old -> read flush results -> serve produce acknowledgements -> commit
what is safe. Kafka and search clients are created here, after the fork.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from common.clients import consumer_config, opensearch_client, producer_config
from common.indices import METRICS_1M, IndexCreator, IndexNames
from common.settings import Settings, SettingsError
from engine.batch import LOG, ROLLUP, SPAN, Batch
from engine.bulk import Flusher, FlushResult
from engine.commit import CommitPolicy, CommitTracker
from engine.counters import Counter, CounterSlot, LagTable
from engine.decode import Decoded, Entry, EventDecoder
from engine.publish import Publisher
from engine.rollups import RollupStage
from engine.shm import BlockPool

log = logging.getLogger(__name__)

FETCH_MAX = 1000
WATERMARK_ASK_MS = 10_000  # how often the lag report asks the broker about a partition with nothing fetched
EXIT_REFUSED = 2  # the search cluster refused the credentials: the supervisor halts, the engine exits with it
EXIT_BOOT_FAILURE = 3  # init_process failed: the supervisor halts instead of restarting
HALTS = {EXIT_REFUSED: "was refused by the search cluster", EXIT_BOOT_FAILURE: "failed to boot"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Worker:
    def __init__(self, settings: Settings, slot: int, pool: BlockPool, counters: CounterSlot,
                 lag: LagTable | None = None, instance_id: str | None = None) -> None:
        self.settings = settings
        self.slot = slot
        self.pool = pool
        self.counters = counters
        self.lag = lag
        self.instance_id = instance_id
        self.stopping = False
        self.fast_stop = False
        self.exit_code = 0
        self.batch: Batch | None = None
        self.held: deque[Message] = deque()
        self.paused = False
        self.assigned: set[tuple[str, int]] = set()
        self.tracker = CommitTracker()
        self.policy = CommitPolicy()
        self._seq = 0
        self._last_commit = 0
        self._last_rollup = 0
        self._broker_answers: dict[tuple[str, int], tuple[int, int, int]] = {}  # (asked at, high, committed)

    # ------------------------------------------------------------------ lifecycle

    def init_process(self) -> None:
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_int)
        signal.signal(signal.SIGQUIT, self.handle_int)
        s = self.settings
        self.names = IndexNames(s.opensearch_index_prefix)
        self.decoder = EventDecoder(self.names, s.kafka_apm_log_topic, s.kafka_apm_span_topic,
                                    s.engine_max_message_bytes)
        self.rollups = RollupStage(self.names, s.rollup_grace_ms, msgspec.json.Encoder().encode)
        creator = IndexCreator(opensearch_client(s), self.names)
        self.flusher = Flusher(s, creator.ensure, s.bulk_max_parallel_flushes, counters=self.counters)
        self.publisher = Publisher(Producer(producer_config(s, "panopticon-engine")), s.kafka_apm_dlq_topic,
                                   s.kafka_apm_log_error_topic, self.counters)
        extra: dict[str, Any] = {"session.timeout.ms": s.engine_session_timeout_ms, "max.poll.interval.ms": 300_000}
        if self.instance_id:
            extra["group.instance.id"] = self.instance_id
        self.consumer = Consumer(consumer_config(s, s.engine_group_id, "panopticon-engine", **extra))
        try:
            self.consumer.subscribe(list(s.input_topics), on_assign=self.on_assign, on_revoke=self.on_revoke,
                                    on_lost=self.on_lost)
        except KafkaException as exc:
            raise SettingsError("KAFKA_APM_LOG_TOPIC / KAFKA_APM_SPAN_TOPIC",
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
        self.write_rollups_if_due()
        self.seal_if_due()
        self.collect()
        self.publisher.poll()
        self.commit_if_due()
        self.resume_if_possible()

    def close(self) -> None:
        self.flusher.terminate()
        try:
            self.consumer.close()
        except KafkaException as exc:
            log.warning("closing the consumer: %s", exc)
        self.publisher.flush(5)
        self.flusher.join(2)

    def drain(self, timeout_s: float) -> None:
        """Stop fetching, flush, commit. Everything acknowledged before exit is stored."""
        deadline = time.monotonic() + max(1.0, timeout_s)
        self.pause()
        self.write_rollups(final_for=set(self.assigned))
        self.seal()
        while self.tracker.inflight and time.monotonic() < deadline and not self.fast_stop:
            self.collect(timeout_s=0.05)
            self.publisher.poll()
            self.heartbeat()
        self.commit(sync=True)
        log.info("worker %d drained: %d batches unfinished", self.slot, self.tracker.inflight)

    # ------------------------------------------------------------------ the cycle

    def heartbeat(self) -> None:
        self.counters.set(Counter.heartbeat_ms, now_ms())

    def fetch(self) -> None:
        if self.held:
            held = list(self.held)
            taken = self.submit(held)
            self.held = deque(held[taken:])
        if self.paused:  # keep serving the group (a 50 ms wait, not a spin); anything delivered waits in `held`
            self.held.extend(self.consumer.consume(FETCH_MAX, 0.05))
            return
        messages = self.consumer.consume(FETCH_MAX, 0.1)
        taken = self.submit(messages)
        if taken < len(messages):
            self.held.extend(messages[taken:])
            self.pause()

    def submit(self, messages: list[Message]) -> int:
        """Decode records into the open batch, in order; returns how many were taken. Fewer than all: no room
        and no free block (backpressure). The clock is read and the counters are added once per call."""
        now = now_ms()
        decode, assigned, span_topic = self.decoder.decode, self.assigned, self.settings.kafka_apm_span_topic
        max_docs = self.settings.bulk_batch_size
        log_records = span_records = log_events = span_events = dropped_keys = taken = 0
        for message in messages:
            error = message.error()
            if error is not None:
                self._consumer_error(error)
                taken += 1
                continue
            topic, partition = message.topic(), message.partition()
            if (topic, partition) not in assigned:
                taken += 1
                continue  # revoked while held: the new owner reads it again
            offset: int = message.offset()  # type: ignore[assignment]
            ts_type, ts = message.timestamp()
            kafka_ms = ts if ts_type and ts > 0 else 0
            decoded = decode(topic, partition, offset, message.value(),  # type: ignore[arg-type]
                             kafka_ms or now, now)
            batch = self.batch
            if batch is None or batch.room() < decoded.size or batch.count >= max_docs:
                batch = self._room_for(decoded)
                if batch is None:
                    break
            kind = SPAN if topic == span_topic else LOG
            events = len(decoded.entries) + len(decoded.rejects)
            dropped_keys += decoded.dropped_keys
            written = self._write(batch, message, kind, decoded)
            if kind == SPAN:
                span_records += 1
                span_events += events
                rollups = self.rollups.get((topic, partition))  # type: ignore[arg-type]
                for entry in written:
                    rollups.add(offset, entry.event, entry.epoch_ms, kafka_ms)  # type: ignore[arg-type]
                batch.cover(topic, partition, offset, rollups.watermark)  # type: ignore[arg-type]
            else:
                log_records += 1
                log_events += events
                batch.cover(topic, partition, offset)  # type: ignore[arg-type]
            taken += 1
        for counter, amount in ((Counter.consumed_logs, log_records), (Counter.consumed_spans, span_records),
                                (Counter.events_logs, log_events), (Counter.events_spans, span_events),
                                (Counter.dropped_keys, dropped_keys)):
            if amount:
                self.counters.add(counter, amount)
        return taken

    def _room_for(self, decoded: Decoded) -> Batch | None:
        need = decoded.size
        batch = self.batch
        if batch is not None and (batch.room() < need or batch.count >= self.settings.bulk_batch_size):
            self.seal()
            batch = None
        if batch is None:
            batch = self.open_batch()
        return batch  # a record larger than a whole block has its entries refused one by one in _write

    def _write(self, batch: Batch, message: Message, kind: int, decoded: Decoded) -> list[Entry]:
        """Append the record's documents and dead-letter its rejects; returns the entries written."""
        written = []
        room = batch.room()
        indices = batch.indices
        for entry in decoded.entries:
            size = len(entry.line)
            if size > room:
                self.publisher.reject(batch, message, kind, "too_large",
                                      "the normalized document does not fit a bulk block", entry.array_index)
                continue
            room -= size
            batch.append(entry.line, message, entry.kind, entry.array_index, entry.error_log)
            indices.add(entry.index_key)
            written.append(entry)
        for reject in decoded.rejects:
            self.publisher.reject(batch, message, kind, reject.reason, reject.detail, reject.array_index,
                                  reject.element)
        return written

    def open_batch(self) -> Batch | None:
        block = self.pool.acquire()
        if block is None:
            return None
        self._seq += 1
        self.batch = Batch(self._seq, block, now_ms())
        self.counters.set(Counter.blocks_in_use, self.pool.total - self.pool.free)
        return self.batch

    def seal(self) -> None:
        batch = self.batch
        if batch is None:
            return
        self.batch = None
        batch.sealed = True
        self.tracker.track(batch)
        if batch.count:
            self.counters.add(Counter.inflight_bytes, batch.size)
            self.flusher.submit(batch)
        else:
            self._release(batch)
            batch.flushed = True

    def write_rollups_if_due(self) -> None:
        now = now_ms()
        if now - self._last_rollup >= self.settings.rollup_flush_interval_ms:
            self._last_rollup = now
            self.write_rollups()

    def write_rollups(self, final_for: set[tuple[str, int]] | None = None) -> None:
        """Write changed rollup windows; a sealed window's final write holds the commit until it is stored."""
        writes = self.rollups.writes(now_ms(), final_for)
        if not writes:
            return
        need = sum(len(w.line) for w in writes)
        batch = self.batch
        if batch is None or batch.room() < need:
            self.seal()
            batch = self.open_batch()
        if batch is None or batch.room() < need:
            for write in writes:  # no block free: write them again next time
                write.window.written = None
            return
        for write in writes:
            batch.append(write.line, None, ROLLUP)
            batch.indices.add((METRICS_1M, write.index))
            if write.final:
                write.window.release_seq = batch.seq
        self.counters.add(Counter.rollup_docs, len(writes))

    def seal_if_due(self) -> None:
        batch = self.batch
        if batch is None:
            return
        if (batch.size >= self.settings.bulk_batch_bytes or batch.count >= self.settings.bulk_batch_size
                or now_ms() - batch.opened_ms >= self.settings.bulk_flush_interval_ms):
            self.seal()

    def collect(self, timeout_s: float = 0.0) -> None:
        """Read flush results: count, republish errors, dead-letter refusals, free the blocks."""
        done = self.flusher.done
        while True:
            try:
                result = done.get(timeout=timeout_s) if timeout_s else done.get_nowait()
            except Exception:
                break
            self._finish(result)
            timeout_s = 0.0
        finished = self.tracker.advance()
        for batch in finished:
            self._count_stored(batch)
        if finished:
            self.rollups.release(finished[-1].seq)
        if self.flusher.refusal is not None and not self.exit_code:
            self.stop_refused(self.flusher.refusal)

    def stop_refused(self, refusal: SettingsError) -> None:
        """The search cluster refused the credentials: no retry can help. Stop at once; what was not stored is
        never committed (its batch never finishes), and the supervisor halts the engine on the exit code."""
        log.error("worker %d: %s; stopping the engine", self.slot, refusal)
        self.exit_code = EXIT_REFUSED
        self.stopping = self.fast_stop = True

    def _finish(self, result: FlushResult) -> None:
        batch = result.batch
        statuses = result.statuses
        counters = self.counters
        counters.add(Counter.bulk_requests)
        counters.observe_latency(result.latency_s)
        counters.add(Counter.bytes_sent, result.bytes_sent)
        counters.add(Counter.retries, result.retries)
        counters.add(Counter.batch_docs, batch.count)
        counters.add(Counter.batches)
        counters.add(Counter.inflight_bytes, -batch.size)
        if statuses is not None:
            kinds = batch.kinds
            counters.add(Counter.duplicates, sum(1 for i, s in enumerate(statuses) if s == 409 and kinds[i] != ROLLUP))
            for index, reason in result.errors.items():
                kind = kinds[index]
                batch.docs[kind] -= 1
                if kind == ROLLUP:
                    log.error("a rollup document was refused: HTTP %d: %s", statuses[index], reason)
                    continue
                self.publisher.reject(batch, batch.records[index], kind, "rejected_by_search",
                                      f"HTTP {statuses[index]}: {reason}", batch.elements.get(index))
        for index in batch.error_items:
            if statuses is None or statuses[index] in (200, 201, 409):
                self.publisher.republish(batch, index)
        batch.flushed = True
        self._release(batch)

    def _release(self, batch: Batch) -> None:
        if batch.block is not None:
            self.pool.release(batch.block)
            self.counters.set(Counter.blocks_in_use, self.pool.total - self.pool.free)

    def _count_stored(self, batch: Batch) -> None:
        self.counters.add(Counter.stored_logs, batch.docs[LOG])
        self.counters.add(Counter.stored_spans, batch.docs[SPAN])

    # ------------------------------------------------------------------ commits and rebalances

    def commit_if_due(self) -> None:
        now = now_ms()
        if self.policy.should_commit(now, self._last_commit):
            self._last_commit = now
            self.commit(sync=False)
            self.report_lag()

    def report_lag(self) -> None:
        """High watermark (as last fetched) minus the committed position, per owned partition."""
        if self.lag is None:
            return
        now = now_ms()
        for topic, partition in self.assigned:
            tp = TopicPartition(topic, partition)
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            position = self.tracker.position(topic, partition)
            if high < 0 or position is None:  # no record fetched or consumed here yet (handed over drained, idle)
                asked_high, committed = self._ask_broker(tp, now)
                high = high if high >= 0 else asked_high
                position = committed if position is None else position
            if high >= 0 and position >= 0:
                self.lag.set(self.slot, topic, partition, max(0, high - position))

    def _ask_broker(self, tp: TopicPartition, now: int) -> tuple[int, int]:
        """(high watermark, committed offset) of a partition with nothing fetched or consumed here, from the
        broker, asked at most every WATERMARK_ASK_MS; -1 where unknown."""
        key = (tp.topic, tp.partition)
        asked_at, high, committed = self._broker_answers.get(key, (-WATERMARK_ASK_MS, -1, -1))
        if now - asked_at >= WATERMARK_ASK_MS:
            try:
                high = self.consumer.get_watermark_offsets(tp, timeout=1.0)[1]
                committed = self.consumer.committed([tp], timeout=1.0)[0].offset
            except KafkaException:
                high = committed = -1
            self._broker_answers[key] = (now, high, committed)
        return high, committed

    def commit(self, sync: bool, only: set[tuple[str, int]] | None = None) -> None:
        due = self.tracker.due(only if only is not None else self.assigned, self.rollups.position)
        if not due:
            return
        offsets = [TopicPartition(t, p, o, m or "") for (t, p), (o, m) in due.items()]
        try:
            if sync:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            self.tracker.committed(due)
        except KafkaException as exc:
            log.warning("commit failed (%s); will retry", exc)

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

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        added = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned |= added
        log.info("worker %d assigned %s", self.slot, sorted(added))
        spans = [tp for tp in partitions if tp.topic == self.settings.kafka_apm_span_topic]
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
        self.write_rollups(final_for=gone)
        self.seal()
        deadline = time.monotonic() + min(20.0, self.settings.engine_shutdown_timeout_s)
        while self.tracker.inflight and time.monotonic() < deadline and not self.stopping:
            self.collect(timeout_s=0.05)
            self.publisher.poll()
            self.heartbeat()
        self.commit(sync=True, only=gone & self.assigned)
        self._leave(gone)
        if self.tracker.inflight:
            log.warning("worker %d gave up %d unfinished batches at a rebalance", self.slot, self.tracker.inflight)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        log.warning("worker %d lost %s", self.slot, sorted(gone))
        self._leave(gone)

    def _leave(self, gone: set[tuple[str, int]]) -> None:
        self.assigned -= gone
        if self.lag is not None:
            for topic, partition in gone:
                self.lag.clear(self.slot, topic, partition)
        self.tracker.forget(gone)
        for key in gone:
            self._broker_answers.pop(key, None)
        for tp in gone:
            self.rollups.forget(tp)
        self.held = deque(m for m in self.held if (m.topic(), m.partition()) not in gone)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer: %s", error)


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
