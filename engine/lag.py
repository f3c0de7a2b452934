"""Consumer lag per owned partition: high watermark minus the committed position, for the supervisor."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from panopticon.common.clock import Clock
from panopticon.engine.batch import TopicPartition as TP
from panopticon.engine.committing import CommitTracker
from panopticon.engine.counters import LagTable

BROKER_ASK_MS = 10_000  # how often to ask the broker about a partition with nothing fetched or committed here


class LagReport:
    def __init__(self, consumer: Consumer, table: LagTable, slot: int, tracker: CommitTracker,
                 clock: Clock) -> None:
        self.consumer = consumer
        self.table = table
        self.slot = slot
        self.tracker = tracker
        self._clock = clock
        self._asked: dict[TP, tuple[int, int, int]] = {}  # (asked at, high, committed)

    def report(self, owned: Iterable[TP]) -> None:
        """High watermark (as last fetched) minus the committed position, per owned partition."""
        now = self._clock()
        for topic, partition in owned:
            tp = TopicPartition(topic, partition)
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            position = self.tracker.position(topic, partition)
            if high < 0 or position is None:  # no record fetched or consumed here yet (handed over drained, idle)
                asked_high, committed = self._ask_broker(tp, now)
                high = high if high >= 0 else asked_high
                position = committed if position is None else position
            if high >= 0 and position >= 0:
                self.table.set(self.slot, topic, partition, max(0, high - position))

    def forget(self, gone: Iterable[TP]) -> None:
        for topic, partition in gone:
            self.table.clear(self.slot, topic, partition)
            self._asked.pop((topic, partition), None)

    def _ask_broker(self, tp: TopicPartition, now: int) -> tuple[int, int]:
        """(high watermark, committed offset) of a partition with nothing fetched or consumed here, from the
        broker, asked at most every BROKER_ASK_MS; -1 where unknown."""
        key = (tp.topic, tp.partition)
        asked_at, high, committed = self._asked.get(key, (-BROKER_ASK_MS, -1, -1))
        if now - asked_at >= BROKER_ASK_MS:
            try:
                high = self.consumer.get_watermark_offsets(tp, timeout=1.0)[1]
                committed = self.consumer.committed([tp], timeout=1.0)[0].offset
            except KafkaException:
                high = committed = -1
            self._asked[key] = (now, high, committed)
        return high, committed
