"""Cross-cutting request handling: the optional bearer token, one access-log line and the metrics per request."""

from __future__ import annotations

import logging
import time
from typing import Any

import falcon

from panopticon.common.auth import bearer, token_matches
from panopticon.ingest.metrics import IngestMetrics

access_log = logging.getLogger("ingest.access")


class BearerAuth:
    """With API_AUTH_TOKEN set, the export routes need ``Authorization: Bearer <token>`` (constant-time compare);
    ``/health`` and ``/metrics`` stay open. Checked once the route is known, so a 401 is counted under its route."""

    OPEN = frozenset({"/health", "/metrics"})

    def __init__(self, token: str) -> None:
        self._token = token

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        if resource is None or req.uri_template in self.OPEN:
            return
        if not token_matches(bearer(req.get_header("Authorization")), self._token):
            raise falcon.HTTPUnauthorized(challenges=["Bearer"])


class Telemetry:
    def __init__(self, metrics: IngestMetrics) -> None:
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        seconds = time.perf_counter() - getattr(req.context, "started", time.perf_counter())
        route = req.uri_template or "unmatched"
        status = str(resp.status_code)
        self._metrics.observe(route, status, seconds)
        access_log.info('%s "%s %s" %s %.1fms', req.remote_addr, req.method, req.path, status, seconds * 1000)
