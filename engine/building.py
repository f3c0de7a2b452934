"""Step 1, building: fetched records -> decoded documents in the open bulk batch, beside their rollups.

The builder owns the open batch. It takes records in order and stops at the first that finds no room and no
free block (backpressure: the worker holds the rest back). Span records feed the rollup stage; changed rollup
windows are written into the batch on an interval. A batch is sealed when full or old and handed to the
flushing step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message

from panopticon.common.clock import Clock
from panopticon.common.indices import METRICS_1M
from panopticon.common.settings import Settings
from panopticon.engine.batch import ROLLUP, SPAN, Batch, TopicPartition
from panopticon.engine.counters import Counter, CounterSlot
from panopticon.engine.decode import Decoded, Entry, EventDecoder
from panopticon.engine.publish import Publisher
from panopticon.engine.rollups import RollupStage
from panopticon.engine.shm import BlockPool

log = logging.getLogger(__name__)


class Builder:
    def __init__(self, settings: Settings, decoder: EventDecoder, rollups: RollupStage, pool: BlockPool,
                 publisher: Publisher, counters: CounterSlot, seal: Callable[[Batch], None],
                 assigned: set[TopicPartition], clock: Clock) -> None:
        self.decoder = decoder
        self.rollups = rollups
        self.pool = pool
        self.publisher = publisher
        self.counters = counters
        self.assigned = assigned  # the worker's, kept current by its rebalance callbacks
        self.batch: Batch | None = None
        self._hand_over = seal  # the flushing step's submit
        self._clock = clock
        self._max_docs = settings.bulk_batch_size
        self._max_bytes = settings.bulk_batch_bytes
        self._max_age_ms = settings.bulk_flush_interval_ms
        self._rollup_every_ms = settings.rollup_flush_interval_ms
        self._last_rollup = 0
        self._seq = 0

    def submit(self, messages: list[Message]) -> int:
        """Decode records into the open batch, in order; returns how many were taken. Fewer than all: no room
        and no free block. The clock is read and the counters are added once per call."""
        now = self._clock()
        decode, kind_of, assigned, max_docs = self.decoder.decode, self.decoder.kind_of, self.assigned, self._max_docs
        log_records = span_records = log_events = span_events = dropped_keys = taken = 0
        for message in messages:
            error = message.error()
            if error is not None:
                consumer_error(error)
                taken += 1
                continue
            topic: str = message.topic()  # type: ignore[assignment]  # a record without error has all three
            partition: int = message.partition()  # type: ignore[assignment]
            offset: int = message.offset()  # type: ignore[assignment]
            if (topic, partition) not in assigned:
                taken += 1
                continue  # revoked while held: the new owner reads it again
            ts_type, ts = message.timestamp()
            kafka_ms = ts if ts_type and ts > 0 else 0
            decoded = decode(topic, partition, offset, message.value(), kafka_ms or now, now)
            batch = self.batch
            if batch is None or batch.room() < decoded.size or batch.count >= max_docs:
                batch = self._room_for(decoded)
                if batch is None:
                    break
            kind = kind_of(topic)
            events = len(decoded.entries) + len(decoded.rejects)
            dropped_keys += decoded.dropped_keys
            written = self._write(batch, message, kind, decoded)
            if kind == SPAN:
                span_records += 1
                span_events += events
                rollups = self.rollups.get((topic, partition))
                for entry in written:  # an OTLP request also holds the exception logs of its spans
                    if entry.kind == SPAN:
                        rollups.add(offset, entry.event, entry.epoch_ms, kafka_ms)  # type: ignore[arg-type]
                batch.cover(topic, partition, offset, rollups.watermark)
            else:
                log_records += 1
                log_events += events
                batch.cover(topic, partition, offset)
            taken += 1
        for counter, amount in ((Counter.consumed_logs, log_records), (Counter.consumed_spans, span_records),
                                (Counter.events_logs, log_events), (Counter.events_spans, span_events),
                                (Counter.dropped_keys, dropped_keys)):
            if amount:
                self.counters.add(counter, amount)
        return taken

    def poll(self) -> None:
        """Write changed rollup windows when their interval is up; seal the batch when it is full or old."""
        now = self._clock()
        if now - self._last_rollup >= self._rollup_every_ms:
            self._last_rollup = now
            self.write_rollups()
            rollups, counters = self.rollups, self.counters
            counters.set(Counter.calls_waiting, rollups.waiting())
            counters.set(Counter.calls_unpaired, rollups.tally.unpaired)
            counters.set(Counter.calls_evicted, rollups.tally.evicted)
        batch = self.batch
        if batch is not None and (batch.size >= self._max_bytes or batch.count >= self._max_docs
                                  or now - batch.opened_ms >= self._max_age_ms):
            self.seal()

    def join(self, final_for: set[TopicPartition]) -> bool:
        """Before partitions leave: their rollup windows' final writes, and the open batch sealed. False when
        no block was free for the writes: call again once one is."""
        written = self.write_rollups(final_for)
        self.seal()
        return written

    def close(self) -> None:
        if self.batch is not None and self.batch.block is not None:
            self.pool.release(self.batch.block)
        self.batch = None

    def seal(self) -> None:
        batch = self.batch
        if batch is None:
            return
        self.batch = None
        batch.sealed = True
        self._hand_over(batch)

    def write_rollups(self, final_for: set[TopicPartition] | None = None) -> bool:
        """Write changed rollup windows; a sealed window's final write holds the commit until it is stored.
        False when no block was free: the windows are written again next time."""
        writes = self.rollups.writes(self._clock(), final_for)
        if not writes:
            return True
        need = sum(len(w.line) for w in writes)
        batch = self.batch
        if batch is None or batch.room() < need:
            self.seal()
            batch = self._open()
        if batch is None or batch.room() < need:
            for write in writes:
                write.window.written = None
            return False
        for write in writes:
            batch.append(write.line, None, ROLLUP)
            batch.indices.add((METRICS_1M, write.index))
            if write.final:
                write.window.release_seq = batch.seq
        self.counters.add(Counter.rollup_docs, len(writes))
        return True

    def _room_for(self, decoded: Decoded) -> Batch | None:
        batch = self.batch
        if batch is not None and (batch.room() < decoded.size or batch.count >= self._max_docs):
            self.seal()
            batch = None
        if batch is None:
            batch = self._open()
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

    def _open(self) -> Batch | None:
        block = self.pool.acquire()
        if block is None:
            return None
        self._seq += 1
        self.batch = Batch(self._seq, block, self._clock())
        self.counters.set(Counter.blocks_in_use, self.pool.total - self.pool.free)
        return self.batch


def consumer_error(error: KafkaError) -> None:
    """An error delivered in place of a record: end of partition is news, a fatal one stops the worker."""
    if error.code() == KafkaError._PARTITION_EOF:
        return
    if error.fatal():
        raise KafkaException(error)
    log.warning("consumer: %s", error)
