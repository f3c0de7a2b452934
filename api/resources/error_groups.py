"""ERROR logs of a service grouped by fingerprint: the message with numbers, hex ids and UUIDs masked.

The engine stores no fingerprint, so no aggregation can group by one: the route reads the newest
``MAX_SCANNED`` (5,000) ERROR/FATAL logs of the range, only the fields it needs, and groups them here.
When the range holds more, ``truncated`` is true and the counts cover the newest ``scanned`` logs only.
"""

from __future__ import annotations

import re
from typing import Any

import falcon

from panopticon.api import params as p
from panopticon.api import queries as q
from panopticon.api.items import ErrorGroup, ErrorGroups
from panopticon.api.params import TimeRange
from panopticon.api.resources.base import Resource
from panopticon.api.resources.red_routes import ENVIRONMENT
from panopticon.common.indices import LOGS
from panopticon.common.schema import ERROR_LEVELS

MAX_SCANNED = 5_000
MAX_FINGERPRINT = 512
_MASKS = (
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<num>"),
    (re.compile(r"\s+"), " "),
)
_FIELDS = ["@timestamp", "message", "trace_id"]


def fingerprint(message: str) -> str:
    """The message with its variable parts masked: UUIDs, hex ids (0x.. or 8+ hex digits), then numbers."""
    text = message
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text.strip()[:MAX_FINGERPRINT]


def group_errors(logs: list[dict[str, Any]]) -> list[ErrorGroup]:
    """Groups logs given newest first; most frequent group first, then most recent."""
    groups: dict[str, ErrorGroup] = {}
    for log in logs:
        message, stamp = str(log.get("message", "")), str(log.get("@timestamp", ""))
        key = fingerprint(message)
        group = groups.get(key)
        if group is None:
            groups[key] = ErrorGroup(fingerprint=key, sample_message=message, count=1, first_seen=stamp,
                                     last_seen=stamp, last_trace_id=log.get("trace_id"))
            continue
        group.count += 1
        group.first_seen = stamp
        if group.last_trace_id is None:
            group.last_trace_id = log.get("trace_id")
    ordered = sorted(groups.values(), key=lambda g: g.last_seen, reverse=True)
    ordered.sort(key=lambda g: -g.count)  # stable: equal counts stay most recent first
    return ordered


class ErrorGroupsResource(Resource):
    SUMMARY = "ERROR and FATAL logs of a service grouped by normalized message, most frequent first."
    RESPONSE = ErrorGroups
    TIMES = p.Times(window_ms=60 * 60_000)
    LIMIT = p.Int("limit", "Most groups answered.", default=50, minimum=1, maximum=1000)
    PARAMS = (TIMES, ENVIRONMENT, LIMIT)

    def on_get(self, req: falcon.Request, resp: falcon.Response, service: str) -> None:
        window = self.TIMES.parse(req, self.deps.now_ms())
        env, limit = ENVIRONMENT.parse(req), self.LIMIT.parse(req)
        resp.media = self.cached(req, window, lambda: self.answer(service, window, env, limit))

    def answer(self, service: str, window: TimeRange, env: str | None, limit: int) -> ErrorGroups:
        levels = {"terms": {"level": sorted(ERROR_LEVELS)}}
        query = q.filtered(window, levels, service_name=service, environment=env)
        body = q.page_body(query, [{"@timestamp": {"order": "desc"}}], 1, MAX_SCANNED, source=_FIELDS)
        answer = self.deps.search.search(LOGS, window, body)
        logs = q.hits(answer)
        return ErrorGroups(service_name=service, environment=env, from_=window.from_iso, to=window.to_iso,
                           scanned=len(logs), truncated=q.total(answer) > len(logs),
                           groups=group_errors(logs)[:limit])
