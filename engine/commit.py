"""Which offsets are safe to commit, and when to commit them.

A batch is done when its bulk answer was read (every item stored, or refused and dead-lettered) and
every produce it caused (DLQ records, error-topic republishes) was acknowledged. Batches may finish out
of order; an offset becomes safe only when every batch up to the one that covers it is done. The
commit is the *next* offset (last processed + 1). Holds (open rollup windows) can keep it lower.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.batch import Batch, TopicPartition

# (partition, safe offset, watermark at it) -> (offset the commit may take, commit metadata)
Position = Callable[[TopicPartition, int, int | None], tuple[int, str | None]]


class CommitTracker:
    def __init__(self) -> None:
        self._inflight: deque[Batch] = deque()
        self._safe: dict[TopicPartition, int] = {}
        self._marks: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

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

    def due(self, assigned: Iterable[TopicPartition], position: Position
            ) -> dict[TopicPartition, tuple[int, str | None]]:
        """Positions to commit now, with their metadata: safe, as far as ``position`` allows, newer than the last."""
        out: dict[TopicPartition, tuple[int, str | None]] = {}
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

    def committed(self, positions: dict[TopicPartition, tuple[int, str | None]]) -> None:
        for tp, (offset, _) in positions.items():
            if offset > self._committed.get(tp, -1):
                self._committed[tp] = offset

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
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


@dataclass(frozen=True)
class CommitPolicy:
    """Commit on a schedule, not per message."""

    interval_ms: int = 1000

    def should_commit(self, now_ms: int, last_ms: int) -> bool:
        return now_ms - last_ms >= self.interval_ms
