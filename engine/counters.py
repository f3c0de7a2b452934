"""Per-worker counters in shared memory: one writer (the worker), any number of readers (the supervisor).

Each worker owns a slot of 64-bit integers. Values only grow (except the gauges), so a reader never
needs a lock: it may read a slightly old value, never a torn one (aligned 8-byte stores).
"""

from __future__ import annotations

from enum import IntEnum

from panopticon.engine.shm import Segment

# Upper bounds (seconds) of the bulk latency histogram buckets; the last bucket is +Inf.
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Counter(IntEnum):
    """Counter slots. Names are the metric suffixes."""

    consumed_logs = 0
    consumed_spans = 1
    stored_logs = 2
    stored_spans = 3
    duplicates = 4
    dlq_logs = 5
    dlq_spans = 6
    errors_published = 7
    retries = 8
    bytes_sent = 9
    bulk_requests = 10
    bulk_latency_us = 11
    batch_docs = 12
    batches = 13
    heartbeat_ms = 14  # gauge: last heartbeat, epoch ms
    blocks_in_use = 15  # gauge
    inflight_bytes = 16  # gauge
    paused = 17  # gauge: 1 while fetching is paused
    dropped_keys = 18
    rollup_docs = 19
    events_logs = 20
    events_spans = 21
    stored_events_logs = 22
    stored_events_spans = 23
    retry_streaks = 24  # requests still failing after BULK_RETRY_STREAK_S (written by the flusher threads)
    calls_waiting = 25  # gauge: halves of calls waiting for their other half (service map)
    calls_unpaired = 26  # clients given up with no callee named (this process's total)
    calls_evicted = 27  # halves let go early, beyond SERVICE_MAP_WAITING_MAX (this process's total)
    latency_bucket_0 = 28  # .. latency_bucket_0 + len(LATENCY_BOUNDS): histogram counts


SLOTS = Counter.latency_bucket_0 + len(LATENCY_BOUNDS) + 1
GAUGES = frozenset({Counter.heartbeat_ms, Counter.blocks_in_use, Counter.inflight_bytes, Counter.paused,
                    Counter.calls_waiting})
SUMMED_GAUGES = frozenset({Counter.blocks_in_use, Counter.inflight_bytes, Counter.calls_waiting})


class CounterSlot:
    """One worker's view of its counters."""

    __slots__ = ("_view",)

    def __init__(self, view: memoryview) -> None:
        self._view = view

    def add(self, counter: int, amount: int = 1) -> None:
        self._view[counter] += amount

    def set(self, counter: int, value: int) -> None:
        self._view[counter] = value

    def get(self, counter: int) -> int:
        return int(self._view[counter])

    def observe_latency(self, seconds: float) -> None:
        bucket = 0
        for bound in LATENCY_BOUNDS:
            if seconds <= bound:
                break
            bucket += 1
        self._view[Counter.latency_bucket_0 + bucket] += 1
        self._view[Counter.bulk_latency_us] += int(seconds * 1_000_000)

    def snapshot(self) -> list[int]:
        return list(self._view)

    def reset(self) -> None:
        for i in range(len(self._view)):
            self._view[i] = 0


class CounterTable:
    """All workers' slots in one segment, created by the supervisor before forking."""

    def __init__(self, segment: Segment, workers: int) -> None:
        self.segment = segment
        self._all = segment.buf.cast("q")
        self.slots = [CounterSlot(self._all[i * SLOTS : (i + 1) * SLOTS]) for i in range(workers)]

    @classmethod
    def create(cls, name: str, workers: int) -> CounterTable:
        return cls(Segment(name, max(8, workers * SLOTS * 8)), workers)

    def totals(self) -> list[int]:
        total = [0] * SLOTS
        for slot in self.slots:
            for i, value in enumerate(slot.snapshot()):
                if i not in GAUGES or i in SUMMED_GAUGES:
                    total[i] += value
        return total

    def close(self) -> None:
        for slot in self.slots:
            slot._view.release()
        self.slots.clear()
        self._all.release()
        self.segment.close()


MAX_PARTITIONS = 256  # per input topic; higher partitions are not reported


class LagTable:
    """Consumer lag per input partition (high watermark - committed), written by the partition's owner."""

    def __init__(self, segment: Segment, topics: tuple[str, ...]) -> None:
        self.segment = segment
        self.topics = topics
        self._rows = segment.buf.cast("q")  # [owner slot + 1, lag] per (topic, partition)

    @classmethod
    def create(cls, name: str, topics: tuple[str, ...]) -> LagTable:
        return cls(Segment(name, len(topics) * MAX_PARTITIONS * 16), topics)

    def _row(self, topic: str, partition: int) -> int | None:
        if topic not in self.topics or not 0 <= partition < MAX_PARTITIONS:
            return None
        return (self.topics.index(topic) * MAX_PARTITIONS + partition) * 2

    def set(self, slot: int, topic: str, partition: int, lag: int) -> None:
        row = self._row(topic, partition)
        if row is not None:
            self._rows[row] = slot + 1
            self._rows[row + 1] = lag

    def clear(self, slot: int, topic: str | None = None, partition: int | None = None) -> None:
        """Forget what a worker reported: one partition, or all of its rows."""
        for row in range(0, len(self._rows), 2):
            if self._rows[row] == slot + 1:
                index = row // 2
                if topic is None or (self.topics[index // MAX_PARTITIONS] == topic
                                     and index % MAX_PARTITIONS == partition):
                    self._rows[row] = 0

    def items(self) -> list[tuple[str, int, int]]:
        out = []
        for row in range(0, len(self._rows), 2):
            if self._rows[row]:
                index = row // 2
                out.append((self.topics[index // MAX_PARTITIONS], index % MAX_PARTITIONS, int(self._rows[row + 1])))
        return out

    def close(self) -> None:
        self._rows.release()
        self.segment.close()
