"""RED rollups: per-window cells (count, errors, duration sum/min/max, latency histogram) and their documents.

A cell is keyed by (tier, window start, service, environment, scope, endpoint, partition, segment):

- tier ``1m`` windows are written by the engine, one document per source partition (``"apm.spans:3"``), and
  ``segment`` tells apart the delta documents a partition writes for a window it already flushed (late data);
- tier ``1h`` windows are derived by ``engine.compactor`` from closed 1-minute documents, partition ``""``;
- scope ``endpoint`` has the SERVER span name in ``endpoint``; scope ``service`` is the per-service total
  (``endpoint == ""``). Every SERVER span is added to one cell of each scope.

Readers sum every document of a window (all partitions, all segments): cells only ever add up.
"""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import msgspec

from panopticon.common.clock import format_timestamp
from panopticon.common.histogram import Histogram, bucket_index, percentiles
from panopticon.common.indices import METRICS_1H, METRICS_1M, IndexNames
from panopticon.common.schema import RollupDoc

TIER_1M, TIER_1H = "1m", "1h"
TIER_MS = {TIER_1M: 60_000, TIER_1H: 3_600_000}
TIER_KIND = {TIER_1M: METRICS_1M, TIER_1H: METRICS_1H}
SCOPE_ENDPOINT, SCOPE_SERVICE = "endpoint", "service"
SCOPE_EDGE = "edge"  # service map: service_name calls endpoint (a service, a virtual node, or "" when unknown)
# A 1-hour document saying "this hour was compacted from its 1-minute documents" (see engine.compactor).
SCOPE_HOUR_MARKER = "hour-compacted"
CellKey = tuple[str, str, str, str]  # (scope, service, environment, endpoint): a plain tuple, built per span


def window_start(epoch_ms: int, tier: str) -> int:
    size = TIER_MS[tier]
    return epoch_ms - epoch_ms % size


def rollup_id(tier: str, window_start_ms: int, service: str, environment: str, scope: str, endpoint: str,
              partition: str, segment: str = "") -> str:
    """Deterministic document id of a rollup key: a replayed or recomputed window overwrites itself."""
    key = msgspec.json.encode([tier, window_start_ms, service, environment, scope, endpoint, partition, segment])
    return hashlib.blake2b(key, digest_size=16).hexdigest()


class RollupKey(NamedTuple):
    tier: str
    window_start_ms: int
    service: str
    environment: str
    scope: str
    endpoint: str
    partition: str = ""
    segment: str = ""

    def doc_id(self) -> str:
        return rollup_id(*self)

    def index_name(self, names: IndexNames) -> str:
        return names.daily(TIER_KIND[self.tier], self.window_start_ms)


def hour_marker_key(hour_ms: int) -> RollupKey:
    return RollupKey(TIER_1H, hour_ms, "", "", SCOPE_HOUR_MARKER, "")


def cell_key(doc: RollupDoc) -> CellKey:
    return doc.scope, doc.service_name, doc.environment, doc.endpoint


class RollupCell:
    """RED numbers of one window and key; ``add`` is the per-span hot path."""

    __slots__ = ("request_count", "error_count", "duration_sum", "duration_min", "duration_max", "histogram")

    def __init__(self) -> None:
        self.request_count = 0
        self.error_count = 0
        self.duration_sum = 0.0
        self.duration_min = math.inf
        self.duration_max = -math.inf
        self.histogram = Histogram()

    def add(self, duration_ms: float, is_error: bool) -> None:
        self.request_count += 1
        if is_error:
            self.error_count += 1
        self.duration_sum += duration_ms
        if duration_ms < self.duration_min:
            self.duration_min = duration_ms
        if duration_ms > self.duration_max:
            self.duration_max = duration_ms
        counts = self.histogram.counts
        index = bucket_index(duration_ms)
        counts[index] = counts.get(index, 0) + 1

    def copy(self) -> RollupCell:
        """A copy to merge into (``dict`` copies the histogram at C speed)."""
        out = RollupCell()
        out.request_count, out.error_count, out.duration_sum = self.request_count, self.error_count, self.duration_sum
        out.duration_min, out.duration_max = self.duration_min, self.duration_max
        out.histogram.counts = dict(self.histogram.counts)
        return out

    def merge(self, other: RollupCell) -> None:
        """Add the other cell's numbers into this one."""
        self.request_count += other.request_count
        self.error_count += other.error_count
        self.duration_sum += other.duration_sum
        self.duration_min = min(self.duration_min, other.duration_min)
        self.duration_max = max(self.duration_max, other.duration_max)
        self.histogram.merge(other.histogram)

    @property
    def avg_ms(self) -> float:
        return self.duration_sum / self.request_count if self.request_count else 0.0

    @property
    def error_rate(self) -> float:
        """Errors / requests, 4 decimals; 0 when there are no requests."""
        return round(self.error_count / self.request_count, 4) if self.request_count else 0.0

    def percentiles(self, ps: tuple[float, ...] = (50, 90, 95, 99)) -> list[float]:
        """Nearest-rank estimates within 1 % (``common.histogram``), clamped to the cell's min..max."""
        if not self.request_count:
            return [0.0 for _ in ps]
        return percentiles(self.histogram, ps, self.duration_min, self.duration_max)

    def to_doc(self, key: RollupKey, written_at_ms: int) -> RollupDoc:
        hist_index, hist_count = self.histogram.to_sparse()
        empty = not self.request_count
        return RollupDoc(
            timestamp=format_timestamp(key.window_start_ms),
            written_at=format_timestamp(written_at_ms),
            service_name=key.service,
            environment=key.environment,
            endpoint=key.endpoint,
            scope=key.scope,
            partition=key.partition,
            rollup_id=key.doc_id(),
            request_count=self.request_count,
            error_count=self.error_count,
            duration_sum=self.duration_sum,
            duration_min=0.0 if empty else self.duration_min,
            duration_max=0.0 if empty else self.duration_max,
            hist_index=hist_index,
            hist_count=hist_count,
        )

    @classmethod
    def from_doc(cls, doc: RollupDoc) -> RollupCell:
        cell = cls()
        cell.request_count = doc.request_count
        cell.error_count = doc.error_count
        cell.duration_sum = doc.duration_sum
        if doc.request_count:
            cell.duration_min = doc.duration_min
            cell.duration_max = doc.duration_max
        cell.histogram = Histogram.from_sparse(doc.hist_index, doc.hist_count)
        return cell

    def __repr__(self) -> str:
        return (f"RollupCell(n={self.request_count}, errors={self.error_count}, sum={self.duration_sum:.3f}, "
                f"min={self.duration_min}, max={self.duration_max}, buckets={len(self.histogram.counts)})")
