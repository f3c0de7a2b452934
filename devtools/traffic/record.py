"""What the generator yields: one Kafka message plus the facts a test needs to predict its fate."""

from __future__ import annotations

from typing import Literal

import msgspec

Topic = Literal["log", "span"]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One message for the log or span topic, keyed by ``trace_id``.

    Facts are as the engine will store them (normalized environment, upper-case level, trimmed service).
    An invalid record (``is_valid`` False, ``defect`` names the flaw) is not stored, except the valid
    elements of a mixed batch (``n_valid`` of ``n_events``).
    """

    kind: Topic
    key: bytes
    value: bytes
    trace_id: str
    service: str
    environment: str
    timestamp_ms: int  # event time of the (first) event
    is_valid: bool = True
    defect: str = ""
    n_events: int = 1  # events in the message (> 1 for an array batch)
    n_valid: int = 1  # events the engine will store
    trace_failed: bool = False  # the trace has ERROR spans
    # span facts
    span_id: str = ""
    parent_span_id: str | None = None
    name: str = ""
    span_kind: str = ""
    status: str = ""
    duration_ms: float = 0.0
    http_status_code: int | None = None
    # log facts: the normalized level of every stored event, in order
    levels: tuple[str, ...] = ()
