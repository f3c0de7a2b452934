"""The Kafka side: one thread that reads every partition of the error topic from the latest offset.

Fan-out needs every bridge instance to see every error, so partitions are assigned explicitly (``assign``
at each partition's high watermark), the group id is unique to this instance and nothing is committed.
Records are decoded once and handed to the hub in batches; malformed ones are counted and skipped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from panopticon.bridge.codec import Delivery, ErrorRecordDecoder, Malformed
from panopticon.bridge.hub import Hub
from panopticon.bridge.loop import LoopThread
from panopticon.bridge.metrics import BridgeMetrics
from panopticon.common.clients import consumer_config
from panopticon.common.settings import Settings

log = logging.getLogger("bridge.feed")

BATCH_MAX = 1000
POLL_TIMEOUT_S = 0.05
METADATA_TIMEOUT_S = 5.0
LAG_EVERY_S = 1.0
REFRESH_EVERY_S = 30.0
RETRY_AFTER_S = 2.0

ConsumerFactory = Callable[[dict[str, Any]], Any]


def instance_group_id(prefix: str) -> str:
    """A group id of this instance alone: it never shares (and never splits) the topic with another."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ErrorFeed(LoopThread):
    def __init__(self, settings: Settings, hub: Hub, metrics: BridgeMetrics,
                 consumer_factory: ConsumerFactory = Consumer,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("bridge-feed")
        self._topic = settings.kafka_apm_log_error_topic
        self._brokers = settings.kafka_brokers
        self._config = consumer_config(settings, instance_group_id(settings.error_stream_kafka_group_id),
                                       settings.error_stream_kafka_client_id)
        self._hub = hub
        self._metrics = metrics
        self._factory = consumer_factory
        self._clock = clock
        self._decoder = ErrorRecordDecoder()
        self._next_offsets: dict[int, int] = {}
        self._assigned: list[TopicPartition] = []
        self._lag_at = 0.0
        self._refresh_at = 0.0
        self._malformed_logged_at = -60.0
        self.state = "starting"

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except Exception as exc:  # a broken session is retried; the bridge keeps serving
                self.state = "restarting"
                log.error("error feed failed (%s: %s) reading %s at KAFKA_BROKERS=%s; retrying in %.0fs",
                          exc.__class__.__name__, exc, self._topic, self._brokers, RETRY_AFTER_S)
                self._stop.wait(RETRY_AFTER_S)
        self.state = "stopped"

    def _session(self) -> None:
        consumer = self._factory(self._config)
        try:
            if not self._assign(consumer):
                return
            self.state = "running"
            while not self._stop.is_set():
                self._poll(consumer)
                self._housekeeping(consumer)
        finally:
            consumer.close()

    # ------------------------------------------------------------ partitions

    def _partitions(self, consumer: Any) -> list[int]:
        metadata = consumer.list_topics(self._topic, timeout=METADATA_TIMEOUT_S).topics.get(self._topic)
        if metadata is None or metadata.error is not None:
            return []
        return sorted(metadata.partitions)

    def _assign(self, consumer: Any) -> bool:
        """Assign every partition at its high watermark; waits for the topic to exist."""
        partitions = self._partitions(consumer)
        while not partitions:
            if self.state != "waiting for topic":
                log.warning("topic %s not found; waiting for it", self._topic)
                self.state = "waiting for topic"
            if self._stop.wait(RETRY_AFTER_S):
                return False
            partitions = self._partitions(consumer)
        self._add_partitions(consumer, partitions)
        self._refresh_at = self._clock() + REFRESH_EVERY_S
        log.info("reading %s: partitions %s from the latest offset", self._topic, partitions)
        return True

    def _add_partitions(self, consumer: Any, partitions: list[int], from_start: bool = False) -> None:
        wanted = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self._topic, partition),
                                                       timeout=METADATA_TIMEOUT_S)
            start = low if from_start else high
            self._next_offsets[partition] = start
            wanted.append(TopicPartition(self._topic, partition, start))
        consumer.incremental_assign(wanted)
        self._assigned = [TopicPartition(self._topic, p) for p in sorted(self._next_offsets)]

    def _refresh(self, consumer: Any) -> None:
        """Partitions added to the topic later are read from their start (they are new)."""
        new = [p for p in self._partitions(consumer) if p not in self._next_offsets]
        if new:
            log.info("new partitions of %s: %s", self._topic, new)
            self._add_partitions(consumer, new, from_start=True)

    # ------------------------------------------------------------ records

    def _poll(self, consumer: Any) -> None:
        """Wait (up to the poll timeout) for the first record only, then take whatever else is already there.

        ``consume(n, timeout)`` would wait the whole timeout unless ``n`` records arrive, which at a few
        hundred errors a second delayed every record by up to 50 ms.
        """
        first = consumer.poll(POLL_TIMEOUT_S)
        if first is None:
            return
        messages = [first, *consumer.consume(num_messages=BATCH_MAX - 1, timeout=0)]
        read_at = self._clock()
        deliveries: list[Delivery] = []
        for message in messages:
            delivery = self._decode(message, read_at)
            if delivery is not None:
                deliveries.append(delivery)
        self._hub.publish(deliveries)

    def _decode(self, message: Message, read_at: float) -> Delivery | None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error: %s", error)
            return None
        partition: int = message.partition()  # type: ignore[assignment]  # a record without error has both
        self._next_offsets[partition] = message.offset() + 1  # type: ignore[operator]
        result = self._decoder.decode(message.value(), read_at)
        if isinstance(result, Malformed):
            self._skip(message, result)
            return None
        return result

    def _skip(self, message: Message, malformed: Malformed) -> None:
        self._metrics.malformed.inc()
        now = self._clock()
        if now - self._malformed_logged_at >= 60.0:  # at most one line a minute
            self._malformed_logged_at = now
            log.warning("skipping malformed record %s[%d]@%d: %s", message.topic(), message.partition(),
                        message.offset(), malformed.reason[:200])

    # ------------------------------------------------------------ lag

    def _housekeeping(self, consumer: Any) -> None:
        now = self._clock()
        if now >= self._lag_at:
            self._lag_at = now + LAG_EVERY_S
            self._metrics.consumer_lag.set(self._lag(consumer))
        if now >= self._refresh_at:
            self._refresh_at = now + REFRESH_EVERY_S
            self._refresh(consumer)

    def _lag(self, consumer: Any) -> int:
        lag = 0
        for partition, next_offset in self._next_offsets.items():
            _, high = consumer.get_watermark_offsets(TopicPartition(self._topic, partition), cached=True)
            if high >= 0:
                lag += max(0, high - next_offset)
        return lag
