"""The one door to the search cluster: bounded time, only daily indices of the range, errors translated.

Every call carries ``request_timeout``; a refused connection, a timeout or an overloaded cluster becomes
``SearchUnavailable`` (503). Any other refusal (a query the cluster rejects) is logged with its detail and
surfaces as a generic internal error: the client never sees the DSL or the cluster's message.
"""

from __future__ import annotations

import logging
from typing import Any

from panopticon.api.errors import ApiError, SearchUnavailable
from panopticon.api.metrics import count_search
from panopticon.api.params import TimeRange
from panopticon.common.indices import IndexNames

log = logging.getLogger(__name__)

_UNAVAILABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_INDICES_PER_REQUEST = 64


class SearchFailed(ApiError):
    """The cluster refused a query we built: our bug, reported without its detail."""


class Search:
    def __init__(self, client: Any, names: IndexNames, timeout_s: float) -> None:
        self._client = client
        self._names = names
        self._timeout_s = timeout_s

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def client(self) -> Any:
        return self._client

    @property
    def names(self) -> IndexNames:
        return self._names

    def indices(self, kind: str, window: TimeRange | None) -> str:
        """The daily indices that can hold the range (missing ones are ignored), or the kind's pattern."""
        if window is None:
            return self._names.pattern(kind)
        days = self._names.days(kind, window.from_ms, window.to_ms)
        return ",".join(days) if len(days) <= MAX_INDICES_PER_REQUEST else self._names.pattern(kind)

    def search(self, kind: str, window: TimeRange | None, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.call(
            self._client.search, index=self.indices(kind, window), body=body, ignore_unavailable=True,
            allow_no_indices=True, request_timeout=self._timeout_s,
        )
        count_search(1, len(answer.get("hits", {}).get("hits", ())))
        return answer

    def count(self, kind: str, window: TimeRange | None, query: dict[str, Any]) -> int:
        answer = self.call(
            self._client.count, index=self.indices(kind, window), body={"query": query},
            ignore_unavailable=True, allow_no_indices=True, request_timeout=self._timeout_s,
        )
        count_search(1, 0)
        return int(answer.get("count", 0))

    def ping(self) -> dict[str, Any]:
        """The cluster's name and version; raises SearchUnavailable when it does not answer."""
        info = self.call(self._client.info, request_timeout=min(self._timeout_s, 5.0))
        version = info.get("version", {}) if isinstance(info, dict) else {}
        return {"cluster_name": info.get("cluster_name"), "version": version.get("number")}

    def call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one search-side call (ours or a reader's), translating its failures for the client."""
        from opensearchpy.exceptions import ConnectionError as SearchConnectionError
        from opensearchpy.exceptions import TransportError

        try:
            return method(*args, **kwargs)
        except (SearchConnectionError, TimeoutError) as exc:  # ConnectionTimeout, a reader's deadline
            log.warning("search cluster unreachable or slow: %s", type(exc).__name__)
            raise SearchUnavailable("The search cluster is unreachable or did not answer in time.") from None
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            if status in _UNAVAILABLE_STATUS:
                raise SearchUnavailable("The search cluster is overloaded or unavailable.") from None
            log.error("search refused a query (status %s): %.2000s", status, exc)
            raise SearchFailed("The search failed.") from None
