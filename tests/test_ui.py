"""The web UI end to end: a real browser (Playwright driving Debian's Chromium) against a real ``panopticon api``
and ``panopticon bridge`` on the local stack, loaded with the known dataset of ``test_api_data`` (spans, logs and
the rollups the engine would write, service-map edges included).

Each page is visited from a fresh load; the time to its first data (the page marks ``main[data-ready]``) is
printed and kept with the screenshots in ``tests/artifacts/ui/`` (``timings.json``). No page may log a console
error. The API and the bridge run with a bearer token, which the browser keeps in localStorage as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from panopticon.common.clients import opensearch_client, producer_config
from panopticon.common.indices import IndexNames
from panopticon.common.settings import Settings
from panopticon.devtools.stack import LocalStack, free_port
from tests.harness import ROOT, eventually, running_server, settings_with_topics
from tests.test_api_data import ROOT_SERVICE, Dataset, calls, index_dataset, index_rollups

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "tests" / "artifacts" / "ui"
TOKEN = "ui-test-token"
SEED = 4242
READY = "main#view[data-ready='true']"
FIRST_DATA_S = 10.0  # the assertion's bound; the figures printed are what the "under a second" is about
TIMINGS: dict[str, dict[str, float]] = {}


@dataclass
class Servers:
    settings: Settings
    data: Dataset
    api: str
    bridge_port: int

    @property
    def url(self) -> str:
        return f"http://{self.api}/"


@contextlib.contextmanager
def running_bridge(env: dict[str, str], port: int, log_path: Path) -> Iterator[None]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "panopticon", "bridge", "--host", "127.0.0.1"],
                                   env={**os.environ, **env, "ERROR_STREAM_PORT": str(port)}, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert process.poll() is None, log_path.read_text()
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                return answer.status == 200
        return False

    try:
        eventually(healthy, 30, lambda: f"the bridge to read its topic:\n{log_path.read_text()[-3000:]}")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def servers(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    unique = f"ui{os.getpid()}x{uuid.uuid4().hex[:6]}"
    bridge_port = free_port()
    env = {**stack.env(), "OPENSEARCH_INDEX_PREFIX": f"{unique}-", "KAFKA_APM_LOG_TOPIC": f"{unique}.logs",
           "KAFKA_APM_SPAN_TOPIC": f"{unique}.spans", "KAFKA_APM_LOG_ERROR_TOPIC": f"{unique}.logs.error",
           "KAFKA_APM_DLQ_TOPIC": f"{unique}.dlq", "KAFKA_OTLP_SPAN_TOPIC": f"{unique}.otlp_spans",
           "KAFKA_OTLP_LOG_TOPIC": f"{unique}.otlp_logs", "API_AUTH_TOKEN": TOKEN,
           "ERROR_STREAM_PORT": str(bridge_port), "ERROR_STREAM_REPLAY": "0"}
    settings = settings_with_topics(env, partitions=1)
    client, names = opensearch_client(settings, timeout_s=120), IndexNames(settings.opensearch_index_prefix)
    data = index_dataset(client, names, SEED, int(time.time() * 1000))
    index_rollups(client, names, data)
    logs = tmp_path_factory.mktemp("ui-logs")
    with running_bridge(env, bridge_port, logs / "bridge.log"), \
            running_server(["api"], env, logs / "api.log") as api:
        yield Servers(settings=settings, data=data, api=api, bridge_port=bridge_port)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is missing: `apt-get install -y chromium` (.ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class UiPage:
    """A browser tab that remembers its console errors and page errors."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def visit(self, url: str, name: str, ready: str = READY) -> float:
        """Load ``url`` twice from a blank tab (cold: the first ask of a fresh API and browser cache; warm: the
        stack has answered it before), waiting each time for the page's first data; keep and return the warm
        seconds."""
        figures: dict[str, float] = {}
        for attempt in ("cold", "warm"):
            self.page.goto("about:blank")
            started = time.perf_counter()
            self.page.goto(url)
            self.page.wait_for_selector(ready, timeout=FIRST_DATA_S * 1000)
            figures[f"{attempt}_s"] = round(time.perf_counter() - started, 3)
            figures[f"{attempt}_after_mount_ms"] = float(
                self.page.get_attribute("main#view", "data-first-data-ms") or "nan")
        TIMINGS[name] = figures
        print(f"\n{name}: first data {figures['cold_s'] * 1000:.0f} ms cold, {figures['warm_s'] * 1000:.0f} ms warm "
              f"after navigation")
        return figures["warm_s"]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        (ARTIFACTS / "timings.json").write_text(json.dumps(TIMINGS, indent=2))
        print(f"screenshot: {path}")
        return path

    def assert_no_console_errors(self) -> None:
        assert not self.errors, self.errors


def remember(key: str, value: str) -> str:
    """A script that stores ``key`` in the page's localStorage, as the UI would (about:blank has none)."""
    return f"if (location.protocol.startsWith('http')) localStorage.setItem({json.dumps(key)}, {json.dumps(value)})"


@pytest.fixture
def tab(browser: Any, servers: Servers) -> Iterator[UiPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(remember("panopticon.token", TOKEN))
    page = context.new_page()
    ui = UiPage(page)
    page.on("console", lambda message: ui.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: ui.errors.append(f"page error: {error}"))
    try:
        yield ui
    finally:
        context.close()


def server_counts(data: Dataset) -> Counter[tuple[str, str]]:
    return Counter((s["service_name"], s["environment"]) for s in data.spans if s["kind"] == "SERVER")


# ---------------------------------------------------------------- the pages

def test_services_page_lists_every_service_with_its_request_count(tab: UiPage, servers: Servers) -> None:
    tab.visit(f"{servers.url}#/services?range=1h", "services")
    expected = server_counts(servers.data)
    assert len(expected) >= 5
    for (service, environment), count in expected.items():
        row = tab.page.locator(f'tr[data-key="{service}|{environment}"]')
        assert row.count() == 1, f"no row for {service} ({environment})"
        assert row.locator("td").nth(2).locator("span").get_attribute("title") == f"{count} requests"
    assert tab.page.locator("tbody tr").count() == len(expected)
    tab.page.wait_for_selector("svg.spark polyline", timeout=10_000)  # the trend lines came too
    tab.screenshot("services")
    tab.page.fill("input[type=search]", ROOT_SERVICE)  # the name filter
    assert tab.page.locator("tbody tr").count() == sum(1 for s, _ in expected if s == ROOT_SERVICE)
    tab.page.set_viewport_size({"width": 390, "height": 844})  # a phone
    tab.screenshot("services-phone")
    tab.assert_no_console_errors()


def test_service_page_shows_endpoints_and_charts(tab: UiPage, servers: Servers) -> None:
    tab.visit(f"{servers.url}#/service/{ROOT_SERVICE}?range=1h", "service")
    endpoints = {s["name"] for s in servers.data.spans if s["kind"] == "SERVER" and s["service_name"] == ROOT_SERVICE}
    rows = tab.page.locator("#endpoints tbody tr")
    assert {rows.nth(i).get_attribute("data-key") for i in range(rows.count())} == endpoints
    charts = tab.page.locator(".chart")
    assert charts.count() == 3
    points = [int(charts.nth(i).get_attribute("data-points") or 0) for i in range(3)]
    assert max(points) > 0, points
    tab.page.wait_for_selector("#traces tbody tr", timeout=10_000)
    tab.page.wait_for_selector("#logs tbody tr", timeout=10_000)
    tab.page.wait_for_load_state("networkidle")
    tab.screenshot("service")
    tab.page.select_option("#traces select[aria-label='Trace status']", "ERROR")  # the status filter
    tab.page.wait_for_function("() => [...document.querySelectorAll('#traces tbody tr')]"
                               ".every(r => r.textContent.includes('ERROR'))", timeout=10_000)
    tab.assert_no_console_errors()


def test_trace_page_shows_every_span_and_its_logs(tab: UiPage, servers: Servers) -> None:
    data = servers.data
    logs_by_trace = Counter(log.get("trace_id") for log in data.logs if log.get("trace_id"))
    spans_by_trace = Counter(s["trace_id"] for s in data.spans)
    trace_id = max(logs_by_trace, key=lambda t: (spans_by_trace[t], logs_by_trace[t]))
    tab.visit(f"{servers.url}#/trace/{trace_id}?range=1h", "trace")
    span_ids = {s["span_id"] for s in data.spans if s["trace_id"] == trace_id}
    rows = tab.page.locator(".wf-row")
    assert {rows.nth(i).get_attribute("data-span-id") for i in range(rows.count())} == span_ids
    assert tab.page.locator("#trace-logs tbody tr").count() == logs_by_trace[trace_id]
    rows.nth(rows.count() - 1).click()
    details = tab.page.locator("#span-details dd")
    assert details.filter(has_text=rows.nth(rows.count() - 1).get_attribute("data-span-id") or "?").count() == 1
    tab.screenshot("trace")
    tab.assert_no_console_errors()


def test_live_errors_appear_within_two_seconds(tab: UiPage, servers: Servers) -> None:
    tab.visit(f"{servers.url}#/errors?range=1h", "errors")
    producer = Producer(producer_config(servers.settings, "test-ui", **{"linger.ms": 0}))
    topic = servers.settings.kafka_apm_log_error_topic
    producer.list_topics(topic, timeout=10)  # connected before the clock starts
    message = f"payment declined in the UI test {uuid.uuid4().hex[:8]}"
    doc = {"@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "type": "log",
           "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "service_name": "checkout",
           "environment": "production", "level": "ERROR", "message": message, "trace_id": "a" * 32}
    started = time.perf_counter()
    producer.produce(topic, json.dumps(doc).encode(), b"checkout")
    producer.flush(5)
    tab.page.wait_for_selector(f"ul.feed li:has-text('{message}')", timeout=2000)
    elapsed = time.perf_counter() - started
    TIMINGS["live error: produced -> on screen"] = {"seconds": round(elapsed, 3)}
    print(f"\nlive error on screen {elapsed * 1000:.0f} ms after it was produced")
    tab.page.fill("input[type=search]", "nobody-by-that-name")  # the service filter
    assert tab.page.locator("ul.feed li").count() == 0
    tab.page.fill("input[type=search]", "check")
    assert tab.page.locator("ul.feed li").count() == 1
    tab.screenshot("errors")
    tab.assert_no_console_errors()


def test_service_map_shows_the_known_calls(tab: UiPage, servers: Servers) -> None:
    tab.visit(f"{servers.url}#/map?range=1h", "map")
    expected = {(caller, callee) for caller, callee, _ in calls(servers.data) if callee}
    assert len(expected) >= 3
    rows = tab.page.locator("#calls tbody tr")
    shown = {tuple((rows.nth(i).get_attribute("data-key") or "").split("→")) for i in range(rows.count())}
    assert shown == expected
    assert int(tab.page.get_attribute(".map", "data-edges") or 0) == len(expected)
    tab.screenshot("map")
    tab.assert_no_console_errors()


def test_without_a_token_the_page_asks_for_one(browser: Any, servers: Servers) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(servers.url)
        page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
        assert "token" in (page.text_content("#banner") or "")
    finally:
        context.close()


def test_a_503_for_a_while_keeps_the_last_data_and_recovers(tab: UiPage, servers: Servers) -> None:
    tab.page.context.add_init_script(remember("panopticon.refresh", "5"))
    tab.visit(f"{servers.url}#/services?range=1h", "services (refreshing every 5 s)")
    rows = tab.page.locator("tbody tr").count()
    body = json.dumps({"error": "search_unavailable", "message": "down", "field": None})
    tab.page.route("**/query/**", lambda route: route.fulfill(status=503, body=body,
                                                               content_type="application/json"))
    tab.page.wait_for_selector("#banner:not([hidden])", timeout=10_000)
    assert "503" in (tab.page.text_content("#banner") or "")
    assert tab.page.locator("tbody tr").count() == rows  # the last answer stays on screen
    tab.page.unroute("**/query/**")
    tab.page.wait_for_selector("#banner[hidden]", state="attached", timeout=10_000)
    assert tab.page.locator("tbody tr").count() == rows
    tab.errors.clear()  # the browser logs each refused request (503) as a console error: that is this test's point
