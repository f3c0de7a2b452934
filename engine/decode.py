"""Decode step: one Kafka record -> encoded bulk entries and rejects. Pure: no I/O, never raises.

A record is a JSON object or an array of objects. Every element is refined on its own; an invalid
element is a reject (bound for the dead-letter topic) while its siblings are kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from common.indices import LOGS, TRACES, IndexNames
from common.normalize import Invalid, Refined, Refiner
from common.schema import ERROR_LEVELS, LogDoc, SpanDoc
from engine.batch import LOG, SPAN

_DAY_MS = 86_400_000


@dataclass(slots=True)
class Entry:
    action: bytes
    doc: bytes
    kind: int
    array_index: int | None
    error_log: bool
    index_kind: str  # LOGS or TRACES
    index: str
    refined: Refined


@dataclass(slots=True)
class Reject:
    reason: str
    detail: str
    array_index: int | None = None
    element: bytes | None = None  # the offending array element, re-encoded


@dataclass(slots=True)
class Decoded:
    entries: list[Entry]
    rejects: list[Reject]
    dropped_keys: int = 0

    @property
    def size(self) -> int:
        return sum(len(e.action) + len(e.doc) + 1 for e in self.entries)


def span_doc_id(trace_id: str, span_id: str) -> str:
    """A span's id from (trace_id, span_id): a producer's retry or a replay never duplicates it."""
    return hashlib.blake2b(f"{trace_id}\x00{span_id}".encode(), digest_size=16).hexdigest()


def log_doc_id(topic: str, partition: int, offset: int, array_index: int | None) -> str:
    base = f"{topic}-{partition}-{offset}"
    return base if array_index is None else f"{base}-{array_index}"


class RecordDecoder:
    """Built once per worker process: holds the msgspec codecs and the refiner's caches."""

    def __init__(self, names: IndexNames, log_topic: str, span_topic: str, max_bytes: int) -> None:
        self._decode = msgspec.json.Decoder().decode
        self._encoder = msgspec.json.Encoder()
        self._refiner = Refiner()
        self._names = names
        self._log_topic = log_topic
        self._span_topic = span_topic
        self._max_bytes = max_bytes
        self._index_cache: dict[tuple[int, int], str] = {}

    def kind_of(self, topic: str) -> int:
        return SPAN if topic == self._span_topic else LOG

    def _index(self, kind: int, epoch_ms: int) -> str:
        key = (kind, epoch_ms // _DAY_MS)
        name = self._index_cache.get(key)
        if name is None:
            name = self._names.daily(TRACES if kind == SPAN else LOGS, epoch_ms)
            self._index_cache[key] = name
        return name

    def decode(self, topic: str, partition: int, offset: int, value: bytes | None,
               default_ms: int, now_ms: int) -> Decoded:
        if value is None:
            return Decoded([], [Reject("empty_value", "the record has no value")])
        if len(value) > self._max_bytes:
            return Decoded([], [Reject("too_large", f"{len(value)} bytes > ENGINE_MAX_MESSAGE_BYTES "
                                                    f"({self._max_bytes})")])
        try:
            parsed = self._decode(value)
        except msgspec.DecodeError as exc:
            return Decoded([], [Reject("not_json", str(exc))])
        kind = self.kind_of(topic)
        if isinstance(parsed, dict):
            return self._one(kind, topic, partition, offset, parsed, None, default_ms, now_ms)
        if isinstance(parsed, list):
            return self._many(kind, topic, partition, offset, parsed, default_ms, now_ms)
        return Decoded([], [Reject("not_an_object",
                                   f"expected a JSON object or array, got {type(parsed).__name__}")])

    def _many(self, kind: int, topic: str, partition: int, offset: int, elements: list[Any],
              default_ms: int, now_ms: int) -> Decoded:
        out = Decoded([], [])
        for i, element in enumerate(elements):
            if not isinstance(element, dict):
                out.rejects.append(Reject("not_an_object", f"expected an object, got {type(element).__name__}"
                                          f" - at `$[{i}]`", i, self._encoder.encode(element)))
                continue
            one = self._one(kind, topic, partition, offset, element, i, default_ms, now_ms)
            out.entries.extend(one.entries)
            out.rejects.extend(one.rejects)
            out.dropped_keys += one.dropped_keys
        return out

    def _one(self, kind: int, topic: str, partition: int, offset: int, event: dict[str, Any],
             array_index: int | None, default_ms: int, now_ms: int) -> Decoded:
        try:
            if kind == SPAN:
                refined = self._refiner.span(event, default_ms, now_ms)
            else:
                refined = self._refiner.log(event, default_ms, now_ms)
        except Invalid as exc:
            detail = str(exc) if array_index is None else str(exc).replace("`$.", f"`$[{array_index}].")
            element = self._encoder.encode(event) if array_index is not None else None
            return Decoded([], [Reject("validation", detail, array_index, element)])
        doc = refined.doc
        index = self._index(kind, refined.epoch_ms)
        if isinstance(doc, SpanDoc):
            doc_id = span_doc_id(doc.trace_id, doc.span_id)
            error_log = False
        else:
            assert isinstance(doc, LogDoc)
            doc_id = log_doc_id(topic, partition, offset, array_index)
            error_log = doc.level in ERROR_LEVELS
        action = b'{"create":{"_index":"%s","_id":"%s"}}\n' % (index.encode(), doc_id.encode())
        entry = Entry(action, self._encoder.encode(doc), kind, array_index, error_log,
                      TRACES if kind == SPAN else LOGS, index, refined)
        return Decoded([entry], [], refined.dropped_keys)
