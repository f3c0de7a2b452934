"""The trace model: one request as a tree of spans laid out in time, with a failure marked on it.

A SERVER span wraps an INTERNAL handler span; the handler makes its calls one after another as CLIENT
(or PRODUCER/INTERNAL) spans. A call into another service is a CLIENT span as HTTP instrumentations make it
(named like the endpoint, http fields, labels ``peer.service`` and ``server.address``), answered by exactly
one SERVER span of the callee parented on it, which starts after it and ends before it (network time both
ways); when the callee fails, the CLIENT span fails too. Database, cache and external API calls are CLIENT
spans without a child, labelled as their instrumentations label them (``db.system``, ``db.name``,
``server.address``, ...). Times are integer microseconds relative to the trace start, built bottom-up:
a parent lasts as long as its children plus its own (heavy-tailed) work, so children always fit.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from statistics import NormalDist
from typing import Literal

import msgspec

from panopticon.devtools.traffic.catalog import Call, Endpoint, Service
from panopticon.devtools.traffic.wire import quote_object

Role = Literal["server", "handler", "call"]

SIGMA = 0.45  # spread of the log-normal body
TAIL_P = 0.03  # share of latencies drawn from the Pareto tail
TAIL_SCALE = 3.0  # the tail starts at this multiple of the median
TAIL_ALPHA = 1.5
MAX_US = 30_000_000
BODY_STEPS = 4096  # quantiles of the log-normal body, sampled by one uniform draw
CLIENT_ERROR_P = 0.03  # requests answered 4xx: status OK, a WARN access log
_CLIENT_ERRORS = (400, 401, 404, 404, 409, 422)
_SERVER_ERRORS = (500, 500, 503, 504)
EXTERNAL_ERROR = 503  # what a failing external HTTP API answers
_PARAM = re.compile(r"\{[^}]+\}")


class Hop(msgspec.Struct, frozen=True, gc=False):
    """A call compiled for building: ``callee`` is the answering route, None for a leaf call."""

    name: str
    kind: str
    median_ms: float
    probability: float
    peer: str  # the callee's service name, or the catalog's peer ("postgresql", "stripe", ...)
    callee: Route | None
    labels: str = ""  # the span's own labels as JSON members ('"db.system":"redis",...'), or ""
    method: str = ""  # an external HTTP API's request (a leaf call)
    path: str = ""


class Route(msgspec.Struct, frozen=True, gc=False):
    """An endpoint of a simulated service, compiled for building."""

    service: str
    method: str
    name: str
    handler: str
    work_ms: float
    message: str
    status: int
    template: str  # "/api/orders/{}"
    params: int
    hops: tuple[Hop, ...]


class Span(msgspec.Struct, gc=False):
    """A span while its trace is built. References point only to ancestors (no cycles)."""

    role: Role
    service: str
    kind: str
    name: str
    parent: Span | None
    start_us: int
    route: Route | None = None  # server and handler spans
    hop: Hop | None = None  # call spans
    span_id: str = ""  # assigned when the trace is encoded
    dur_us: int = 0
    error: bool = False
    origin: bool = False  # where the failure started
    method: str = ""  # http_* fields: server spans, calls answered by a service, external HTTP API calls
    path: str = ""
    http_status: int | None = None

    @property
    def end_us(self) -> int:
        return self.start_us + self.dur_us


class TraceBuilder:
    """Builds the spans of one trace, in pre-order (a parent before its children)."""

    def __init__(self, services: tuple[Service, ...], rng: random.Random) -> None:
        self._rng = rng
        self._entries = compile_routes(services)
        normal = NormalDist(0.0, SIGMA)
        self._body = tuple(math.exp(normal.inv_cdf((i + 0.5) / BODY_STEPS)) for i in range(BODY_STEPS))
        self._body_scale = BODY_STEPS / (1.0 - TAIL_P)

    def build(self, failing: bool) -> list[Span]:
        rng = self._rng
        spans: list[Span] = []
        root = self._serve(spans, self._entries[int(rng.random() * len(self._entries))], 0, None)
        if failing:
            self._fail(spans)
        elif rng.random() < CLIENT_ERROR_P:
            root.http_status = _CLIENT_ERRORS[int(rng.random() * len(_CLIENT_ERRORS))]
        return spans

    def latency_us(self, median_ms: float) -> int:
        """Log-normal body with a Pareto tail, in microseconds (at least 1), from one uniform draw."""
        u = self._rng.random()
        if u < TAIL_P:
            factor = TAIL_SCALE * (1.0 - u / TAIL_P) ** (-1.0 / TAIL_ALPHA)
        else:
            factor = self._body[int((u - TAIL_P) * self._body_scale) & (BODY_STEPS - 1)]
        us = int(median_ms * factor * 1000.0)
        return 1 if us < 1 else MAX_US if us > MAX_US else us

    # ------------------------------------------------------------ layout

    def _serve(self, spans: list[Span], route: Route, start_us: int, parent: Span | None) -> Span:
        rng = self._rng
        server = Span("server", route.service, "SERVER", route.name, parent, start_us, route,
                      method=route.method, path=self._path(route), http_status=route.status)
        handler = Span("handler", route.service, "INTERNAL", route.handler, server,
                       start_us + 40 + int(rng.random() * 260), route)
        spans += (server, handler)
        at = handler.start_us + self.latency_us(route.work_ms * 0.5)
        for hop in route.hops:
            if hop.probability >= 1.0 or rng.random() < hop.probability:
                at = self._call(spans, handler, hop, at)
        handler.dur_us = at + self.latency_us(route.work_ms * 0.5) - handler.start_us
        server.dur_us = handler.start_us + handler.dur_us + 40 + int(rng.random() * 260) - start_us
        return server

    def _call(self, spans: list[Span], handler: Span, hop: Hop, at: int) -> int:
        """Adds the call (and the callee's spans); returns when the handler continues."""
        span = Span("call", handler.service, hop.kind, hop.name, handler, at, hop=hop)
        spans.append(span)
        if hop.callee is None:
            span.dur_us = self.latency_us(hop.median_ms)
            if hop.method:
                span.method, span.path, span.http_status = hop.method, hop.path, 200
        else:
            network = 40 + int(self._rng.random() * 260)
            callee = self._serve(spans, hop.callee, at + network, span)
            span.dur_us = callee.dur_us + 2 * network
            span.method, span.path, span.http_status = callee.method, callee.path, callee.http_status
        return span.start_us + span.dur_us + 20 + int(self._rng.random() * 100)

    def _path(self, route: Route) -> str:
        if not route.params:
            return route.template
        rng = self._rng
        return route.template.format(*[1 + int(rng.random() * 999_999) for _ in range(route.params)])

    # ------------------------------------------------------------ failure

    def _fail(self, spans: list[Span]) -> None:
        """Pick where the request breaks (a leaf call, else a handler) and mark it and every ancestor."""
        rng = self._rng
        leaves = [s for s in spans if s.hop is not None and s.hop.callee is None]
        candidates = leaves or [s for s in spans if s.role == "handler"]
        origin = candidates[int(rng.random() * len(candidates))]
        origin.origin = True
        code = _SERVER_ERRORS[int(rng.random() * len(_SERVER_ERRORS))]
        node: Span | None = origin
        while node is not None:
            node.error = True
            if node.role == "server":
                node.http_status = code
            elif node.hop is not None and node.hop.callee is not None:
                node.http_status = code  # what the callee answered
                code = 502  # callers report a bad gateway
            elif node.hop is not None and node.hop.method:
                node.http_status = EXTERNAL_ERROR
            node = node.parent


# ---------------------------------------------------------------- compiling the catalog

def compile_routes(services: tuple[Service, ...]) -> tuple[Route, ...]:
    """The entry routes, each repeated by its service's weight, so one uniform draw picks one.

    Calls into services that are not simulated are dropped.
    """
    by_short = {s.short: s for s in services}
    compiled: dict[tuple[str, str], Route] = {}

    def route(service: Service, endpoint: Endpoint) -> Route:
        key = (service.short, endpoint.name)
        if key not in compiled:
            compiled[key] = _route(service, endpoint, by_short, route)
        return compiled[key]

    table: list[Route] = []
    for service in services:
        for endpoint in service.endpoints:
            table += [route(service, endpoint)] * max(1, round(service.weight * 2))
    return tuple(table)


def _route(service: Service, endpoint: Endpoint, by_short: dict[str, Service],
           route: Callable[[Service, Endpoint], Route]) -> Route:
    hops = []
    for call in endpoint.calls:
        if not call.target:
            hops.append(Hop(call.name, call.kind, call.median_ms, call.probability, call.peer, None,
                            _members(call.labels), call.method, call.path))
            continue
        target = by_short.get(call.target)
        if target is None:
            continue
        found = [e for e in target.endpoints if e.name == call.endpoint]
        if not found:
            raise ValueError(f"{service.short}: no endpoint {call.endpoint!r} in {call.target}")
        hops.append(_service_hop(call, target.name, route(target, found[0])))
    template = _PARAM.sub("{}", endpoint.route)
    return Route(service.name, endpoint.method, endpoint.name, endpoint.handler, endpoint.work_ms,
                 endpoint.message, endpoint.status, template, len(_PARAM.findall(endpoint.route)),
                 tuple(hops))


def _service_hop(call: Call, peer: str, callee: Route) -> Hop:
    """A call into an instrumented service: a CLIENT span labelled as OpenTelemetry's HTTP clients label it."""
    labels = (("peer.service", peer), ("server.address", peer))
    return Hop(call.name, call.kind, call.median_ms, call.probability, peer, callee, _members(labels))


def _members(labels: tuple[tuple[str, str], ...]) -> str:
    """Labels as the members of a JSON object, to write before the producer's own labels; "" for none."""
    return quote_object(dict(labels))[1:-1] if labels else ""
