"""RollupCell and rollup documents: adding, merging, the stored form and its ids."""

from __future__ import annotations

import math

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from panopticon.common.histogram import Histogram
from panopticon.common.indices import IndexNames
from panopticon.common.rollup import (
    SCOPE_ENDPOINT,
    SCOPE_SERVICE,
    TIER_1H,
    TIER_1M,
    RollupCell,
    RollupKey,
    rollup_id,
    window_start,
)
from panopticon.common.schema import RollupDoc

spans = st.lists(st.tuples(st.floats(min_value=0.0, max_value=1e7, allow_nan=False), st.booleans()), max_size=40)
KEY = RollupKey(TIER_1M, 1_773_093_600_000, "checkout", "production", SCOPE_ENDPOINT, "GET /api/orders/{id}",
                "apm.spans:3")


def _cell(items: list[tuple[float, bool]]) -> RollupCell:
    cell = RollupCell()
    for duration, error in items:
        cell.add(duration, error)
    return cell


def _numbers(cell: RollupCell) -> tuple[int, int, float, float, Histogram]:
    return cell.request_count, cell.error_count, cell.duration_min, cell.duration_max, cell.histogram


@given(spans, spans)
def test_merge_equals_adding_everything(a: list[tuple[float, bool]], b: list[tuple[float, bool]]) -> None:
    merged = _cell(a)
    merged.merge(_cell(b))
    together = _cell(a + b)
    assert _numbers(merged) == _numbers(together)
    assert math.isclose(merged.duration_sum, together.duration_sum, rel_tol=1e-9, abs_tol=1e-9)


@given(spans)
def test_document_round_trip(items: list[tuple[float, bool]]) -> None:
    cell = _cell(items)
    encoded = msgspec.json.encode(cell.to_doc(KEY, KEY.window_start_ms + 65_000))
    doc = msgspec.json.decode(encoded, type=RollupDoc)
    back = RollupCell.from_doc(doc)
    assert _numbers(back) == _numbers(cell) and back.duration_sum == cell.duration_sum
    assert doc.rollup_id == KEY.doc_id() and doc.partition == "apm.spans:3"


def test_document_fields() -> None:
    cell = _cell([(12.5, False), (100.0, True)])
    doc = msgspec.to_builtins(cell.to_doc(KEY, KEY.window_start_ms + 65_000))
    assert doc["@timestamp"] == "2026-03-09T22:00:00.000Z" and doc["written_at"] == "2026-03-09T22:01:05.000Z"
    assert (doc["request_count"], doc["error_count"], doc["duration_sum"]) == (2, 1, 112.5)
    assert (doc["duration_min"], doc["duration_max"], doc["scope"]) == (12.5, 100.0, SCOPE_ENDPOINT)
    assert len(doc["hist_index"]) == len(doc["hist_count"]) == 2 and sum(doc["hist_count"]) == 2
    empty = RollupCell().to_doc(KEY, 0)
    assert (empty.duration_min, empty.duration_max, empty.hist_index) == (0.0, 0.0, [])
    assert KEY.index_name(IndexNames("p-")) == "p-metrics-apm-1m-2026.03.09"


def test_ids_are_deterministic_and_distinct() -> None:
    assert KEY.doc_id() == rollup_id(*KEY) and len(KEY.doc_id()) == 32
    variants = {KEY, KEY._replace(segment="1"), KEY._replace(partition=""), KEY._replace(tier=TIER_1H),
                KEY._replace(scope=SCOPE_SERVICE, endpoint=""), KEY._replace(window_start_ms=0),
                KEY._replace(service="checkou", environment="tproduction")}
    assert len({key.doc_id() for key in variants}) == len(variants)


def test_window_start() -> None:
    assert window_start(1_773_093_659_999, TIER_1M) == 1_773_093_600_000
    assert window_start(1_773_097_199_999, TIER_1H) == 1_773_093_600_000


def test_error_rate_and_average() -> None:
    cell = _cell([(1.0, True), (2.0, False), (3.0, False)])
    assert cell.error_rate == 0.3333 and cell.avg_ms == 2.0
    assert RollupCell().error_rate == 0.0 and RollupCell().percentiles() == [0.0] * 4
    assert cell.percentiles((0, 100)) == [1.0, 3.0]
