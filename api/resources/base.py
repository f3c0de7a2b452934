"""What every resource shares: injected dependencies, HEAD = GET, and the cache key of a sliding question."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import falcon

from panopticon.api.cache import ResponseCache
from panopticon.api.params import TimeRange
from panopticon.api.red import RedSource
from panopticon.api.search import Search
from panopticon.api.service_map import ServiceMapSource


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Deps:
    search: Search
    red: RedSource
    service_map: ServiceMapSource
    cache: ResponseCache
    now_ms: Callable[[], int] = field(default=wall_clock_ms)


class Resource:
    """Base of the data routes. ``PARAMS`` documents (and parses) the query parameters."""

    PARAMS: ClassVar[tuple[Any, ...]] = ()
    SUMMARY: ClassVar[str] = ""
    RESPONSE: ClassVar[Any] = None

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_head(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        self.on_get(req, resp, **params)  # type: ignore[attr-defined]  # every route defines on_get

    def cache_key(self, req: falcon.Request, window: TimeRange) -> Hashable | None:
        """Only sliding questions are cached: an explicit past range is cheap to ask again and rarely repeated."""
        if not window.sliding:
            return None
        others = tuple(sorted((k, str(v)) for k, v in req.params.items() if k not in ("from", "to")))
        return (type(self).__name__, req.path, others, window.from_ms, window.to_ms)

    def cached(self, req: falcon.Request, window: TimeRange, compute: Callable[[], Any]) -> Any:
        return self.deps.cache.through(self.cache_key(req, window), compute)
