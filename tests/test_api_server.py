"""The API as deployed: ``panopticon api`` (gunicorn, real HTTP) on the real local stack.

Proves what only a real server shows: ``%2F`` in an endpoint name survives (RAW_URI), Prometheus
multiprocess metrics merge across workers, and a stopped search server gives 503 JSON within the timeout,
then 200 again once it is back, without restarting the API.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from test_api_data import ENDPOINTS, EXTRA_SERVICE, Dataset, index_dataset

from panopticon.common.clients import opensearch_client
from panopticon.common.indices import IndexNames
from panopticon.common.settings import load_settings
from panopticon.devtools.stack import LocalStack
from tests.harness import eventually, running_server

pytestmark = pytest.mark.integration
SERVICE, ENDPOINT = ENDPOINTS[0]  # "GET /api/orders/{id}"


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None,
          timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


@pytest.fixture(scope="module")
def server(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Dataset, Path]]:
    env = {**stack.env(), "OPENSEARCH_INDEX_PREFIX": "apiserver-", "OPENSEARCH_TIMEOUT_S": "3"}
    data = index_dataset(opensearch_client(load_settings(env)), IndexNames("apiserver-"), seed=3,
                         now_ms=int(time.time() * 1000))
    metrics_dir = tmp_path_factory.mktemp("prom")
    (metrics_dir / "counter_stale.db").write_bytes(b"left by a previous run")
    with running_api({**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, metrics_dir.parent / "api.log",
                     workers=2) as base:
        yield base, data, metrics_dir


@contextlib.contextmanager
def running_api(env: dict[str, str], log_path: Path, workers: int = 1) -> Iterator[str]:
    """``panopticon api`` on a free port until the block ends; yields its base URL once /health answers 200."""
    with running_server(["api", "--workers", str(workers), "--threads", "2"], env, log_path) as address:
        yield f"http://{address}"


def as_json(body: bytes) -> Any:
    return json.loads(body)


def test_encoded_slash_in_endpoint_over_real_http(server: tuple[str, Dataset, Path]) -> None:
    base, data, _ = server
    start, end = data.window
    expected = sorted((s for s in data.spans if s["kind"] == "SERVER" and s["service_name"] == SERVICE
                       and s["name"] == ENDPOINT and s["status"] == "ERROR"), key=lambda s: s["@timestamp"],
                      reverse=True)
    assert expected
    url = (f"{base}/query/services/{SERVICE}/endpoints/{quote(ENDPOINT, safe='')}/traces"
           f"?status=error&limit=200&from={quote(start)}&to={quote(end)}")
    assert "%2F" in url
    status, headers, body = fetch(url, headers={"Origin": "http://localhost:3000"})
    assert status == 200, body
    assert {t["spanId"] for t in as_json(body)} == {s["span_id"] for s in expected}
    assert headers["access-control-allow-origin"] == "*"
    status, _, body = fetch(f"{base}/query/services/{quote(EXTRA_SERVICE)}/traces?environment=DEV")
    traces = as_json(body)["traces"]
    assert status == 200 and traces and all(t["service_name"] == EXTRA_SERVICE for t in traces)


def test_preflight_and_errors_over_real_http(server: tuple[str, Dataset, Path]) -> None:
    base, _, _ = server
    status, headers, _ = fetch(f"{base}/query/logs", method="OPTIONS", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"})
    assert status == 204 and headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    status, _, body = fetch(f"{base}/query/logs?size=100000")
    assert status == 400 and as_json(body)["field"] == "size"


def test_prometheus_multiprocess_metrics(server: tuple[str, Dataset, Path]) -> None:
    base, _, metrics_dir = server
    for _ in range(6):
        fetch(f"{base}/query/spans?size=1")
    assert not (metrics_dir / "counter_stale.db").exists()  # the launcher wiped the directory
    status, _, body = fetch(f"{base}/metrics")
    text = body.decode()
    assert status == 200
    line = next(x for x in text.splitlines()
                if x.startswith('panopticon_api_requests_total{method="GET",route="/query/spans",status="200"}'))
    assert float(line.rsplit(" ", 1)[1]) >= 6


def test_search_outage_is_503_then_recovers(server: tuple[str, Dataset, Path], stack: LocalStack) -> None:
    base, _, _ = server
    stack.stop_search()
    try:
        started = time.monotonic()
        status, _, body = fetch(f"{base}/query/spans?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z")
        assert status == 503 and as_json(body)["error"] == "search_unavailable"
        assert time.monotonic() - started < 10
        assert fetch(f"{base}/health")[0] == 503
    finally:
        stack.start_search()
    eventually(lambda: fetch(f"{base}/query/spans?size=1")[0] == 200, 20,
               "the API to recover after the search server came back", interval_s=0.5)
    assert fetch(f"{base}/health")[0] == 200


def test_api_auth_token_guards_every_route_but_health_and_metrics(stack: LocalStack, tmp_path: Path) -> None:
    token = "s3cret-token"
    env = {**stack.env(), "OPENSEARCH_INDEX_PREFIX": "apiauth-", "API_AUTH_TOKEN": token}
    with running_api(env, tmp_path / "api.log") as base:  # running_api itself reads /health without a token
        url = f"{base}/query/services"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
            status, answer_headers, body = fetch(url, headers=headers)
            assert status == 401 and as_json(body)["error"] == "unauthorized", (headers, body)
            assert answer_headers["www-authenticate"] == "Bearer"
        status, _, body = fetch(url, headers={"Authorization": f"Bearer {token}"})
        assert status == 200, body
        assert fetch(f"{base}/metrics")[0] == 200
        status, _, _ = fetch(url, method="OPTIONS", headers={"Origin": "http://localhost:3000",
                                                             "Access-Control-Request-Method": "GET"})
        assert status == 204  # browsers send preflights without credentials
