"""The WSGI application: ``create_app`` wires the routes from injected dependencies; ``build`` makes the real
ones (one Kafka producer with its poll thread) in the process that serves: each gunicorn worker, after the fork."""

from __future__ import annotations

import atexit
from typing import Any

import falcon
import msgspec

from panopticon.common.settings import Settings
from panopticon.ingest import errors
from panopticon.ingest.export import ExportResource
from panopticon.ingest.metrics import IngestMetrics
from panopticon.ingest.middleware import BearerAuth, Telemetry
from panopticon.ingest.sink import KafkaSink

WsgiApp = falcon.App[falcon.Request, falcon.Response]
CLOSE_TIMEOUT_S = 5.0


class Health(msgspec.Struct, frozen=True):
    status: str = "ok"


class HealthResource:
    """Liveness: the process answers. Kafka's state shows in the answers to the export routes (503)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = msgspec.json.encode(Health())

    on_head = on_get


class PrometheusResource:
    def __init__(self, metrics: IngestMetrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = self._metrics.content_type
        resp.data = self._metrics.exposition()

    on_head = on_get


def create_app(settings: Settings, sink: KafkaSink, metrics: IngestMetrics | None = None) -> WsgiApp:
    metrics = metrics or IngestMetrics()
    middleware: list[Any] = [Telemetry(metrics)]
    if settings.api_auth_token:
        middleware.append(BearerAuth(settings.api_auth_token))
    app = falcon.App(middleware=middleware, cors_enable=False)
    errors.register(app)
    app.add_route("/v1/traces", ExportResource("traces", settings, sink, metrics))
    app.add_route("/v1/logs", ExportResource("logs", settings, sink, metrics))
    app.add_route("/health", HealthResource())
    app.add_route("/metrics", PrometheusResource(metrics))
    return app


def build(settings: Settings) -> tuple[WsgiApp, KafkaSink]:
    """The app and its started sink; the caller closes the sink when the process stops."""
    sink = KafkaSink.from_settings(settings).start()
    return create_app(settings, sink), sink


def get_app(settings: Settings | None = None) -> WsgiApp:
    """For any WSGI server (``gunicorn 'panopticon.ingest.app:get_app()'``): the sink closes at exit."""
    from panopticon.common.settings import load_settings

    app, sink = build(settings or load_settings())
    atexit.register(sink.close, CLOSE_TIMEOUT_S)
    return app
