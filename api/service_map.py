"""The service map: who calls whom, from the engine's edge rollups, and the answers built from them.

An edge rollup cell (scope ``edge``, ``common.rollup``) counts the calls of ``service_name`` (the caller) to
``endpoint`` (the callee: a service, a virtual node such as a database or an outside host, or "" when the
callee is unknown) in one window and environment, with the client side's count, errors and latency histogram.
Root SERVER spans are calls from the virtual caller ``user``. The edges are read like the RED numbers: by the
worker's ``RollupReader`` (1-minute tier, 1-hour tier for whole compacted hours, the window cache).

``MapCells`` is what a range holds, summed over the environments asked for; ``service_map`` and
``dependencies`` turn it into answers:

- an edge is a (caller, callee) pair with a known callee; calls to an unknown callee are no edge, they are
  counted on the caller's node (``unpaired_count``);
- the nodes are every caller and callee. A node with service RED data in the range is real and answers its RED
  numbers (its SERVER spans); any other is virtual (``user``, ``postgresql``, ``api.stripe.com``, a service
  that only calls) and answers the sum of its incoming calls, or of its outgoing ones (unpaired included) when
  it has none;
- a node's numbers do not depend on the ``service`` neighbourhood asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import msgspec

from panopticon.api.cache import ResponseCache
from panopticon.api.items import DependenciesAnswer, MapEdge, MapNode, ServiceMapAnswer
from panopticon.api.params import TimeRange
from panopticon.api.red import ANSWER_TTL_S, counted, read_minutes
from panopticon.api.search import Search
from panopticon.common.rollup import CellKey, RollupCell
from panopticon.common.rollup_reader import RollupQuery, RollupReader, add_cell

UNKNOWN_CALLEE = ""
Pair = tuple[str, str]  # (caller, callee)


class MapCells(msgspec.Struct, frozen=True, kw_only=True):
    """A range's calls and service RED cells, summed over environments. Shared: never modified."""

    edges: dict[Pair, RollupCell]  # callee "" = unknown
    services: dict[str, RollupCell]  # a service's SERVER spans (scope ``service``)


class ServiceMapSource(Protocol):
    def cells(self, window: TimeRange, environment: str | None) -> MapCells:
        """Calls and service RED cells of the range, within the environment (every one when ``None``)."""
        ...


def map_cells(edge_cells: Mapping[CellKey, RollupCell], service_cells: Mapping[CellKey, RollupCell]) -> MapCells:
    """Edge cells per (caller, callee) and service cells per service, each summed over environments."""
    edges: dict[Pair, RollupCell] = {}
    for (_scope, caller, _environment, callee), cell in edge_cells.items():
        add_cell(edges, (caller, callee), cell)
    services: dict[str, RollupCell] = {}
    for (_scope, service, _environment, _endpoint), cell in service_cells.items():
        add_cell(services, service, cell)
    return MapCells(edges=edges, services=services)


# ---------------------------------------------------------------- answers


def _p95(cell: RollupCell) -> float:
    return round(cell.percentiles((95,))[0], 3)


def edge_row(pair: Pair, cell: RollupCell) -> MapEdge:
    return MapEdge(source=pair[0], target=pair[1], request_count=cell.request_count, error_rate=cell.error_rate,
                   latency_p95_ms=_p95(cell))


def _merged(cells: Iterable[RollupCell]) -> RollupCell:
    total = RollupCell()
    for cell in cells:
        total.merge(cell)
    return total


class _Graph:
    """The edges of ``MapCells`` with a known callee, and what each node sums."""

    def __init__(self, cells: MapCells) -> None:
        self.services = cells.services
        self.edges: dict[Pair, RollupCell] = {}
        self.unpaired: dict[str, int] = {}
        self.incoming: dict[str, list[RollupCell]] = {}
        self.outgoing: dict[str, list[RollupCell]] = {}  # unpaired calls included
        for (caller, callee), cell in cells.edges.items():
            self.outgoing.setdefault(caller, []).append(cell)
            if callee == UNKNOWN_CALLEE:
                self.unpaired[caller] = self.unpaired.get(caller, 0) + cell.request_count
            else:
                self.edges[caller, callee] = cell
                self.incoming.setdefault(callee, []).append(cell)

    def node(self, name: str) -> MapNode:
        red = self.services.get(name)
        virtual = red is None
        if red is None:
            red = _merged(self.incoming.get(name) or self.outgoing.get(name, []))
        return MapNode(service_name=name, request_count=red.request_count, error_rate=red.error_rate,
                       latency_p95_ms=_p95(red), virtual=virtual, unpaired_count=self.unpaired.get(name, 0))

    def rows(self, pairs: Iterable[Pair]) -> list[MapEdge]:
        rows = [edge_row(pair, self.edges[pair]) for pair in pairs]
        rows.sort(key=lambda r: (-r.request_count, r.source, r.target))
        return rows


def service_map(cells: MapCells, service: str | None = None) -> ServiceMapAnswer:
    """Nodes (by name) and edges (most calls first); with ``service``, only the edges it is an end of, and
    their nodes (the service's own node too when it only made unpaired calls)."""
    graph = _Graph(cells)
    pairs = [pair for pair in graph.edges if service is None or service in pair]
    names = {name for pair in pairs for name in pair}
    names.update(caller for caller in graph.unpaired if service is None or caller == service)
    return ServiceMapAnswer(nodes=[graph.node(name) for name in sorted(names)], edges=graph.rows(pairs))


def dependencies(cells: MapCells, service: str) -> DependenciesAnswer:
    """The service's callers (edges into it) and callees (edges out of it with a known callee)."""
    graph = _Graph(cells)
    return DependenciesAnswer(service_name=service,
                              callers=graph.rows(pair for pair in graph.edges if pair[1] == service),
                              callees=graph.rows(pair for pair in graph.edges if pair[0] == service))


# ---------------------------------------------------------------- the rollup-backed source


class RollupServiceMap:
    """``ServiceMapSource`` over the worker's ``RollupReader`` (the RED routes' reader and window cache): one
    read of the edge cells and one of the service cells per range; failures pass through ``Search.call``.

    Like ``RollupRed``, the cells read for a range are kept ``ANSWER_TTL_S``, keyed by the environment and the
    range's ends rounded up to the minute (``read_minutes``): both routes, and every neighbourhood, share them."""

    def __init__(self, reader: RollupReader, search: Search, answers: ResponseCache | None = None) -> None:
        self._reader = reader
        self._search = search
        self._answers = answers if answers is not None else ResponseCache(ttl_s=ANSWER_TTL_S)

    def cells(self, window: TimeRange, environment: str | None) -> MapCells:
        return self._answers.through(("service-map", environment, *read_minutes(window)),
                                     lambda: self._read(window, environment))

    def _read(self, window: TimeRange, environment: str | None) -> MapCells:
        edges = self._search.call(self._reader.cells, RollupQuery(scope="edge", environment=environment),
                                  window.from_ms, window.to_ms)
        counted(edges.stats)
        services = self._search.call(self._reader.cells, RollupQuery(scope="service", environment=environment),
                                     window.from_ms, window.to_ms)
        counted(services.stats)
        return map_cells(edges.cells, services.cells)
