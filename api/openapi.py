"""The OpenAPI 3.1 document, built from the route table: each resource's ``PARAMS`` and ``RESPONSE``.

Response schemas come from the msgspec Structs the API encodes (``msgspec.json.schema_components``,
JSON Schema 2020-12, which OpenAPI 3.1 uses as is).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from panopticon.api.errors import ErrorBody
from panopticon.api.items import Health

_PLACEHOLDER = re.compile(r"{(\w+)}")
_ERRORS = {
    "400": "A parameter is invalid; `field` names it.",
    "404": "Not found.",
    "503": "The search cluster is unreachable or did not answer in time.",
}
_PATH_DESCRIPTIONS = {
    "service": "Service name (URL-encoded).",
    "endpoint": "Endpoint name, i.e. the SERVER span name, URL-encoded (`/` as `%2F`).",
    "trace_id": "Trace id.",
}


def _path_params(template: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "description": _PATH_DESCRIPTIONS.get(name, name),
         "schema": {"type": "string", "minLength": 1}}
        for name in _PLACEHOLDER.findall(template)
    ]


def _operation_id(template: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z]+", _PLACEHOLDER.sub(lambda m: "by " + m.group(1), template)) if w]
    return "get" + "".join(w[:1].upper() + w[1:] for w in words if w != "query")


def _responses(schema: dict[str, Any], errors: Sequence[str]) -> dict[str, Any]:
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}
    for status in errors:
        responses[status] = {"description": _ERRORS[status],
                             "content": {"application/json": {"schema": error_ref}}}
    return responses


def build(routes: Sequence[tuple[str, Any]], title: str = "Panopticon query API",
          version: str = "1.0.0") -> dict[str, Any]:
    """``routes``: (URI template, resource) pairs of the data routes."""
    types = [resource.RESPONSE for _, resource in routes] + [ErrorBody, Health]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    paths: dict[str, Any] = {}
    for (template, resource), schema in zip(routes, schemas, strict=False):
        parameters = _path_params(template)
        for param in resource.PARAMS:
            parameters += param.openapi()
        errors = ["400", "404", "503"] if "{trace_id}" in template else ["400", "503"]
        paths[template] = {"get": {
            "operationId": _operation_id(template),
            "summary": resource.SUMMARY,
            "parameters": parameters,
            "responses": _responses(schema, errors),
        }}
    paths["/health"] = {"get": {
        "operationId": "getHealth",
        "summary": "Liveness and the state of the search cluster (503 while it is unreachable).",
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schemas[-1]}}},
            "503": {"description": "The search cluster is unreachable.",
                    "content": {"application/json": {"schema": schemas[-1]}}},
        },
    }}
    paths["/metrics"] = {"get": {
        "operationId": "getMetrics",
        "summary": "Prometheus exposition: requests and latency per route and status.",
        "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }}
    paths["/openapi.json"] = {"get": {
        "operationId": "getOpenapi",
        "summary": "This document.",
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}},
    }}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Read API of Panopticon: services, RED metrics, traces, logs and spans."},
        "paths": paths,
        "components": {"schemas": components},
    }
