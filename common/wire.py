"""The shapes events arrive in: what msgspec decodes a wire event into before ``common.normalize`` refines it.

``LogEvent`` / ``SpanEvent`` take any event of the contract (lax fields are ``Any``, checked by the refiner);
``StoredLog`` / ``StoredSpan`` take only clean events, and are completed in place into the stored document.
They are declared here, apart from the rules, because msgspec's class options (``kw_only``,
``forbid_unknown_fields``) must be read by Python itself: ``common.normalize`` may be compiled (``setup.py``).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from panopticon.common.schema import KINDS, STATUSES, Log, Span


class LogEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A log event as producers send it. Lax fields are ``Any`` and checked by the refiner."""

    type: Any = None
    timestamp: Any = None
    service_name: str | None = None
    environment: str | None = None
    level: str | None = None
    message: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    http_method: str | None = None
    http_path: str | None = None
    http_status_code: Any = None
    labels: Any = None


class SpanEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A span event as producers send it."""

    type: Any = None
    timestamp: Any = None
    service_name: str | None = None
    environment: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    name: str | None = None
    kind: str | None = None
    duration_ms: Any = None
    status: str | None = None
    http_method: str | None = None
    http_path: str | None = None
    http_status_code: Any = None
    labels: Any = None


LOG_FIELDS = frozenset(LogEvent.__struct_fields__)
SPAN_FIELDS = frozenset(SpanEvent.__struct_fields__)


# Most events arrive already clean. These decode targets accept only such events, so msgspec checks most of
# the rules in C while decoding (the bounds are the field types of ``common.schema``); the refiner then completes
# them in place and they are encoded as the stored document. A record outside this shape (an unknown key, a lax
# value) fails to decode; its events are then decoded as dicts, their unknown keys moved under labels, and those
# that fit are converted into this shape; the rest take the general path, which yields the same document or says
# what is wrong.

class StoredLog(Log, kw_only=True, forbid_unknown_fields=True):
    """A clean log event, completed in place into its stored document by ``Refiner.complete_log``.

    Its fields are the log's; only what a wire event may carry differs: any ``timestamp`` and ``type`` (the
    refiner sets both), a ``level`` in any spelling (the refiner reads its aliases), and none of the engine's own
    fields (``UnsetType``: an event that carries one is not clean). ``timestamp`` stays the first field, so the
    encoded document starts ``{"timestamp":`` and the decoder writes it as ``{"@timestamp":``.
    """

    timestamp: Any = None
    ingested_at: UnsetType = UNSET
    timestamp_defaulted: UnsetType = UNSET
    type: Any = None


class StoredSpan(Span, kw_only=True, forbid_unknown_fields=True):
    """A clean span event, as ``StoredLog``; ``kind`` and ``status`` may be left out (the refiner fills them)."""

    timestamp: Any = None
    kind: Literal[KINDS] | UnsetType = UNSET  # type: ignore[valid-type, assignment]
    status: Literal[STATUSES] | UnsetType = UNSET  # type: ignore[valid-type, assignment]
    ingested_at: UnsetType = UNSET
    timestamp_defaulted: UnsetType = UNSET
    type: Any = None
