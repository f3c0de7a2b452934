"""Operational routes: health (search reachability), Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from typing import Any

import falcon

from panopticon.api.errors import SearchUnavailable
from panopticon.api.items import Health
from panopticon.api.metrics import ApiMetrics
from panopticon.api.search import Search


class HealthResource:
    def __init__(self, search: Search) -> None:
        self._search = search

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            info = self._search.ping()
        except SearchUnavailable:
            resp.status = falcon.HTTP_503
            resp.media = Health(status="degraded", search="unreachable")
            return
        resp.media = Health(status="ok", search="up", cluster_name=info["cluster_name"], version=info["version"])

    on_head = on_get


class PrometheusResource:
    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = self._metrics.content_type
        resp.data = self._metrics.exposition()

    on_head = on_get


class OpenApiResource:
    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document

    on_head = on_get
