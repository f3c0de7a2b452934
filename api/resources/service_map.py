"""Service-map routes: the map of calls between services over a range, and one service's dependencies."""

from __future__ import annotations

import falcon

from panopticon.api import params as p
from panopticon.api.items import DependenciesAnswer, ServiceMapAnswer
from panopticon.api.resources.base import Resource
from panopticon.api.resources.red_routes import ENVIRONMENT
from panopticon.api.service_map import dependencies, service_map


class ServiceMapResource(Resource):
    SUMMARY = ("Service map: nodes (services and virtual nodes such as databases, outside hosts and `user`) and "
               "the calls between them over the range.")
    RESPONSE = ServiceMapAnswer
    TIMES = p.Times(window_ms=60 * 60_000)
    SERVICE = p.Text("service", "Only this service's neighbourhood: the edges it calls or is called by, and "
                     "their nodes.")
    PARAMS = (TIMES, ENVIRONMENT, SERVICE)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        window = self.TIMES.parse(req, self.deps.now_ms())
        env, service = ENVIRONMENT.parse(req), self.SERVICE.parse(req)
        resp.media = self.cached(req, window, lambda: service_map(self.deps.service_map.cells(window, env), service))


class DependenciesResource(Resource):
    SUMMARY = "A service's callers and callees over the range, one row per edge (client side numbers)."
    RESPONSE = DependenciesAnswer
    TIMES = p.Times(window_ms=60 * 60_000)
    PARAMS = (TIMES, ENVIRONMENT)

    def on_get(self, req: falcon.Request, resp: falcon.Response, service: str) -> None:
        window = self.TIMES.parse(req, self.deps.now_ms())
        env = ENVIRONMENT.parse(req)
        resp.media = self.cached(req, window,
                                 lambda: dependencies(self.deps.service_map.cells(window, env), service))
