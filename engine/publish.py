"""What a batch owes Kafka besides its documents: dead letters and republished errors.

Every produce is counted on the batch it belongs to (``batch.pending``); the batch, and so its offsets,
is done only when Kafka acknowledged all of them. A failed delivery is produced again.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from functools import partial

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from panopticon.common.clock import TimeFormatter
from panopticon.common.schema import DeadLetter
from panopticon.engine.batch import SPAN, Batch
from panopticon.engine.counters import Counter, CounterSlot

log = logging.getLogger(__name__)


class _Service(msgspec.Struct):
    service_name: str = ""


def dead_letter_value(value: bytes | None) -> tuple[str, str]:
    """The original bytes as UTF-8 text when they decode, else base64."""
    if value is None:
        return "", "utf-8"
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


class Publisher:
    def __init__(self, producer: Producer, dlq_topic: str, error_topic: str, counters: CounterSlot) -> None:
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.error_topic = error_topic
        self.counters = counters
        self._encode = msgspec.json.Encoder().encode
        self._service = msgspec.json.Decoder(_Service).decode
        self._clock = TimeFormatter()

    def reject(self, batch: Batch, message: Message, kind: int, reason: str, detail: str,
               array_index: int | None = None, element: bytes | None = None) -> None:
        """Dead-letter a record (or one array element) with its reason and its original bytes."""
        value, encoding = dead_letter_value(element if element is not None else message.value())
        key = message.key()
        letter = DeadLetter(
            source_topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=key.decode("utf-8", "replace") if key is not None else None,
            reason=reason,
            detail=detail,
            value=value,
            value_encoding="base64" if encoding == "base64" else "utf-8",
            array_index=array_index,
            failed_at=self._clock.format(time.time_ns() // 1_000_000),
        )
        self._produce(batch, self.dlq_topic, key, self._encode(letter))
        self.counters.add(Counter.dlq_spans if kind == SPAN else Counter.dlq_logs)

    def republish(self, batch: Batch, index: int) -> None:
        """An ERROR/FATAL log, as stored, to the error topic, keyed by service_name."""
        document = batch.document(index)
        self._produce(batch, self.error_topic, self._service(document).service_name.encode(), document)
        self.counters.add(Counter.errors_published)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout_s)

    def _produce(self, batch: Batch, topic: str, key: bytes | None, value: bytes) -> None:
        def send() -> None:
            while True:
                try:
                    self.producer.produce(topic, value=value, key=key, on_delivery=partial(self._acked, batch, send))
                    return
                except BufferError:
                    self.producer.poll(0.1)

        batch.pending += 1
        send()

    @staticmethod
    def _acked(batch: Batch, retry: Callable[[], None], err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            log.warning("produce failed (%s); retrying", err)
            retry()
            return
        batch.pending -= 1
