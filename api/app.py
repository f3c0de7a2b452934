"""The WSGI application: ``create_app`` wires resources from injected dependencies; ``get_app`` builds the
real ones from the environment (what gunicorn runs, once per worker, after the fork)."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.media
import msgspec

from panopticon.api import errors, openapi
from panopticon.api.cache import ResponseCache
from panopticon.api.metrics import ApiMetrics
from panopticon.api.middleware import BearerAuth, Cors, RawPath, Telemetry
from panopticon.api.red import RedSource, RollupRed, rollup_reader
from panopticon.api.resources.base import Deps, Resource
from panopticon.api.resources.error_groups import ErrorGroupsResource
from panopticon.api.resources.explore import LogsResource, SpansResource
from panopticon.api.resources.red_routes import EndpointsResource, MetricsResource, ServicesResource
from panopticon.api.resources.service_map import DependenciesResource, ServiceMapResource
from panopticon.api.resources.system import HealthResource, OpenApiResource, PrometheusResource
from panopticon.api.resources.traces import EndpointTracesResource, ServiceTracesResource, TraceResource
from panopticon.api.resources.ui import UiConfigResource, UiFilesResource, ui_files
from panopticon.api.search import Search
from panopticon.api.service_map import RollupServiceMap, ServiceMapSource
from panopticon.common.settings import Settings

ROUTES: tuple[tuple[str, type[Resource]], ...] = (
    ("/query/services", ServicesResource),
    ("/query/services/{service}/metrics", MetricsResource),
    ("/query/services/{service}/endpoints", EndpointsResource),
    ("/query/services/{service}/endpoints/{endpoint}/traces", EndpointTracesResource),
    ("/query/services/{service}/traces", ServiceTracesResource),
    ("/query/services/{service}/errors", ErrorGroupsResource),
    ("/query/services/{service}/dependencies", DependenciesResource),
    ("/query/service-map", ServiceMapResource),
    ("/query/traces/{trace_id}", TraceResource),
    ("/query/logs", LogsResource),
    ("/query/spans", SpansResource),
)
CACHE_TTL_S = 5.0
CACHE_ENTRIES = 512


def _json_handler() -> falcon.media.JSONHandler:
    """msgspec encodes Structs (and dicts) directly: ``resp.media = struct`` needs no conversion."""
    encoder, decoder = msgspec.json.Encoder(), msgspec.json.Decoder()
    return falcon.media.JSONHandler(dumps=encoder.encode, loads=decoder.decode)


WsgiApp = falcon.App[falcon.Request, falcon.Response]


def create_app(settings: Settings, search: Search, red: RedSource | None = None,
               cache: ResponseCache | None = None, metrics: ApiMetrics | None = None,
               service_map: ServiceMapSource | None = None) -> WsgiApp:
    reader = rollup_reader(search, settings.opensearch_timeout_s)  # one per worker: RED and service map share it
    deps = Deps(search=search, red=red or RollupRed(reader, search),
                service_map=service_map or RollupServiceMap(reader, search),
                cache=cache or ResponseCache(ttl_s=CACHE_TTL_S, max_entries=CACHE_ENTRIES))
    metrics = metrics or ApiMetrics()
    middleware: list[Any] = [Telemetry(metrics), Cors(settings.origins(settings.cors_allowed_origins)), RawPath()]
    if settings.api_auth_token:
        middleware.append(BearerAuth(settings.api_auth_token))
    app = falcon.App(
        middleware=middleware,
        cors_enable=False,
    )
    handler = _json_handler()
    app.req_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.req_options.keep_blank_qs_values = True
    errors.register(app)
    routes = [(template, resource_class(deps)) for template, resource_class in ROUTES]
    for template, resource in routes:
        app.add_route(template, resource)
    app.add_route("/health", HealthResource(search))
    app.add_route("/metrics", PrometheusResource(metrics))
    app.add_route("/openapi.json", OpenApiResource(openapi.build(routes)))
    add_ui_routes(app, settings)
    return app


def add_ui_routes(app: WsgiApp, settings: Settings) -> None:
    """The web UI: ``/`` (index.html), ``/ui/{name}`` (its files) and ``/ui/config.json``."""
    files = UiFilesResource(ui_files())
    app.add_route("/", files)
    app.add_route("/ui/{name:path}", files)
    app.add_route("/ui/config.json", UiConfigResource(settings))


def build_search(settings: Settings) -> Search:
    from panopticon.common.clients import opensearch_client
    from panopticon.common.indices import IndexNames

    client = opensearch_client(settings)
    return Search(client, IndexNames(settings.opensearch_index_prefix), settings.opensearch_timeout_s)


def get_app(settings: Settings | None = None) -> WsgiApp:
    from panopticon.common.settings import load_settings

    settings = settings or load_settings()
    return create_app(settings, build_search(settings))
