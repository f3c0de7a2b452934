"""Decode step: one Kafka record -> encoded bulk entries and rejects. Pure: no I/O, never raises.

A record of the contract's topics is a JSON object or an array of objects. Every element is refined on its own;
an invalid element is a reject (bound for the dead-letter topic) while its siblings are kept. A clean record is
decoded straight into the stored shape and completed in place; any other is decoded as dicts, and each element
whose unknown keys, once moved under its labels, leave it in the stored shape is completed the same way; only the
rest take the general path, which yields the same document or the reason it cannot be stored.
A record of the OTLP topics is one OTLP export request (protobuf or OTLP/JSON, told apart by its first byte):
``common.otlp`` turns it into contract events, refined like array elements (many spans per record), then its
exception logs; what it could not convert is one reject naming every reason. Its events are dicts already within
the contract's bounds: each is converted into the stored shape and completed in place, as clean JSON records are,
and only those that do not fit take the general path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from panopticon.common import otlp
from panopticon.common.indices import LOGS, TRACES, IndexNames
from panopticon.common.normalize import Invalid, Refiner, partition_keys, refine_labels, split
from panopticon.common.schema import ERROR_LEVELS, LogDoc, SpanDoc
from panopticon.common.wire import LOG_FIELDS, SPAN_FIELDS, LogEvent, SpanEvent, StoredLog, StoredSpan
from panopticon.engine.batch import LOG, SPAN

_DAY_MS = 86_400_000
NOT_JSON = (msgspec.DecodeError, UnicodeDecodeError)  # msgspec raises the latter for a string of invalid UTF-8


class Entry:
    """One document to store. (Per event: a plain class, so its ``__init__`` compiles too; a dataclass's would
    not.)"""

    __slots__ = ("line", "kind", "array_index", "error_log", "index_key", "event", "epoch_ms")

    def __init__(self, line: bytes, kind: int, array_index: int | None, error_log: bool, index_key: tuple[str, str],
                 event: LogDoc | SpanDoc | StoredLog | StoredSpan, epoch_ms: int) -> None:
        self.line = line  # the bulk action line and the document line, each ending in a newline
        self.kind = kind
        self.array_index = array_index
        self.error_log = error_log
        self.index_key = index_key  # (LOGS or TRACES, the daily index's name), one shared tuple per index
        self.event = event  # the stored document, as a struct
        self.epoch_ms = epoch_ms

    @property
    def action(self) -> bytes:
        return self.line[: self.line.index(b"\n") + 1]

    @property
    def doc(self) -> bytes:
        return self.line[self.line.index(b"\n") + 1 : -1]

    @property
    def index_kind(self) -> str:
        return self.index_key[0]

    @property
    def index(self) -> str:
        return self.index_key[1]


@dataclass(slots=True)
class Reject:
    reason: str
    detail: str
    array_index: int | None = None
    element: bytes | None = None  # the offending array element, re-encoded


class Decoded:
    """What one record became (per record: a plain class, as ``Entry``)."""

    __slots__ = ("entries", "rejects", "dropped_keys", "size")

    def __init__(self, entries: list[Entry], rejects: list[Reject], dropped_keys: int = 0, size: int = 0) -> None:
        self.entries = entries
        self.rejects = rejects
        self.dropped_keys = dropped_keys
        self.size = size  # bytes of the entries' lines

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.size += len(entry.line)


_BLAKE2B_16 = hashlib.blake2b(digest_size=16)  # copied per id: cheaper than constructing one


def span_doc_id(trace_id: str, span_id: str) -> str:
    """A span's id from (trace_id, span_id): a producer's retry or a replay never duplicates it."""
    digest = _BLAKE2B_16.copy()
    digest.update(f"{trace_id}\x00{span_id}".encode())
    return digest.hexdigest()


def log_doc_id(topic: str, partition: int, offset: int, array_index: int | None) -> str:
    base = f"{topic}-{partition}-{offset}"
    return base if array_index is None else f"{base}-{array_index}"


class EventDecoder:
    """Log and span records -> bulk entries and rejects. Built once per worker process: holds the msgspec
    codecs and the refiner's caches."""

    def __init__(self, names: IndexNames, log_topic: str, span_topic: str, max_bytes: int, *,
                 otlp_span_topic: str = "", otlp_log_topic: str = "", default_environment: str = "unknown",
                 stored_path: bool = True) -> None:
        self._decode = msgspec.json.Decoder().decode
        # The common case, decoded straight into the stored shape; anything else takes the general path.
        self._stored = {
            LOG: msgspec.json.Decoder(StoredLog | list[StoredLog]).decode,
            SPAN: msgspec.json.Decoder(StoredSpan | list[StoredSpan]).decode,
        }
        self._stored_types: dict[int, type[StoredLog] | type[StoredSpan]] = {LOG: StoredLog, SPAN: StoredSpan}
        self._encoder = msgspec.json.Encoder()
        self._refiner = Refiner()
        self._names = names
        self._span_topic = span_topic
        self._max_bytes = max_bytes
        self._otlp = {topic: (kind, convert) for topic, kind, convert in (
            (otlp_span_topic, SPAN, otlp.convert_traces), (otlp_log_topic, LOG, otlp.convert_logs)) if topic}
        self._default_environment = default_environment
        self._stored_path = stored_path  # False: every event takes the general path (the tests compare the two)
        self._days: tuple[dict[int, tuple[tuple[str, str], bytes]], ...] = ({}, {})  # by kind, then day

    def kind_of(self, topic: str) -> int:
        """SPAN for the span topics (their partitions carry rollups), LOG for the others."""
        if topic == self._span_topic:
            return SPAN
        found = self._otlp.get(topic)
        return found[0] if found is not None else LOG

    def _index(self, kind: int, epoch_ms: int) -> tuple[tuple[str, str], bytes]:
        """The daily index of a document: its (kind, name) key and the start of its bulk action line."""
        days = self._days[kind]
        day = epoch_ms // _DAY_MS
        found = days.get(day)
        if found is None:
            index_kind = TRACES if kind == SPAN else LOGS
            name = self._names.daily(index_kind, epoch_ms)
            found = days[day] = ((index_kind, name), b'{"create":{"_index":"%s","_id":"' % name.encode())
        return found

    def decode(self, topic: str, partition: int, offset: int, value: bytes | None,
               default_ms: int, now_ms: int) -> Decoded:
        if value is None:
            return Decoded([], [Reject("empty_value", "the record has no value")])
        if len(value) > self._max_bytes:
            return Decoded([], [Reject("too_large", f"{len(value)} bytes > ENGINE_MAX_MESSAGE_BYTES "
                                                    f"({self._max_bytes})")])
        if topic in self._otlp:
            return self._otlp_request(topic, partition, offset, value, default_ms, now_ms)
        kind = SPAN if topic == self._span_topic else LOG
        if not self._stored_path:
            return self._general(kind, topic, partition, offset, value, default_ms, now_ms)
        try:
            stored = self._stored[kind](value)
        except msgspec.ValidationError:
            stored = None  # not the common shape: the general path says what is wrong, element by element
        except NOT_JSON as exc:
            return Decoded([], [Reject("not_json", str(exc))])
        if stored is not None:
            out = self._complete(kind, topic, partition, offset, stored, default_ms, now_ms)
            if out is not None:
                return out
        return self._general(kind, topic, partition, offset, value, default_ms, now_ms)

    def _complete(self, kind: int, topic: str, partition: int, offset: int,
                  stored: StoredLog | StoredSpan | list[StoredLog] | list[StoredSpan],
                  default_ms: int, now_ms: int) -> Decoded | None:
        """The common case: each event is completed in place and encoded as its document. None as soon as an
        event needs the general path (the record is then decoded again, whole)."""
        entries = []
        size = 0
        array = isinstance(stored, list)
        events: list[StoredLog] | list[StoredSpan] | tuple[StoredLog | StoredSpan] = stored if isinstance(
            stored, list) else (stored,)
        for i, event in enumerate(events):
            entry = self._stored_entry(kind, topic, partition, offset, event, i if array else None, default_ms,
                                       now_ms)
            if entry is None:
                return None
            entries.append(entry)
            size += len(entry.line)
        return Decoded(entries, [], 0, size)

    def _stored_entry(self, kind: int, topic: str, partition: int, offset: int, event: StoredLog | StoredSpan,
                      array_index: int | None, default_ms: int, now_ms: int) -> Entry | None:
        """A clean event completed in place and encoded as its document; None when it needs the general path."""
        if isinstance(event, StoredSpan):
            epoch_ms = self._refiner.complete_span(event, default_ms, now_ms)
            if epoch_ms is None:
                return None
            doc_id = span_doc_id(event.trace_id, event.span_id)
            error_log = False
        else:
            epoch_ms = self._refiner.complete_log(event, default_ms, now_ms)
            if epoch_ms is None:
                return None
            doc_id = log_doc_id(topic, partition, offset, array_index)
            error_log = event.level in ERROR_LEVELS
        index_key, action_start = self._index(kind, epoch_ms)
        doc = self._encoder.encode(event)  # b'{"timestamp":...': the structs' first field, stored as @timestamp
        line = b"".join((action_start, doc_id.encode(), b'"}}\n{"@', doc[2:], b"\n"))
        return Entry(line, kind, array_index, error_log, index_key, event, epoch_ms)

    def _general(self, kind: int, topic: str, partition: int, offset: int, value: bytes,
                 default_ms: int, now_ms: int) -> Decoded:
        out = Decoded([], [])
        try:
            parsed = self._decode(value)
        except NOT_JSON as exc:
            out.rejects.append(Reject("not_json", str(exc)))
            return out
        if isinstance(parsed, dict):
            self._event(out, kind, topic, partition, offset, parsed, None, default_ms, now_ms)
        elif isinstance(parsed, list):
            for i, element in enumerate(parsed):
                if isinstance(element, dict):
                    self._event(out, kind, topic, partition, offset, element, i, default_ms, now_ms)
                else:
                    out.rejects.append(Reject("not_an_object", f"expected an object, got {type(element).__name__}"
                                              f" - at `$[{i}]`", i, self._encoder.encode(element)))
        else:
            out.rejects.append(Reject("not_an_object",
                                      f"expected a JSON object or array, got {type(parsed).__name__}"))
        return out

    def _otlp_request(self, topic: str, partition: int, offset: int, value: bytes, default_ms: int,
                      now_ms: int) -> Decoded:
        out = Decoded([], [])
        try:
            converted = self._otlp[topic][1](value, otlp.sniff(value), self._default_environment)
        except otlp.Undecodable as exc:
            out.rejects.append(Reject("not_otlp", str(exc)))
            return out
        for i, span in enumerate(converted.spans):
            self._event(out, SPAN, topic, partition, offset, span, i, default_ms, now_ms)
        first_log = len(converted.spans)  # log ids: (topic, partition, offset, position in the request)
        for i, event in enumerate(converted.logs):
            self._event(out, LOG, topic, partition, offset, event, first_log + i, default_ms, now_ms)
        if converted.rejected:
            out.rejects.append(Reject("otlp_item", f"{converted.rejected} items not converted: "
                                                   + "; ".join(converted.reasons)))
        return out

    def _event(self, out: Decoded, kind: int, topic: str, partition: int, offset: int, event: dict[str, Any],
               array_index: int | None, default_ms: int, now_ms: int) -> None:
        """An event as a dict: an element of a record outside the stored shape, or a converted OTLP event. Its
        unknown top-level keys go under its labels, as the general path puts them; if it then fits the stored shape
        it is completed as a clean event is (an OTLP event mostly does: ``common.otlp`` keeps within the contract's
        bounds). The others (a lax value, an environment not seen yet, a name to trim) take the general path, which
        yields the same document or the reason. Takes the arguments of ``_untyped``."""
        entry = None
        dropped = 0
        if self._stored_path:
            known, extra = partition_keys(event, SPAN_FIELDS if kind == SPAN else LOG_FIELDS)
            try:
                if extra is not None:
                    known["labels"], dropped = refine_labels(known.get("labels"), extra)
                stored = msgspec.convert(known, self._stored_types[kind])
            except (Invalid, msgspec.ValidationError):
                stored = None
            if stored is not None:
                entry = self._stored_entry(kind, topic, partition, offset, stored, array_index, default_ms, now_ms)
        if entry is None:
            self._untyped(out, kind, topic, partition, offset, event, array_index, default_ms, now_ms)
        else:
            out.add(entry)
            out.dropped_keys += dropped

    def _untyped(self, out: Decoded, kind: int, topic: str, partition: int, offset: int, event: dict[str, Any],
                 array_index: int | None, default_ms: int, now_ms: int) -> None:
        try:
            if kind == SPAN:
                typed, extra = split(event, SpanEvent)
                refined = self._refiner.span_event(typed, extra, default_ms, now_ms)
                span = refined.doc
                assert isinstance(span, SpanDoc)
                doc_id = span_doc_id(span.trace_id, span.span_id)
                error_log = False
            else:
                typed, extra = split(event, LogEvent)
                refined = self._refiner.log_event(typed, extra, default_ms, now_ms)
                doc_id = log_doc_id(topic, partition, offset, array_index)
                error_log = refined.doc.level in ERROR_LEVELS  # type: ignore[union-attr]
        except Invalid as exc:
            detail = str(exc) if array_index is None else str(exc).replace("`$.", f"`$[{array_index}].")
            encoded = self._encoder.encode(event) if array_index is not None else None
            out.rejects.append(Reject("validation", detail, array_index, encoded))
            return
        out.dropped_keys += refined.dropped_keys
        index_key, action_start = self._index(kind, refined.epoch_ms)
        line = action_start + doc_id.encode() + b'"}}\n' + self._encoder.encode(refined.doc) + b"\n"
        out.add(Entry(line, kind, array_index, error_log, index_key, refined.doc, refined.epoch_ms))
