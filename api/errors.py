"""Domain errors and the one place that maps every failure to the JSON error shape.

The client always gets ``{"error", "message", "field"}``: 400 for a bad parameter (``field`` names it), 401
without the bearer token (when API_AUTH_TOKEN is set), 404 for a missing trace, 503 when the search cluster
cannot be reached in time. Anything unexpected is logged here with its stack trace and answered 500 with a
generic sentence: no stack trace or query-DSL error reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import falcon
import msgspec

log = logging.getLogger(__name__)


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    error: str
    message: str
    field: str | None = None


class ApiError(Exception):
    status = falcon.HTTP_500
    code = "internal_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.code, message=self.message, field=self.field)


class BadParam(ApiError):
    status = falcon.HTTP_400
    code = "invalid_parameter"


class NotFound(ApiError):
    status = falcon.HTTP_404
    code = "not_found"


class SearchUnavailable(ApiError):
    status = falcon.HTTP_503
    code = "search_unavailable"


_HTTP_CODES = {
    404: ("not_found", "No route matches this path."),
    405: ("method_not_allowed", "This route answers GET, HEAD and OPTIONS only."),
    400: ("bad_request", "The request is malformed."),
    401: ("unauthorized", "This route needs the header Authorization: Bearer <API_AUTH_TOKEN>."),
}


def _answer(resp: falcon.Response, status: str, body: ErrorBody) -> None:
    resp.status = status
    resp.media = body
    resp.complete = True


def handle_api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params: Any) -> None:
    if ex.status == falcon.HTTP_500:
        log.error("internal error on %s %s: %s", req.method, req.path, ex)
    _answer(resp, ex.status, ex.body())


def handle_http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: Any) -> None:
    """Falcon's own errors (unknown route, wrong method) in our shape, keeping their headers (Allow)."""
    code, message = _HTTP_CODES.get(ex.status_code, ("http_error", ex.description or ex.title or "HTTP error"))
    headers = ex.headers or {}
    pairs: list[tuple[str, str]] = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    for name, value in pairs:
        resp.set_header(name, value)
    _answer(resp, str(ex.status), ErrorBody(error=code, message=str(message)))


def handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    log.exception("unhandled error on %s %s", req.method, req.path)
    _answer(resp, falcon.HTTP_500, ErrorBody(error="internal_error", message="The server failed to answer."))


def register(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Most specific last: falcon picks the handler of the nearest class in the exception's MRO."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ApiError, handle_api_error)
