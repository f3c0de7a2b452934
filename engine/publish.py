"""Dead-letter records: what could not be stored, with its reason and its original bytes."""

from __future__ import annotations

import time

import msgspec
from confluent_kafka import Message

from common.normalize import TimeFormatter
from common.schema import DeadLetter


class _Service(msgspec.Struct):
    service_name: str = ""


class DeadLetters:
    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._service = msgspec.json.Decoder(_Service).decode
        self._clock = TimeFormatter()

    def record(self, message: Message, reason: str, detail: str, value: str, encoding: str,
               array_index: int | None) -> bytes:
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
        return self._encode(letter)

    def service_of(self, document: bytes) -> bytes:
        """The error topic is keyed by service_name."""
        return self._service(document).service_name.encode()
