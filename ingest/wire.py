"""OTLP/HTTP answer bodies, in the encoding of the request (``application/x-protobuf`` or ``application/json``).

Success and partial success: ``ExportTraceServiceResponse`` / ``ExportLogsServiceResponse`` (opentelemetry-proto),
``partial_success`` left unset on full success. Failures (every 4xx and 5xx): a ``google.rpc.Status``. Its three
fields (``code``, ``message``, ``details`` of ``google.protobuf.Any``) are written here by hand, with a
``google.rpc.BadRequest`` detail for a 400: the only Status the receiver needs, without a googleapis dependency.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

Encoding = Literal["proto", "json"]
Signal = Literal["traces", "logs"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES: dict[Encoding, str] = {"proto": PROTOBUF, "json": JSON}
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

_encode_json = msgspec.json.Encoder().encode


def export_response(signal: Signal, encoding: Encoding, rejected: int = 0, error_message: str = "") -> bytes:
    """The Export<signal>ServiceResponse; ``partial_success`` only when something was rejected or said."""
    response = ExportTraceServiceResponse() if signal == "traces" else ExportLogsServiceResponse()
    if isinstance(response, ExportTraceServiceResponse) and (rejected or error_message):
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = error_message
    elif isinstance(response, ExportLogsServiceResponse) and (rejected or error_message):
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = error_message
    if encoding == "json":
        return str(json_format.MessageToJson(response, indent=None)).encode()
    return bytes(response.SerializeToString())


class FieldViolation(msgspec.Struct, frozen=True):
    field: str
    description: str


def status_body(encoding: Encoding, code: int, message: str,
                violations: tuple[FieldViolation, ...] = ()) -> bytes:
    """A ``google.rpc.Status`` (with a ``BadRequest`` detail when there are field violations)."""
    if encoding == "json":
        document: dict[str, object] = {"code": code, "message": message}
        if violations:
            document["details"] = [{"@type": BAD_REQUEST_TYPE, "fieldViolations": [
                {"field": v.field, "description": v.description} for v in violations]}]
        return _encode_json(document)
    body = (_varint_field(1, code) if code else b"") + _bytes_field(2, message.encode())
    if violations:
        bad_request = b"".join(
            _bytes_field(1, _bytes_field(1, v.field.encode()) + _bytes_field(2, v.description.encode()))
            for v in violations)
        body += _bytes_field(3, _bytes_field(1, BAD_REQUEST_TYPE.encode()) + _bytes_field(2, bad_request))
    return body


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def encoding_of(content_type: str | None) -> Encoding | None:
    """``proto`` or ``json`` for the two OTLP media types (parameters such as ``charset`` ignored), else None."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == PROTOBUF:
        return "proto"
    if media == JSON:
        return "json"
    return None
