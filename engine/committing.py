"""Step 3, committing: which offsets are safe to commit, and committing them.

A batch is done when its bulk answer was read (every item stored, or refused and dead-lettered) and every
produce it caused (DLQ records, error-topic republishes) was acknowledged. Batches may finish out of order;
an offset becomes safe only when every batch up to the one that covers it is done. The commit is the *next*
offset (last processed + 1), on an interval, not per record. Open rollup windows can hold it lower
(``RollupStage.position``), and it carries the rollup watermark in its metadata.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from panopticon.common.clock import Clock
from panopticon.engine.batch import LOG, SPAN, Batch
from panopticon.engine.batch import TopicPartition as TP
from panopticon.engine.counters import Counter, CounterSlot
from panopticon.engine.rollups import RollupStage

log = logging.getLogger(__name__)

COMMIT_INTERVAL_MS = 1000

# (partition, safe offset, watermark at it) -> (offset the commit may take, commit metadata)
Position = Callable[[TP, int, int | None], tuple[int, str | None]]


class CommitTracker:
    """Batches in seal order, the safe offset of each partition, and what was committed."""

    def __init__(self) -> None:
        self._inflight: deque[Batch] = deque()
        self._safe: dict[TP, int] = {}
        self._marks: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    def track(self, batch: Batch) -> None:
        self._inflight.append(batch)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def advance(self) -> list[Batch]:
        """Pop the finished prefix of batches; their offsets become safe. Returns the popped batches."""
        finished = []
        while self._inflight and self._inflight[0].done:
            batch = self._inflight.popleft()
            for tp, offset in batch.offsets.items():
                if offset > self._safe.get(tp, -1):
                    self._safe[tp] = offset
                    if tp in batch.marks:
                        self._marks[tp] = batch.marks[tp]
            finished.append(batch)
        return finished

    def due(self, assigned: Iterable[TP], position: Position) -> dict[TP, tuple[int, str | None]]:
        """Positions to commit now, with their metadata: safe, as far as ``position`` allows, newer than the last."""
        out: dict[TP, tuple[int, str | None]] = {}
        for tp in assigned:
            safe = self._safe.get(tp)
            if safe is None:
                continue
            offset, metadata = position(tp, safe, self._marks.get(tp))
            if offset > self._committed.get(tp, -1):
                out[tp] = (offset, metadata)
        return out

    def position(self, topic: str, partition: int) -> int | None:
        """The last committed offset of a partition (None before the first commit)."""
        return self._committed.get((topic, partition))

    def committed(self, positions: dict[TP, tuple[int, str | None]]) -> None:
        for tp, (offset, _) in positions.items():
            if offset > self._committed.get(tp, -1):
                self._committed[tp] = offset

    def forget(self, partitions: Iterable[TP]) -> None:
        """A partition left this worker: its unfinished batches must never commit for it."""
        gone = set(partitions)
        for tp in gone:
            self._safe.pop(tp, None)
            self._marks.pop(tp, None)
            self._committed.pop(tp, None)
        for batch in self._inflight:
            for tp in gone:
                batch.offsets.pop(tp, None)
                batch.marks.pop(tp, None)


class Committing:
    def __init__(self, consumer: Consumer, rollups: RollupStage, counters: CounterSlot,
                 assigned: set[TP], clock: Clock, interval_ms: int = COMMIT_INTERVAL_MS) -> None:
        self.consumer = consumer
        self.rollups = rollups
        self.counters = counters
        self.assigned = assigned  # the worker's, kept current by its rebalance callbacks
        self.tracker = CommitTracker()
        self._clock = clock
        self._interval_ms = interval_ms
        self._last = 0

    @property
    def inflight(self) -> int:
        return self.tracker.inflight

    def submit(self, batch: Batch) -> None:
        """A sealed batch, in seal order."""
        self.tracker.track(batch)

    def advance(self) -> None:
        """Finished batches: count what they stored, let the rollup windows they carried be released."""
        finished = self.tracker.advance()
        for batch in finished:
            self.counters.add(Counter.stored_logs, batch.docs[LOG])
            self.counters.add(Counter.stored_spans, batch.docs[SPAN])
        if finished:
            self.rollups.release(finished[-1].seq)

    def poll(self) -> bool:
        """Advance; commit asynchronously when the interval is up. True when it was."""
        self.advance()
        now = self._clock()
        if now - self._last < self._interval_ms:
            return False
        self._last = now
        self.commit(sync=False)
        return True

    def join(self, only: set[TP] | None = None) -> None:
        """A synchronous commit of what is safe (of ``only`` these partitions), before they leave."""
        self.advance()
        self.commit(sync=True, only=only)

    def forget(self, gone: set[TP]) -> None:
        self.tracker.forget(gone)

    def commit(self, sync: bool, only: set[TP] | None = None) -> None:
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
