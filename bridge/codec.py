"""Error-topic records -> deliveries: decoded once, encoded once, shared by every client.

A server-to-client WebSocket frame is never masked, so the RFC 6455 frame of an error is the same bytes for
every plain WebSocket client; it is built here once per error.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from panopticon.common.normalize import normalize_environment
from panopticon.common.schema import ErrorTopicRecord

TEXT = 0x81  # FIN + text opcode
PING_FRAME = b"\x89\x00"  # FIN + ping opcode, empty payload


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One error ready to send: what filters look at and the two wire forms."""

    service: str
    environment: str  # normalized, for the `environment` filter
    frame: bytes  # RFC 6455 text frame holding the JSON ErrorEvent
    payload: dict[str, Any]  # the ErrorEvent as builtins, for Socket.IO `error-log`
    read_at: float = 0.0  # monotonic time the feed read it, for the in-bridge delay histogram


class Malformed(msgspec.Struct, frozen=True):
    """A record that is not an error document; `reason` says why (with the JSON path)."""

    reason: str


def text_frame(payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        header = bytes((TEXT, size))
    elif size < 65536:
        header = struct.pack("!BBH", TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", TEXT, 127, size)
    return header + payload


class ErrorRecordDecoder:
    """Decodes error-topic values; one per feed (it keeps the msgspec decoder and encoder)."""

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(ErrorTopicRecord)
        self._encoder = msgspec.json.Encoder()

    def decode(self, value: bytes | None, read_at: float = 0.0) -> Delivery | Malformed:
        if not value:
            return Malformed("empty record")
        try:
            record = self._decoder.decode(value)
        except msgspec.ValidationError as exc:
            return Malformed(f"not an error document: {exc}")
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # the latter: a string of invalid UTF-8
            return Malformed(f"not JSON: {exc}")
        event = record.to_event()
        return Delivery(
            service=event.service_name,
            environment=normalize_environment(event.environment),
            frame=text_frame(self._encoder.encode(event)),
            payload=msgspec.to_builtins(event),
            read_at=read_at,
        )
