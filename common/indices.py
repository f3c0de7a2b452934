"""Index names, mappings and templates; daily index creation and retention.

Daily indices are named from the event's UTC date, so a replayed record lands in the same index.
The index templates give any daily index its mapping when a write creates it; the engine also creates each
daily index explicitly before its first write, which keeps working on clusters that forbid
``action.auto_create_index`` and when a template was deleted.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from panopticon.common.settings import Settings

log = logging.getLogger(__name__)

LOGS, TRACES, METRICS_1M, METRICS_1H = "logs-apm", "traces-apm", "metrics-apm-1m", "metrics-apm-1h"
_DAY_MS = 86_400_000

_KEYWORD, _DATE = {"type": "keyword"}, {"type": "date"}
# Label values are keywords. A dotted key ("k8s.pod.name", OpenTelemetry's "exception.type") is expanded into
# objects by the search cluster: those stay objects (first template), their leaves keywords. A key that is a leaf
# in one document and a prefix in another ("a" and "a.b") is a mapping conflict: that document is dead-lettered.
_LABELS_TEMPLATE = [
    {"labels_objects": {"path_match": "labels.*", "match_mapping_type": "object", "mapping": {"type": "object"}}},
    {"labels_as_keyword": {"path_match": "labels.*", "mapping": {"type": "keyword", "ignore_above": 1024}}},
]
# The fields of common.schema's documents (tests/test_indices.py holds each mapping to its Struct).
_COMMON = {
    **dict.fromkeys(("type", "service_name", "environment", "trace_id", "span_id", "http_method", "http_path"),
                    _KEYWORD),
    "@timestamp": _DATE,
    "ingested_at": _DATE,
    "timestamp_defaulted": {"type": "boolean"},
    "http_status_code": {"type": "integer"},
    "labels": {"type": "object", "dynamic": True},
}
LOG_MAPPING: dict[str, Any] = {
    "dynamic_templates": _LABELS_TEMPLATE,
    "properties": {**_COMMON, "level": _KEYWORD, "message": {"type": "text"}},
}
SPAN_MAPPING: dict[str, Any] = {
    "dynamic_templates": _LABELS_TEMPLATE,
    "properties": {
        **_COMMON,
        **dict.fromkeys(("parent_span_id", "name", "kind", "status"), _KEYWORD),
        "duration_ms": {"type": "double"},
    },
}
ROLLUP_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        # rollup_id is the document id again: a unique tie-breaker for search_after paging
        **dict.fromkeys(("service_name", "environment", "endpoint", "scope", "partition", "rollup_id"), _KEYWORD),
        "@timestamp": _DATE,
        "written_at": _DATE,
        **dict.fromkeys(("request_count", "error_count"), {"type": "long"}),
        **dict.fromkeys(("duration_sum", "duration_min", "duration_max"), {"type": "double"}),
        "hist_index": {"type": "integer", "index": False},
        "hist_count": {"type": "long", "index": False},
    },
}
MAPPINGS = {LOGS: LOG_MAPPING, TRACES: SPAN_MAPPING, METRICS_1M: ROLLUP_MAPPING, METRICS_1H: ROLLUP_MAPPING}


def day_suffix(epoch_ms: int) -> str:
    return time.strftime("%Y.%m.%d", time.gmtime(epoch_ms // 1000))


@dataclass(frozen=True)
class IndexNames:
    prefix: str = ""

    def base(self, kind: str) -> str:
        return f"{self.prefix}{kind}"

    def daily(self, kind: str, epoch_ms: int) -> str:
        return f"{self.prefix}{kind}-{day_suffix(epoch_ms)}"

    def pattern(self, kind: str) -> str:
        return f"{self.prefix}{kind}-*"

    def days(self, kind: str, from_ms: int, to_ms: int) -> list[str]:
        """The daily indices that can hold [from_ms, to_ms)."""
        first, last = from_ms // _DAY_MS, max(from_ms, to_ms - 1) // _DAY_MS
        return [self.daily(kind, day * _DAY_MS) for day in range(first, last + 1)]


def index_settings() -> dict[str, Any]:
    return {"number_of_shards": 1, "refresh_interval": "1s"}


def install_templates(client: Any, names: IndexNames) -> None:
    """Install one index template per data kind (idempotent: put overwrites)."""
    for kind, mapping in MAPPINGS.items():
        body = {
            "index_patterns": [names.pattern(kind)],
            "priority": 200,
            "template": {"settings": index_settings(), "mappings": mapping},
        }
        client.indices.put_index_template(name=names.base(kind), body=body)


class IndexCreator:
    """Creates each daily index with its mappings before its first write; remembers what exists."""

    def __init__(self, client: Any, names: IndexNames) -> None:
        self._client = client
        self._names = names
        self._known: set[str] = set()

    def ensure(self, kind: str, index: str) -> None:
        if index in self._known:
            return
        body = {"settings": index_settings(), "mappings": MAPPINGS[kind]}
        try:
            self._client.indices.create(index=index, body=body)
        except Exception as exc:  # already exists is success; anything else propagates
            if "resource_already_exists" not in str(exc) and "already exists" not in str(exc):
                raise
        self._known.add(index)

    def forget(self, indices: Iterable[str]) -> None:
        self._known.difference_update(indices)


def expired_indices(existing: Iterable[str], names: IndexNames, settings: Settings, now_ms: int) -> list[str]:
    """Daily indices older than their kind's retention."""
    keep_days = {
        LOGS: settings.retention_logs_days,
        TRACES: settings.retention_traces_days,
        METRICS_1M: settings.retention_metrics_days,
        METRICS_1H: settings.retention_metrics_hourly_days,
    }
    expired = []
    for index in existing:
        for kind, days in keep_days.items():
            head = f"{names.base(kind)}-"
            suffix = index[len(head):] if index.startswith(head) else ""
            if len(suffix) != 10:
                continue
            try:
                day_ms = calendar.timegm(time.strptime(suffix, "%Y.%m.%d")) * 1000
            except ValueError:
                continue
            if day_ms + _DAY_MS <= now_ms - days * _DAY_MS:
                expired.append(index)
    return expired


def apply_retention(client: Any, names: IndexNames, settings: Settings, now_ms: int) -> list[str]:
    existing = list(client.indices.get(index=f"{names.prefix}*-apm*").keys())
    expired = expired_indices(existing, names, settings, now_ms)
    for index in expired:
        client.indices.delete(index=index)
        log.info("retention: deleted index %s", index)
    return expired
