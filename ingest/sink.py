"""Kafka for the receiver: one idempotent producer per worker process, shared by its request threads.

A request answers only when Kafka acknowledged every record it produced. Each request owns a ``Delivery``:
a countdown of the acknowledgements it is owed, which the producer's delivery callbacks decrement. The
callbacks run on the sink's one poll thread (``producer.poll`` in a loop), never on a request thread, so no
request waits behind another's ``flush``; the request thread produces its records, seals the countdown and
waits on its event for at most INGEST_PRODUCE_TIMEOUT_S. ``message.timeout.ms`` is the same, so librdkafka
gives up on the records of a request that was answered 503 instead of delivering them later.

Failures are raised as the receiver's errors: the producer's queue full is ``QueueFull`` (429); a failed or
missing acknowledgement, or a refused produce, is ``KafkaUnavailable`` (503). After such a failure the sink
refuses at once for ``retry_after_s`` (``Breaker``): while Kafka is down, requests get their 503 immediately
instead of each holding a thread for the whole timeout. The first request after the window tries Kafka again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from panopticon.common.clients import producer_config
from panopticon.common.settings import Settings
from panopticon.ingest.errors import KafkaUnavailable, QueueFull

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes]  # topic, key, value
POLL_INTERVAL_S = 0.1
UNAVAILABLE_RETRY_AFTER_S = 5
QUEUE_FULL_RETRY_AFTER_S = 1
MESSAGE_HEADROOM_BYTES = 64 * 1024  # the producer's message.max.bytes above the largest event the engine takes


def ingest_producer_config(settings: Settings) -> dict[str, Any]:
    return producer_config(settings, "panopticon-ingest", **{
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": max(1, int(settings.ingest_produce_timeout_s * 1000)),
        "message.max.bytes": max(1_000_000, settings.engine_max_message_bytes + MESSAGE_HEADROOM_BYTES),
    })


class Delivery:
    """The acknowledgements one request is owed. ``ack`` runs on the poll thread, the rest on the request's."""

    __slots__ = ("_lock", "_pending", "_sealed", "_done", "error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._sealed = False
        self._done = threading.Event()
        self.error: KafkaError | None = None

    def expect(self) -> None:
        with self._lock:
            self._pending += 1

    def ack(self, error: KafkaError | None, _message: Message | None) -> None:
        with self._lock:
            self._pending -= 1
            if error is not None and self.error is None:
                self.error = error
            if error is not None or (self._sealed and self._pending == 0):
                self._done.set()  # the first failure decides the answer: no need to wait for the rest

    def seal(self) -> None:
        """Every record is produced: the countdown may now reach zero."""
        with self._lock:
            self._sealed = True
            if self._pending == 0:
                self._done.set()

    def wait(self, timeout_s: float) -> bool:
        return self._done.wait(timeout_s)


class Breaker:
    """Open for ``window_s`` after a failure; the clock is injected."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._open_until = -math.inf

    def remaining(self) -> float:
        return max(0.0, self._open_until - self._clock())

    def trip(self) -> bool:
        """Open (again) for a whole window; True when it was closed."""
        was_closed = self.remaining() == 0.0
        self._open_until = self._clock() + self._window_s
        return was_closed


class KafkaSink:
    def __init__(self, producer_factory: Callable[[], Producer], ack_timeout_s: float,
                 retry_after_s: int = UNAVAILABLE_RETRY_AFTER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._factory = producer_factory
        self._producer = producer_factory()
        self._ack_timeout_s = ack_timeout_s
        self._retry_after_s = retry_after_s
        self._breaker = Breaker(retry_after_s, clock)
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSink:
        conf = ingest_producer_config(settings)
        return cls(lambda: Producer(conf), settings.ingest_produce_timeout_s)

    def start(self) -> KafkaSink:
        self._poller.start()
        return self

    def send(self, records: Sequence[Record]) -> None:
        """Produce every record and return once Kafka acknowledged all of them; else raise QueueFull (429) or
        KafkaUnavailable (503). Records produced before a failure may still be delivered."""
        if not records:
            return
        self._refuse_while_open()
        delivery = Delivery()
        producer = self._producer
        try:
            for topic, key, value in records:
                delivery.expect()
                producer.produce(topic, value, key, on_delivery=delivery.ack)
        except BufferError:
            raise QueueFull("the receiver's Kafka queue is full; retry shortly", QUEUE_FULL_RETRY_AFTER_S,
                            reason="queue_full") from None
        except KafkaException as exc:
            self._fail(exc.args[0] if exc.args else None, "refused")
        delivery.seal()
        if not delivery.wait(self._ack_timeout_s):
            self._fail(None, "timeout")
        if delivery.error is not None:
            self._fail(delivery.error, "delivery_error")

    def close(self, timeout_s: float) -> None:
        """Stop polling, then deliver what is still queued for at most ``timeout_s``."""
        self._stopping.set()
        if self._poller.is_alive():
            self._poller.join(POLL_INTERVAL_S * 10)
        left = self._producer.flush(timeout_s)
        if left:
            log.warning("%d records were still unacknowledged by Kafka at shutdown", left)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(POLL_INTERVAL_S)  # serves the delivery callbacks

    def _refuse_while_open(self) -> None:
        remaining = self._breaker.remaining()
        if remaining > 0:
            raise KafkaUnavailable("Kafka failed to acknowledge a recent request; retry later",
                                   math.ceil(remaining), reason="recent_failure")

    def _fail(self, error: object, reason: str) -> NoReturn:
        if isinstance(error, KafkaError) and error.fatal():
            log.error("the Kafka producer failed fatally (%s); replacing it", error.str())
            self._producer = self._factory()
        detail = error.str() if isinstance(error, KafkaError) else str(error or "")
        if reason == "timeout":
            detail = f"no acknowledgement within {self._ack_timeout_s:g} s (INGEST_PRODUCE_TIMEOUT_S)"
        if self._breaker.trip():
            log.warning("Kafka did not take a request (%s: %s); answering 503 for %d s", reason, detail,
                        self._retry_after_s)
        raise KafkaUnavailable(f"Kafka is unavailable ({detail}); retry later", self._retry_after_s, reason=reason)
