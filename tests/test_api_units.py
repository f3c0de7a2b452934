"""Units of the query API without a search cluster: parameters, cache, error mapping, CORS, raw paths."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.testing
import pytest

from panopticon.api.app import create_app
from panopticon.api.cache import ResponseCache
from panopticon.api.params import Interval, TimeRange, Times, auto_interval_ms, parse_time
from panopticon.api.search import Search
from panopticon.common.indices import IndexNames
from panopticon.common.settings import load_settings

NOW_MS = 1_790_000_000_000  # 2026-09-21T...Z


def req(query: str = "") -> falcon.Request:
    return falcon.testing.create_req(query_string=query)


# ---------------------------------------------------------------- time ranges

def test_times_defaults_are_sliding_and_quantized() -> None:
    window = Times(window_ms=60_000).parse(req(), NOW_MS + 1)
    assert window.sliding and window.to_ms % 10_000 == 0 and window.to_ms >= NOW_MS + 1
    assert window.span_ms == 60_000


def test_times_explicit_range_is_taken_as_given() -> None:
    window = Times(window_ms=60_000).parse(req("from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00.5Z"), NOW_MS)
    assert (window.from_iso, window.to_iso, window.sliding) == (
        "2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.500Z", False)
    offset = Times(window_ms=60_000).parse(req("from=2026-01-01T01:00:00%2B01:00&to=2026-01-01T00:30:00"), NOW_MS)
    assert offset.from_iso == "2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize(("query", "field"), [
    ("from=yesterday", "from"),
    ("to=2026-13-01T00:00:00Z", "to"),
    ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ("from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ("from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:01Z", "from"),
    ("from=1900-01-01T00:00:00Z&to=1900-01-02T00:00:00Z", "to"),
], ids=["unparseable", "bad-month", "reversed", "empty", "over-31-days", "before-1970"])
def test_times_errors_name_the_parameter(query: str, field: str) -> None:
    with pytest.raises(Exception) as caught:
        Times(window_ms=60_000).parse(req(query), NOW_MS)
    assert getattr(caught.value, "field", None) == field


def test_parse_time_accepts_epoch_ms_and_naive_iso() -> None:
    assert parse_time("1790000000000", "from") == 1_790_000_000_000
    assert parse_time("1970-01-01T00:00:01", "from") == 1000


@pytest.mark.parametrize(("minutes", "seconds"), [(15, 10), (16, 30), (120, 60), (360, 300), (1440, 600),
                                                  (1441, 1800)])
def test_auto_interval(minutes: int, seconds: int) -> None:
    assert auto_interval_ms(minutes * 60_000) == seconds * 1000


def test_interval_explicit_automatic_and_bounded() -> None:
    window = TimeRange(0, 3_600_000, False)
    param = Interval("interval", "")
    assert param.parse(req("interval=5m"), window) == 300_000
    assert param.parse(req("interval=auto"), window) == 60_000
    assert param.parse(req("interval=0s"), window) == 60_000
    with pytest.raises(Exception, match="points"):
        param.parse(req("interval=1s"), TimeRange(0, 31 * 86_400_000, False))


# ---------------------------------------------------------------- cache

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cache_expires_and_is_bounded() -> None:
    clock = FakeClock()
    cache = ResponseCache(ttl_s=5, max_entries=2, clock=clock)
    calls: list[int] = []
    assert cache.through("a", lambda: calls.append(1) or "A") == "A"
    assert cache.through("a", lambda: calls.append(1) or "B") == "A"
    clock.now += 5.1
    assert cache.through("a", lambda: calls.append(1) or "C") == "C"
    cache.put("b", "B")
    cache.put("c", "C")
    assert len(cache) == 2 and cache.get("a") is None
    assert cache.through(None, lambda: "fresh") == "fresh"


def test_expired_answers_do_not_pile_up() -> None:
    """Sliding windows ask a new key every few seconds: what expired must go, not wait for max_entries."""
    clock = FakeClock()
    cache = ResponseCache(ttl_s=5, max_entries=512, clock=clock)
    for second in range(600):
        cache.put(("logs", second), "a page of 10,000 logs")
        clock.now += 1
    assert len(cache) == 5


def test_cache_computes_a_missing_key_once_for_threads_asking_at_once() -> None:
    import threading

    cache = ResponseCache(ttl_s=5)
    release, computing = threading.Event(), threading.Event()
    answers: list[str] = []
    second_computed: list[bool] = []

    def slow() -> str:
        computing.set()
        release.wait(10)
        return "first"

    def second() -> str:
        second_computed.append(True)
        return "second"

    first_thread = threading.Thread(target=lambda: answers.append(cache.through("k", slow)))
    first_thread.start()
    assert computing.wait(10)
    waiter = threading.Thread(target=lambda: answers.append(cache.through("k", second)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # waiting for the first thread's answer, not computing its own
    release.set()
    first_thread.join(10)
    waiter.join(10)
    assert answers == ["first", "first"] and not second_computed


# ---------------------------------------------------------------- error mapping with fake search clients

class FakeClient:
    """Answers like an empty cluster, or raises what it is given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    def _answer(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {"hits": {"total": {"value": 0}, "hits": []}, "count": 0, "version": {"number": "x"},
                "aggregations": {"min": {"value": None}, "max": {"value": None}}}

    search = count = info = _answer


def app_with(client: FakeClient, origins: str = "", cache_ttl_s: float = 5.0) -> falcon.testing.TestClient:
    settings = load_settings({"CORS_ALLOWED_ORIGINS": origins})
    search = Search(client, IndexNames("unit-"), timeout_s=1.0)
    return falcon.testing.TestClient(create_app(settings, search, cache=ResponseCache(ttl_s=cache_ttl_s)))


def test_unreachable_cluster_is_503_json() -> None:
    from opensearchpy.exceptions import ConnectionError as SearchConnectionError
    from opensearchpy.exceptions import ConnectionTimeout

    for error in (SearchConnectionError("N/A", "refused", None), ConnectionTimeout("TIMEOUT", "slow", None)):
        result = app_with(FakeClient(error)).simulate_get("/query/logs")
        assert result.status_code == 503
        assert result.json["error"] == "search_unavailable"
    assert app_with(FakeClient(SearchConnectionError("N/A", "x", None))).simulate_get("/health").status_code == 503


def test_dsl_error_and_bugs_never_leak() -> None:
    from opensearchpy.exceptions import RequestError

    dsl = RequestError(400, "parsing_exception", {"error": {"reason": "[bool] malformed query SECRET"}})
    for error in (dsl, ValueError("SECRET stack detail")):
        result = app_with(FakeClient(error)).simulate_get("/query/spans")
        assert result.status_code == 500
        assert "SECRET" not in result.text and "Traceback" not in result.text
        assert set(result.json) == {"error", "message", "field"}


def test_red_routes_on_an_empty_cluster() -> None:
    app = app_with(FakeClient())
    assert app.simulate_get("/query/services").json["services"] == []
    assert app.simulate_get("/query/services/x/endpoints").json["endpoints"] == []
    series = app.simulate_get("/query/services/x/metrics", query_string="metric=error_rate").json
    assert len(series) == 1 and len(series[0]["points"]) in (90, 91)
    assert {p["value"] for p in series[0]["points"]} == {0}


def test_sliding_questions_are_cached_explicit_ones_are_not() -> None:
    client = FakeClient()
    app = app_with(client)
    app.simulate_get("/query/logs", query_string="size=5")
    app.simulate_get("/query/logs", query_string="size=5")
    assert client.calls == 1
    app.simulate_get("/query/logs", query_string="size=6")
    assert client.calls == 2
    past = "from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z"
    app.simulate_get("/query/logs", query_string=past)
    app.simulate_get("/query/logs", query_string=past)
    assert client.calls == 4


# ---------------------------------------------------------------- HTTP details

def test_cors_any_origin_and_preflight() -> None:
    app = app_with(FakeClient())
    plain = app.simulate_get("/query/spans", headers={"Origin": "http://localhost:3000"})
    assert plain.headers["access-control-allow-origin"] == "*"
    preflight = app.simulate_options("/query/spans", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    assert preflight.headers["access-control-allow-headers"] == "content-type"


def test_cors_configured_origins() -> None:
    app = app_with(FakeClient(), origins="http://a.example, http://b.example")
    allowed = app.simulate_get("/query/spans", headers={"Origin": "http://b.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://b.example"
    assert "access-control-allow-origin" not in app.simulate_get("/query/spans",
                                                                 headers={"Origin": "http://evil"}).headers


def test_head_and_unknown_method_and_route() -> None:
    app = app_with(FakeClient())
    head = app.simulate_head("/query/spans")
    assert head.status_code == 200 and head.text == ""
    post = app.simulate_post("/query/spans")
    assert post.status_code == 405 and post.json["error"] == "method_not_allowed"
    assert "GET" in post.headers["allow"]
    missing = app.simulate_get("/query/nothing")
    assert missing.status_code == 404 and missing.json["error"] == "not_found"


def test_raw_uri_keeps_encoded_slashes_in_one_segment() -> None:
    client = FakeClient()
    app = app_with(client)
    raw = "/query/services/my%20svc/endpoints/GET%20%2Fapi%2Forders%2F%7Bid%7D/traces?status=ERROR"
    result = app.simulate_get("/query/services/my svc/endpoints/GET /api/orders/{id}/traces",
                              query_string="status=ERROR", extras={"RAW_URI": raw})
    assert result.status_code == 200 and result.json == []
    without_raw = app.simulate_get("/query/services/x/endpoints/GET /api/y/traces", query_string="status=ERROR")
    assert without_raw.status_code == 404


def test_metrics_exposition_counts_routes_and_statuses() -> None:
    app = app_with(FakeClient())
    app.simulate_get("/query/spans")
    app.simulate_get("/query/spans", query_string="size=0")
    text = app.simulate_get("/metrics").text
    assert 'panopticon_api_requests_total{method="GET",route="/query/spans",status="200"} 1.0' in text
    assert 'panopticon_api_requests_total{method="GET",route="/query/spans",status="400"} 1.0' in text
    assert "panopticon_api_request_duration_seconds_bucket" in text


def test_metrics_count_search_requests_and_documents_per_route() -> None:
    client = FakeClient()
    app = app_with(client)
    app.simulate_get("/query/spans")
    app.simulate_get("/query/traces/abc")  # spans and logs: two searches, then 404
    app.simulate_get("/query/spans", query_string="size=0")  # refused before any search
    text = app.simulate_get("/metrics").text
    assert 'panopticon_api_search_requests_total{route="/query/spans"} 1.0' in text
    assert 'panopticon_api_search_requests_total{route="/query/traces/{trace_id}"} 2.0' in text
    assert 'panopticon_api_search_documents_total{route="/query/spans"} 0.0' in text
    assert client.calls == 3


# ---------------------------------------------------------------- rollup answers kept per question

class CountingReader:
    """Stands in for the rollup reader: counts reads and answers with what it was asked."""

    def __init__(self) -> None:
        self.reads: list[tuple[Any, ...]] = []

    def grouped(self, query: Any, from_ms: int, to_ms: int) -> Any:
        from panopticon.common.rollup_reader import Grouped, ReadStats
        self.reads.append(("grouped", query.scope, from_ms, to_ms))
        return Grouped(from_ms=from_ms, to_ms=to_ms, groups=[], stats=ReadStats())

    def series(self, query: Any, from_ms: int, to_ms: int, interval_ms: int) -> Any:
        from panopticon.common.rollup_reader import ReadStats, Series
        self.reads.append(("series", from_ms, to_ms, interval_ms))
        return Series(from_ms=from_ms, to_ms=to_ms, interval_ms=interval_ms, points=[], totals=None,
                      stats=ReadStats())


class DirectSearch:
    def call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


def test_rollup_answers_are_kept_per_minute_resolution_question() -> None:
    from panopticon.api.red import RollupRed

    clock = [0.0]
    reader = CountingReader()
    red = RollupRed(reader, DirectSearch(), ResponseCache(ttl_s=2.0, clock=lambda: clock[0]))  # type: ignore[arg-type]
    minute, day = 60_000, 86_400_000
    base = NOW_MS - NOW_MS % minute
    # two explicit 14-day ranges whose ends fall in the same minutes read the same minute windows: one read
    red.services(TimeRange(base - 14 * day - 50_000, base - 50_000, False), None)
    red.services(TimeRange(base - 14 * day - 20_000, base - 20_000, False), None)
    assert len(reader.reads) == 1
    red.services(TimeRange(base - 14 * day + 10_000, base + 10_000, False), None)  # the next minute
    red.services(TimeRange(base - 14 * day - 20_000, base - 20_000, False), "production")  # another environment
    red.endpoints("checkout", TimeRange(base - 14 * day - 20_000, base - 20_000, False), None)
    assert len(reader.reads) == 4
    clock[0] = 2.5  # kept a short while only
    red.services(TimeRange(base - 14 * day - 20_000, base - 20_000, False), None)
    assert len(reader.reads) == 5
    # series from rollups are kept the same way; series from raw spans (short, sub-minute buckets) are not
    red.series("checkout", TimeRange(base - 14 * day - 50_000, base - 50_000, False), None, 3_600_000)
    red.series("checkout", TimeRange(base - 14 * day - 20_000, base - 20_000, False), None, 3_600_000)
    assert len(reader.reads) == 6
    red.series("checkout", TimeRange(base - 600_000, base - 20_000, False), None, 10_000)
    red.series("checkout", TimeRange(base - 600_000, base - 20_000, False), None, 10_000)
    assert len(reader.reads) == 8
