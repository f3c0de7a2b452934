"""The receiver's refusals and the one place that turns every failure into an OTLP failure answer.

Every 4xx and 5xx carries a ``google.rpc.Status`` in the request's encoding (JSON when the request's own
Content-Type is not an OTLP one, e.g. a 415 or a 404). The retryable ones (429, 503) say when to come back
(``Retry-After``, seconds). Anything unexpected is logged with its stack trace and answered 500 with a generic
sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import falcon

from panopticon.ingest.wire import MEDIA_TYPES, Encoding, FieldViolation, encoding_of, status_body

log = logging.getLogger(__name__)

# google.rpc.Code values; OTLP clients do not act on them, they help whoever reads the answer
INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = (
    3, 5, 8, 12, 13, 14, 16)
_CODES = {400: INVALID_ARGUMENT, 401: UNAUTHENTICATED, 404: NOT_FOUND, 405: UNIMPLEMENTED, 411: INVALID_ARGUMENT,
          413: RESOURCE_EXHAUSTED, 415: INVALID_ARGUMENT, 429: RESOURCE_EXHAUSTED, 503: UNAVAILABLE}
_MESSAGES = {
    401: "This receiver needs the header Authorization: Bearer <API_AUTH_TOKEN>.",
    404: "No route matches this path: OTLP/HTTP is POST /v1/traces and POST /v1/logs.",
    405: "This route accepts POST only.",
}


class IngestError(Exception):
    status = falcon.HTTP_500
    code = INTERNAL

    def __init__(self, message: str, retry_after_s: int | None = None, *,
                 violations: tuple[FieldViolation, ...] = (), reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.violations = violations
        self.reason = reason  # a metric label for the failures that have several causes


class BadBody(IngestError):
    """Not decodable: a permanent failure, the client must not retry."""

    status = falcon.HTTP_400
    code = INVALID_ARGUMENT


class TooLarge(IngestError):
    status = falcon.HTTP_413
    code = RESOURCE_EXHAUSTED


class UnsupportedMedia(IngestError):
    status = falcon.HTTP_415
    code = INVALID_ARGUMENT


class QueueFull(IngestError):
    """The producer's queue is full: back off briefly."""

    status = falcon.HTTP_429
    code = RESOURCE_EXHAUSTED


class KafkaUnavailable(IngestError):
    """Kafka did not acknowledge in time, refused, or failed recently: retry the whole request later."""

    status = falcon.HTTP_503
    code = UNAVAILABLE


def answer_encoding(req: falcon.Request) -> Encoding:
    """The request's encoding once known, else what its Content-Type names, else JSON."""
    known: Encoding | None = getattr(req.context, "encoding", None)
    return known or encoding_of(req.content_type) or "json"


def _answer(req: falcon.Request, resp: falcon.Response, status: str, code: int, message: str,
            violations: tuple[FieldViolation, ...] = ()) -> None:
    encoding = answer_encoding(req)
    resp.status = status
    resp.content_type = MEDIA_TYPES[encoding]
    resp.data = status_body(encoding, code, message, violations)
    resp.complete = True


def handle_ingest_error(req: falcon.Request, resp: falcon.Response, ex: IngestError, params: Any) -> None:
    if ex.retry_after_s is not None:
        resp.set_header("Retry-After", str(max(1, ex.retry_after_s)))
    _answer(req, resp, ex.status, ex.code, ex.message, ex.violations)


def handle_http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: Any) -> None:
    """Falcon's own errors (unknown route, wrong method, the bearer token) as a Status, keeping their headers."""
    headers = ex.headers or {}
    pairs: list[tuple[str, str]] = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    for name, value in pairs:
        resp.set_header(name, value)
    message = _MESSAGES.get(ex.status_code) or str(ex.description or ex.title or "HTTP error")
    _answer(req, resp, str(ex.status), _CODES.get(ex.status_code, 2), message)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    log.exception("unhandled error on %s %s", req.method, req.path)
    _answer(req, resp, falcon.HTTP_500, INTERNAL, "The receiver failed to process the request.")


def register(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Most specific last: falcon picks the handler of the nearest class in the exception's MRO."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(IngestError, handle_ingest_error)
