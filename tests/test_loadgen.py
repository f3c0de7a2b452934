"""Traffic generation: determinism, the trace model, ratios, malformed records, and a real broker."""

from __future__ import annotations

import argparse
import io
import random
import time
from collections import Counter, defaultdict
from typing import Any

import msgspec
import pytest

from panopticon.common.normalize import Invalid, Refiner, normalize_environment
from panopticon.common.settings import Settings
from panopticon.common.topics import create_topics
from panopticon.devtools import loadgen, sample
from panopticon.devtools.traffic import SERVICES, Record, generate, select_services
from panopticon.devtools.traffic.generator import FAILURES, HANDLED_ERRORS, UNHANDLED, WARNINGS
from panopticon.devtools.traffic.wire import catalog_strings, is_plain
from tests.harness import consume

BASE_MS = 1_795_773_600_000  # 2026-11-27T06:40:00Z
NOW_MS = BASE_MS + 60_000
_decode = msgspec.json.Decoder().decode


def records(count: int = 20_000, seed: int = 11, **options: Any) -> list[Record]:
    return list(generate(seed=seed, count=count, base_time_ms=BASE_MS, **options))


@pytest.fixture(scope="module")
def plain() -> list[Record]:
    """20k records, no malformed ones."""
    return records()


@pytest.fixture(scope="module")
def mixed() -> list[Record]:
    """20k records, 10% malformed, 30% of log records batched."""
    return records(seed=5, invalid_ratio=0.1, batch_ratio=0.3)


def spans_by_trace(recs: list[Record]) -> dict[str, list[Record]]:
    traces: dict[str, list[Record]] = defaultdict(list)
    for r in recs:
        if r.kind == "span" and r.is_valid:
            traces[r.trace_id].append(r)
    return traces


def refine(kind: str, event: Any) -> Any:
    if not isinstance(event, dict):
        raise Invalid("", "not an object")
    refiner = Refiner()
    return (refiner.log if kind == "log" else refiner.span)(event, NOW_MS, NOW_MS).doc


def elements(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------- determinism and API


def test_same_seed_and_base_time_give_identical_bytes() -> None:
    options = {"invalid_ratio": 0.05, "batch_ratio": 0.2}
    first = records(3000, seed=3, **options)
    assert first == records(3000, seed=3, **options)
    assert [r.value for r in first] != [r.value for r in records(3000, seed=4, **options)]


def test_same_seed_with_a_clock_differs_only_in_timestamps() -> None:
    def content(clock_s: float) -> list[Any]:
        out = []
        for r in generate(seed=9, count=2000, clock=lambda: clock_s):
            for event in elements(_decode(r.value)):
                event.pop("timestamp")
                out.append(event)
        return out

    assert content(1_700_000_000.0) == content(1_800_000_000.5)


def test_count_is_exact_and_zero_is_empty() -> None:
    assert len(records(1234, invalid_ratio=0.3)) == 1234
    assert records(0) == []


def test_base_time_is_the_trace_end() -> None:
    recs = records(500)
    assert max(r.timestamp_ms + r.duration_ms for r in recs if r.kind == "span") <= BASE_MS + 1000
    assert min(r.timestamp_ms for r in recs) >= BASE_MS - 60_000


def test_catalog_strings_need_no_json_escaping() -> None:
    texts = catalog_strings(SERVICES) + [*HANDLED_ERRORS, *WARNINGS, *FAILURES.values(), UNHANDLED]
    assert [t for t in texts if not is_plain(t)] == []


@pytest.mark.parametrize(
    ("wanted", "names"),
    [(None, [s.short for s in SERVICES]), (2, ["order", "payment"]), ("board,user-service", ["board", "user"])],
    ids=["all", "first-two", "names"],
)
def test_service_selection(wanted: Any, names: list[str]) -> None:
    assert [s.short for s in select_services(wanted)] == names
    produced = {r.service for r in records(3000, services=wanted)}
    assert produced == {f"{n}-service" for n in names}


@pytest.mark.parametrize("wanted", [0, 8, "nope", "order,nope"])
def test_unknown_services_are_refused(wanted: Any) -> None:
    with pytest.raises(ValueError):
        select_services(wanted)


# ---------------------------------------------------------------- the trace model


def test_every_trace_has_one_server_root_and_known_parents(plain: list[Record]) -> None:
    for trace in spans_by_trace(plain).values():
        ids = {s.span_id for s in trace}
        roots = [s for s in trace if s.parent_span_id is None]
        assert len(roots) == 1 and roots[0].span_kind == "SERVER" and roots[0] is trace[0]
        assert all(s.parent_span_id in ids for s in trace if s is not roots[0])
        assert len(ids) == len(trace)


def test_children_start_after_and_end_before_their_parents(plain: list[Record]) -> None:
    for trace in spans_by_trace(plain).values():
        by_id = {s.span_id: s for s in trace}
        for span in trace:
            parent = by_id.get(span.parent_span_id or "")
            if parent is None:
                continue
            assert span.timestamp_ms >= parent.timestamp_ms
            # timestamps are cut to milliseconds, so an end may look up to 1 ms late
            assert span.timestamp_ms + span.duration_ms <= parent.timestamp_ms + parent.duration_ms + 1


def test_calls_into_services_are_answered_by_server_spans(plain: list[Record]) -> None:
    by_id = {r.span_id: r for r in plain if r.kind == "span"}
    answered = [s for s in by_id.values()
                if s.span_kind == "SERVER" and s.parent_span_id is not None]
    assert len(answered) > 1000
    for server in answered:
        client = by_id[server.parent_span_id or ""]
        assert client.span_kind == "CLIENT" and client.service != server.service
        assert client.http_status_code == server.http_status_code
        handler = by_id[client.parent_span_id or ""]
        assert handler.span_kind == "INTERNAL" and handler.service == client.service


def labels(span: Record) -> dict[str, Any]:
    labelled: dict[str, Any] = _decode(span.value)["labels"]
    return labelled


def complete(recs: list[Record]) -> list[Record]:
    """Without the last trace, which ``count`` may cut short."""
    return [r for r in recs if r.trace_id != recs[-1].trace_id]


def children_of(recs: list[Record]) -> dict[tuple[str, str | None], list[Record]]:
    out: dict[tuple[str, str | None], list[Record]] = defaultdict(list)
    for r in recs:
        if r.kind == "span" and r.is_valid:
            out[(r.trace_id, r.parent_span_id)].append(r)
    return out


@pytest.mark.parametrize("wanted", [None, "order,payment,user"], ids=["all", "some"])
def test_every_call_into_a_service_is_a_client_span_with_one_server_child(plain: list[Record],
                                                                           wanted: Any) -> None:
    recs = complete(plain if wanted is None else records(5000, services=wanted))
    services = {r.service for r in recs}
    children = children_of(recs)
    calls = [r for r in recs if r.kind == "span" and "peer.service" in labels(r)]
    assert len(calls) > (1000 if wanted is None else 100)
    for client in calls:
        assert client.span_kind == "CLIENT" and labels(client)["peer.service"] in services
        (server,) = children[(client.trace_id, client.span_id)]
        assert server.span_kind == "SERVER" and server.service == labels(client)["peer.service"] != client.service
        assert (client.name, client.http_status_code) == (server.name, server.http_status_code)
        assert labels(client)["server.address"] == server.service
        assert _decode(client.value)["http_path"] == _decode(server.value)["http_path"]
        # the client's span covers the server's and some network time (timestamps are cut to milliseconds)
        assert client.timestamp_ms <= server.timestamp_ms and client.duration_ms > server.duration_ms
        assert client.timestamp_ms + client.duration_ms + 1 >= server.timestamp_ms + server.duration_ms
        assert client.status == server.status
    # and every SERVER span that is not a root answers such a call
    answered = {(r.trace_id, r.span_id) for r in recs if r.kind == "span" and r.span_kind == "SERVER"
                and r.parent_span_id is not None}
    assert answered == {(r.trace_id, children[(r.trace_id, r.span_id)][0].span_id) for r in calls}


def test_database_and_external_calls_are_client_spans_without_children(plain: list[Record]) -> None:
    children = children_of(plain)
    spans = [r for r in plain if r.kind == "span"]
    clients = [s for s in spans if s.span_kind == "CLIENT"]
    databases = [s for s in clients if "db.system" in labels(s)]
    assert 200 <= 1000 * len(databases) / len(spans) <= 400  # db calls per 1000 spans
    assert Counter(labels(s)["db.system"] for s in databases).keys() == {"postgresql", "redis"}
    for span in databases:
        found = labels(span)
        assert found["db.operation"] in span.name.split()  # "SELECT orders", "redis GET"
        assert found["server.address"] and 0 < len(found["db.statement"]) <= 60
        assert found["db.system"] == "redis" or found["db.name"]
        assert "peer.service" not in found and span.http_status_code is None
        assert children[(span.trace_id, span.span_id)] == []
    external = [s for s in clients if "db.system" not in labels(s) and "peer.service" not in labels(s)]
    assert {labels(s)["server.address"] for s in external} >= {"api.stripe.com", "fcm.googleapis.com"}
    for span in external:
        assert children[(span.trace_id, span.span_id)] == []
        event = _decode(span.value)
        if "http_method" in event:
            assert span.http_status_code == (503 if span.status == "ERROR" else 200)
            assert event["http_path"].startswith("/v1/")
    assert len(databases) + len(external) + sum("peer.service" in labels(s) for s in clients) == len(clients)


def test_span_kinds_and_names(plain: list[Record]) -> None:
    spans = [r for r in plain if r.kind == "span"]
    assert {s.span_kind for s in spans} == {"SERVER", "INTERNAL", "CLIENT", "PRODUCER"}
    names = {s.name for s in spans if s.span_kind == "SERVER"}
    assert "GET /api/boards/{boardId}/posts/{postId}/comments" in names
    assert "POST /orders" in names


def test_failing_traces_and_error_logs_are_about_two_percent(plain: list[Record]) -> None:
    traces = spans_by_trace(plain)
    failed = [t for t in traces.values() if any(s.status == "ERROR" for s in t)]
    assert 0.012 <= len(failed) / len(traces) <= 0.03
    assert all(t[0].trace_failed and t[0].http_status_code >= 500 for t in failed)
    levels = Counter(level for r in plain if r.kind == "log" for level in r.levels)
    assert 0.012 <= levels["ERROR"] / sum(levels.values()) <= 0.03
    assert levels["INFO"] > levels["DEBUG"] > levels["WARN"] > levels["ERROR"] > 0
    error_traces = {r.trace_id for r in plain if r.kind == "log" and "ERROR" in r.levels}
    assert {t[0].trace_id for t in failed} <= error_traces


def test_durations_are_heavy_tailed(plain: list[Record]) -> None:
    roots = sorted(r.duration_ms for r in plain if r.kind == "span" and r.parent_span_id is None)
    p50, p99 = roots[len(roots) // 2], roots[int(len(roots) * 0.99)]
    assert min(roots) > 0 and p99 > 10 * p50 and roots[-1] > 3 * p99


def test_environments_aliases_and_unknown_keys(plain: list[Record]) -> None:
    events = [e for r in plain for e in elements(_decode(r.value))]
    spellings = Counter(e["environment"] for e in events)
    assert spellings["production"] > 0.7 * len(events)
    assert {"staging", "prod", "Prod"} <= set(spellings)
    assert {normalize_environment(s) for s in spellings} == {"production", "staging"}
    assert sum("client_ip" in e for e in events) > 100
    assert sum("container_name" in e for e in events) > 100
    assert any(isinstance(e["timestamp"], int) for e in events)
    assert all({"host", "region", "version"} <= set(e["labels"]) for e in events)


def test_batches_follow_the_batch_ratio(mixed: list[Record]) -> None:
    logs = [r for r in mixed if r.kind == "log" and r.is_valid]
    batches = [r for r in logs if r.n_events > 1]
    assert 0.2 <= len(batches) / len(logs) <= 0.35
    for batch in batches:
        value = _decode(batch.value)
        assert isinstance(value, list) and len(value) == batch.n_events
        assert len({e["service_name"] for e in value}) == 1


# ---------------------------------------------------------------- validity under the contract


def test_valid_records_refine_to_their_facts(mixed: list[Record]) -> None:
    for r in (r for r in mixed if r.is_valid):
        docs = [refine(r.kind, e) for e in elements(_decode(r.value))]
        assert r.key == r.trace_id.encode() and len(docs) == r.n_events == r.n_valid
        assert {(d.service_name, d.environment, d.trace_id) for d in docs} == {
            (r.service, r.environment, r.trace_id)}
        if r.kind == "log":
            assert tuple(d.level for d in docs) == r.levels
        else:
            (doc,) = docs
            assert (doc.span_id, doc.parent_span_id, doc.name, doc.kind, doc.status, doc.duration_ms,
                    doc.http_status_code) == (r.span_id, r.parent_span_id, r.name, r.span_kind, r.status,
                                              r.duration_ms, r.http_status_code)


def test_invalid_records_break_the_contract(mixed: list[Record]) -> None:
    bad = [r for r in mixed if not r.is_valid]
    assert 0.08 <= len(bad) / len(mixed) <= 0.12
    defects = Counter(r.defect.split(":")[0] for r in bad)
    assert len(defects) >= 12, defects
    for r in bad:
        try:
            value = _decode(r.value)
        except msgspec.DecodeError:
            assert r.defect in ("not_json", "truncated")
            continue
        rejected = stored = 0
        for event in elements(value):
            try:
                refine(r.kind, event)
                stored += 1
            except Invalid:
                rejected += 1
        assert rejected >= 1 and stored == r.n_valid == len(r.levels), r
        assert rejected + stored == r.n_events


# ---------------------------------------------------------------- producing


def test_pacer_spreads_records_over_time() -> None:
    now = [100.0]
    pacer = loadgen.Pacer(rate=10, clock=lambda: now[0])
    assert pacer.delay(0) == 0.0
    assert pacer.delay(5) == pytest.approx(0.5)
    now[0] = 101.0
    assert pacer.delay(5) == 0.0
    assert loadgen.Pacer(rate=None).delay(10**6) == 0.0


def test_sample_events_are_valid() -> None:
    rng = random.Random(1)
    for kind in ("log", "span"):
        for error in (False, True):
            doc = refine(kind, sample.sample_event(kind, error, NOW_MS, rng))
            assert (doc.http_status_code >= 500) is error


@pytest.mark.integration
def test_produce_delivers_every_record_keyed_by_trace(settings: Settings, unique: str) -> None:
    create_topics(settings, 4)
    recs = records(3000, seed=21, invalid_ratio=0.02)
    err = io.StringIO()
    summary = loadgen.produce(settings, recs, progress=True, out=err)
    assert (summary.produced, summary.delivered, summary.delivery_errors) == (3000, 3000, 0)
    assert summary.events == sum(r.n_events for r in recs) and summary.invalid == sum(
        not r.is_valid for r in recs)

    messages = consume(settings, list(settings.input_topics), f"{unique}-check", len(recs), timeout_s=20)
    topic = {"log": settings.kafka_apm_log_topic, "span": settings.kafka_apm_span_topic}
    assert Counter((m.topic(), m.key(), m.value()) for m in messages) == Counter(
        (topic[r.kind], r.key, r.value) for r in recs)
    partitions: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    for m in messages:
        partitions[(m.topic(), m.key())].add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1


@pytest.mark.integration
def test_cli_paces_and_summarizes(settings_env: dict[str, str], settings: Settings,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    create_topics(settings, 4)
    parser = argparse.ArgumentParser()
    loadgen.add_arguments(parser)
    started = time.monotonic()
    assert loadgen.run(parser.parse_args(["--count", "300", "--rate", "200", "--seed", "1"])) == 0
    assert time.monotonic() - started >= 1.3  # 300 records at 200/s
    out = capsys.readouterr()
    assert "produced 300 records" in out.out and "delivery errors 0" in out.out
    assert "seed 1" in out.err

    parser = argparse.ArgumentParser()
    sample.add_arguments(parser)
    assert sample.run(parser.parse_args(["log", "--error"])) == 0
    printed = capsys.readouterr()
    assert '"level": "ERROR"' in printed.out and "delivered to" in printed.err
    group = f"{settings.kafka_apm_log_topic}-cli"
    assert len(consume(settings, list(settings.input_topics), group, 301, timeout_s=20)) == 301


def test_generation_speed() -> None:
    """The benchmarks preload a million records: generation must not be the bottleneck."""
    started = time.process_time()
    events = sum(r.n_events for r in generate(seed=2, count=50_000, base_time_ms=BASE_MS))
    rate = events / (time.process_time() - started)
    assert rate > 50_000, f"{rate:,.0f} events/s"

