"""Cross-cutting request handling: raw-path routing, CORS, the optional bearer token, and one access-log line
plus metrics per request."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import falcon

from panopticon.api.metrics import ApiMetrics, end_tally, start_tally
from panopticon.common.auth import bearer, token_matches

access_log = logging.getLogger("api.access")

CORS_METHODS = "GET, HEAD, OPTIONS"


class RawPath:
    """Route on the undecoded path, then decode each path segment.

    A WSGI server decodes ``%2F`` into ``/`` in ``PATH_INFO`` before the router sees it, so an endpoint name
    such as ``GET /api/orders/{id}`` would split into several segments. Gunicorn keeps the request line's
    target in ``RAW_URI`` (others in ``REQUEST_URI``): when it holds escapes, the router matches it instead,
    and the captured fields are decoded here (UTF-8) before the responder runs.
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI")
        if not raw or "%" not in raw:
            return
        path = raw.split("?", 1)[0]
        if not path.startswith("/"):
            path = urlsplit(path).path or "/"
        if "%" in path:
            req.path = path
            req.context.raw_path = True

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        if getattr(req.context, "raw_path", False):
            for name, value in params.items():
                if isinstance(value, str):
                    params[name] = unquote(value)


class Cors:
    """``Access-Control-Allow-Origin``: ``*`` when no origins are configured, else the matching origin."""

    def __init__(self, origins: frozenset[str]) -> None:
        self._origins = origins

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        origin = req.get_header("Origin")
        if not self._origins:
            resp.set_header("Access-Control-Allow-Origin", "*")
        elif origin in self._origins:
            resp.set_header("Access-Control-Allow-Origin", origin)
            resp.append_header("Vary", "Origin")
        else:
            return
        if req.method == "OPTIONS" and resource is not None and req.get_header("Access-Control-Request-Method"):
            resp.status = falcon.HTTP_204
            resp.set_header("Access-Control-Allow-Methods", CORS_METHODS)
            requested = req.get_header("Access-Control-Request-Headers")
            if requested:
                resp.set_header("Access-Control-Allow-Headers", requested)
            resp.set_header("Access-Control-Max-Age", "600")


class BearerAuth:
    """With API_AUTH_TOKEN set, every request needs ``Authorization: Bearer <token>`` (compared in constant
    time), except ``/health``, ``/metrics``, CORS preflights (browsers send those without credentials) and the web
    UI's files (``/`` and ``/ui/...``: the page must load to ask for the token; it holds no data)."""

    OPEN = frozenset({"/health", "/metrics", "/"})
    OPEN_PREFIX = "/ui/"

    def __init__(self, token: str) -> None:
        self._token = token

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method == "OPTIONS" or req.path in self.OPEN or req.path.startswith(self.OPEN_PREFIX):
            return
        if not token_matches(bearer(req.get_header("Authorization")), self._token):
            raise falcon.HTTPUnauthorized(challenges=["Bearer"])


class Telemetry:
    """Times each request; logs one access line and counts it (and its search requests) per route and status."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        req.context.tally, req.context.tally_token = start_tally()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        seconds = time.perf_counter() - getattr(req.context, "started", time.perf_counter())
        route = req.uri_template or "unmatched"
        status = str(resp.status_code)
        self._metrics.observe(route, req.method, status, seconds)
        tally = getattr(req.context, "tally", None)
        if tally is not None:
            end_tally(req.context.tally_token)
            self._metrics.observe_search(route, tally)
        query = f"?{req.query_string}" if req.query_string else ""
        access_log.info('%s "%s %s%s" %s %.1fms', req.remote_addr, req.method, req.path, query, status,
                        seconds * 1000)
