"""RED cells of raw SERVER spans, bucketed by the search server on the rollup histogram grid.

The ``range`` aggregation over hundreds of bounds is slow, and a ``filter`` under a ``date_histogram``
too, so the request has, next to one ``date_histogram`` for count / errors / sum / min / max, one
``filter`` per latency octave of the observed min..max band, each holding a ``date_histogram`` of
``histogram(interval = 2**k / 64)``. Those intervals are exact binary floats, so the server's histogram keys
are the grid's lower bounds (``common.histogram.grid_index``): the counts equal what ``RollupCell.add``
would have counted for the same spans.
"""

from __future__ import annotations

from typing import Any

from panopticon.common.histogram import (
    HIGH_MS,
    LOW_MS,
    OCTAVE_MIN,
    OVERFLOW,
    SUB_BUCKETS,
    UNDERFLOW,
    grid_index,
    octave_range,
    octaves_between,
)
from panopticon.common.rollup import RollupCell

_OCTAVE = "oct"


def fixed_interval(interval_ms: int) -> str:
    return f"{interval_ms // 1000}s" if interval_ms % 1000 == 0 else f"{interval_ms}ms"


def span_histogram_aggs(low_ms: float, high_ms: float, interval_ms: int) -> dict[str, Any]:
    """Aggregations giving per time bucket: count, errors, duration sum/min/max and the latency histogram."""
    times = {"field": "@timestamp", "fixed_interval": fixed_interval(interval_ms), "min_doc_count": 1}
    duration = {"field": "duration_ms"}
    aggs: dict[str, Any] = {"t": {"date_histogram": times, "aggs": {
        "status": {"terms": {"field": "status", "size": 10}},
        "sum": {"sum": duration}, "min": {"min": duration}, "max": {"max": duration}}}}
    for octave in octaves_between(low_ms, high_ms):
        gte, lt = octave_range(octave)
        histogram = {"histogram": {**duration, "interval": 2.0**octave / SUB_BUCKETS, "min_doc_count": 1}}
        aggs[f"{_OCTAVE}{octave - OCTAVE_MIN}"] = {
            "filter": {"range": {"duration_ms": {"gte": gte, "lt": lt}}},
            "aggs": {"t": {"date_histogram": times, "aggs": {"h": histogram}}}}
    if low_ms < LOW_MS:
        aggs["under"] = {"filter": {"range": {"duration_ms": {"lt": LOW_MS}}},
                         "aggs": {"t": {"date_histogram": times}}}
    if high_ms > HIGH_MS:
        aggs["over"] = {"filter": {"range": {"duration_ms": {"gt": HIGH_MS}}},
                        "aggs": {"t": {"date_histogram": times}}}
    return aggs


class SpanBuckets:
    """The answer of ``span_histogram_aggs`` turned into one ``RollupCell`` per time bucket start."""

    def __init__(self) -> None:
        self.cells: dict[int, RollupCell] = {}
        self.bucket_count = 0

    @classmethod
    def read(cls, aggregations: dict[str, Any]) -> SpanBuckets:
        out = cls()
        for bucket in aggregations["t"]["buckets"]:
            out._totals(bucket)
        for name, agg in aggregations.items():
            if name.startswith(_OCTAVE):
                out._octave(int(name[len(_OCTAVE):]) + OCTAVE_MIN, agg)
        out._edge(UNDERFLOW, aggregations.get("under"))
        out._edge(OVERFLOW, aggregations.get("over"))
        return out

    def _cell(self, start_ms: int) -> RollupCell:
        cell = self.cells.get(start_ms)
        if cell is None:
            cell = self.cells[start_ms] = RollupCell()
        return cell

    def _totals(self, bucket: dict[str, Any]) -> None:
        self.bucket_count += 1
        cell = self._cell(int(bucket["key"]))
        cell.request_count = int(bucket["doc_count"])
        statuses = {b["key"]: int(b["doc_count"]) for b in bucket["status"]["buckets"]}
        cell.error_count = statuses.get("ERROR", 0)
        cell.duration_sum = float(bucket["sum"]["value"] or 0.0)
        cell.duration_min = float(bucket["min"]["value"])
        cell.duration_max = float(bucket["max"]["value"])

    def _octave(self, octave: int, agg: dict[str, Any]) -> None:
        for time_bucket in agg["t"]["buckets"]:
            histogram = self._cell(int(time_bucket["key"])).histogram
            for bucket in time_bucket["h"]["buckets"]:
                self.bucket_count += 1
                histogram.add_bucket(grid_index(octave, float(bucket["key"])), int(bucket["doc_count"]))

    def _edge(self, index: int, agg: dict[str, Any] | None) -> None:
        for time_bucket in (agg or {}).get("t", {}).get("buckets", []):
            self.bucket_count += 1
            self._cell(int(time_bucket["key"])).histogram.add_bucket(index, int(time_bucket["doc_count"]))
