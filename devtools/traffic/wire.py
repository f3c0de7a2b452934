"""The wire format as precomputed JSON fragments: an event is then one f-string.

Every catalog string is JSON-plain (no quote, backslash or control character; checked at start), so
names, paths and messages built from them are written between quotes without escaping.
"""

from __future__ import annotations

import msgspec

from panopticon.devtools.traffic.catalog import REGIONS, Service

ENVIRONMENTS = ("production", "staging")
HOSTS = 3  # pods per service and environment
SPELLINGS = 100  # how producers spell each environment, by share: one uniform draw picks one
_SPELLINGS = (
    ("production",) * 94 + ("prod",) * 4 + ("Prod",) * 2,
    ("staging",) * 90 + ("stage",) * 5 + ("Staging",) * 5,
)
_LOWER = {"DEBUG": "debug", "INFO": "info", "WARN": "warning", "ERROR": "error"}


def quote(text: str) -> str:
    return msgspec.json.encode(text).decode()


def is_plain(text: str) -> bool:
    return quote(text) == f'"{text}"'


class Producer(msgspec.Struct, frozen=True, gc=False):
    """One service's producer: its fragments and habits. Index ``tails`` by environment * HOSTS + host."""

    name: str
    heads: tuple[tuple[str, ...], ...]  # environment -> SPELLINGS '"service_name":..,"environment":..' spellings
    tails: tuple[str, ...]  # ',"labels":{...}}': the last field and the closing brace
    label_tails: tuple[str, ...]  # the same after ',"labels":{' (to write a span's own labels before them)
    containers: tuple[str, ...]  # ',"container_name":"..."': an unknown top-level key
    levels: dict[str, str]  # normalized level -> '"level":"..."' as this producer spells it
    epoch_timestamps: bool


def make_producer(service: Service, index: int) -> Producer:
    name = quote(service.name)
    heads = tuple(tuple(f'"service_name":{name},"environment":{quote(s)}' for s in spellings)
                  for spellings in _SPELLINGS)
    labels = [_labels(service, index, environment, host) for environment in ENVIRONMENTS
              for host in range(HOSTS)]
    tails = tuple(f',"labels":{quote_object(label)}}}' for label in labels)
    label_tails = tuple(tail.removeprefix(',"labels":{') for tail in tails)
    containers = tuple(f',"container_name":{quote(label["host"])}' for label in labels)
    spelled = _LOWER if service.lower_levels else {level: level for level in _LOWER}
    levels = {level: f'"level":{quote(text)}' for level, text in spelled.items()}
    return Producer(service.name, heads, tails, label_tails, containers, levels, service.epoch_timestamps)


def _labels(service: Service, index: int, environment: str, host: int) -> dict[str, str]:
    version = service.version if environment == "production" else f"{service.version}-rc.1"
    return {
        "host": f"{service.short}-{environment[:4]}-{index}{host}f9c-pod{host}",
        "region": REGIONS[(index + host) % len(REGIONS)],
        "version": version,
    }


def quote_object(value: dict[str, str]) -> str:
    return msgspec.json.encode(value).decode()


def catalog_strings(services: tuple[Service, ...]) -> list[str]:
    """Every catalog string that ends up inside a JSON string without escaping."""
    out: list[str] = []
    for service in services:
        out.append(service.name)
        for endpoint in service.endpoints:
            out += [endpoint.name, endpoint.handler, endpoint.message]
            out += [text for call in endpoint.calls for text in (call.name, call.method, call.path) if text]
    return out


def check_plain(services: tuple[Service, ...]) -> None:
    bad = [text for text in catalog_strings(services) if not is_plain(text)]
    if bad:
        raise ValueError(f"catalog strings need JSON escaping: {bad}")
