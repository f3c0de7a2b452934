"""Engine pieces that need no server: throughput lines, retention, commit tracking, shared memory."""

from __future__ import annotations

import calendar
import os

import pytest

from panopticon.common.indices import IndexNames, expired_indices
from panopticon.common.settings import load_settings
from panopticon.engine.batch import Batch
from panopticon.engine.committing import CommitTracker
from panopticon.engine.counters import Counter, CounterTable
from panopticon.engine.shm import SHM_DIR, BlockPool, remove_stale_segments, segment_name
from panopticon.engine.throughput import ThroughputLog, duration

DAY = 86_400_000


def test_throughput_lines_follow_the_original_rules() -> None:
    log = ThroughputLog(batch_size=1000, min_interval_ms=10_000, target=5_000, started_ms=0)
    assert log.lines({"apm.spans": 999}, 60_000) == []  # not enough records yet
    assert log.lines({"apm.spans": 1500}, 5_000) == []  # too soon
    (line,) = log.lines({"apm.spans": 1500}, 15_000)
    assert line == "throughput topic=apm.spans total=1,500 elapsed=15s avg=100/s recent=100/s eta(5,000)=35s"
    assert log.lines({"apm.spans": 2000}, 30_000) == []  # grew by 500 < 1000
    (line,) = log.lines({"apm.spans": 3500}, 65_000)
    assert "total=3,500 elapsed=1m05s" in line and "recent=40/s" in line and "eta(5,000)=37s" in line
    assert ThroughputLog(0, 0, None, 0).lines({"t": 10**6}, 10**6) == []  # <= 0 turns it off
    assert duration(3725) == "1h02m05s"


def test_retention_deletes_only_expired_daily_indices() -> None:
    settings = load_settings({"RETENTION_LOGS_DAYS": "14", "RETENTION_TRACES_DAYS": "7"})
    names = IndexNames("p-")
    now = calendar.timegm((2026, 11, 27, 12, 0, 0)) * 1000
    existing = ["p-logs-apm-2026.11.13", "p-logs-apm-2026.11.12", "p-traces-apm-2026.11.20",
                "p-traces-apm-2026.11.19", "p-metrics-apm-1m-2026.08.28", "p-metrics-apm-1m-2026.08.29",
                "other-logs-apm-2020.01.01", "p-logs-apm-junk"]
    assert sorted(expired_indices(existing, names, settings, now)) == [
        "p-logs-apm-2026.11.12", "p-metrics-apm-1m-2026.08.28", "p-traces-apm-2026.11.19"]


def batch(seq: int, offsets: dict[tuple[str, int], int]) -> Batch:
    b = Batch(seq, None, 0)
    b.offsets.update(offsets)
    b.sealed = True
    return b


def same(tp: tuple[str, int], safe: int, mark: int | None) -> tuple[int, str | None]:
    return safe, None


def test_commits_only_the_finished_prefix() -> None:
    tracker = CommitTracker()
    a, b, c = batch(1, {("t", 0): 10}), batch(2, {("t", 0): 20, ("t", 1): 5}), batch(3, {("t", 1): 9})
    for x in (a, b, c):
        tracker.track(x)
    b.flushed = c.flushed = True
    assert tracker.advance() == [] and tracker.due([("t", 0), ("t", 1)], same) == {}
    a.flushed = True
    a.pending = 1  # a DLQ record not yet acknowledged
    assert tracker.advance() == []
    a.pending = 0
    assert tracker.advance() == [a, b, c]
    due = tracker.due([("t", 0), ("t", 1)], same)
    assert due == {("t", 0): (20, None), ("t", 1): (9, None)}
    tracker.committed(due)
    assert tracker.due([("t", 0), ("t", 1)], same) == {}


def test_a_revoked_partition_is_never_committed_by_old_batches() -> None:
    tracker = CommitTracker()
    old = batch(1, {("t", 0): 10, ("t", 1): 3})
    tracker.track(old)
    tracker.forget([("t", 0)])
    old.flushed = True
    tracker.advance()
    assert tracker.due([("t", 0), ("t", 1)], same) == {("t", 1): (3, None)}


def test_blocks_are_a_fixed_free_list() -> None:
    pool = BlockPool.create(segment_name("blocks-test", 0), 64, 2)
    try:
        first, second = pool.acquire(), pool.acquire()
        assert first is not None and second is not None and pool.acquire() is None
        assert first.fill(b"x" * 64) and not first.fill(b"x" * 65)
        assert bytes(first.body()) == b"x" * 64
        pool.release(first)
        assert pool.free == 1
    finally:
        pool.close()
        pool.segment.unlink()
    assert not (SHM_DIR / pool.segment.name).exists()


def test_counters_are_shared_across_fork() -> None:
    table = CounterTable.create(segment_name("counters-test", 0), 2)
    try:
        pid = os.fork()
        if pid == 0:
            table.slots[1].add(Counter.stored_spans, 41)
            table.slots[1].add(Counter.stored_spans)
            os._exit(0)
        os.waitpid(pid, 0)
        assert table.totals()[Counter.stored_spans] == 42
    finally:
        table.close()
        table.segment.unlink()


def test_stale_segments_of_a_dead_supervisor_are_removed() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # a pid that no longer runs
    path = SHM_DIR / f"panopticon-{pid}-blocks-0"
    if not SHM_DIR.is_dir():
        pytest.skip("no /dev/shm")
    path.write_bytes(b"")
    assert path.name in remove_stale_segments()
    assert not path.exists()


def test_an_unreachable_broker_is_named_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    from confluent_kafka import KafkaError

    from panopticon.common.clients import KafkaErrorLog

    now = [0.0]
    errors = KafkaErrorLog("kafka-1:9092", every_s=30.0, clock=lambda: now[0])
    down = KafkaError(KafkaError._TRANSPORT, "Connect to ipv4#10.0.0.1:9092 failed: Connection refused")
    with caplog.at_level("WARNING", logger="panopticon.common.clients"):
        for at in (0.0, 1.0, 29.9, 30.0, 45.0, 61.0):
            now[0] = at
            errors(down if at != 45.0 else KafkaError(KafkaError._ALL_BROKERS_DOWN, "all down"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # at 0, 30 and 61 s: both codes are "unreachable", one line per period
    assert all(line.startswith("Kafka unreachable at KAFKA_BROKERS=kafka-1:9092: ") for line in lines)


@pytest.mark.parametrize(("status", "body", "user", "variable", "words"), [
    (401, b"Unauthorized", "engine", "OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD", "credentials of user 'engine'"),
    (401, b"", "", "OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD", "none are set"),
    (403, {"error": {"type": "security_exception", "reason": "no permissions for [indices:data/write/bulk]"}},
     "engine", "OPENSEARCH_USERNAME", "no permissions for [indices:data/write/bulk]"),
    (403, {"type": "security_exception", "reason": "no permissions for [indices:admin/create]"}, "engine",
     "OPENSEARCH_USERNAME", "indices:admin/create"),  # a bulk item's error
    (403, b'{"error":{"type":"cluster_block_exception","reason":"index [x] blocked"},"status":403}', "engine",
     None, ""),
    (503, b"", "engine", None, ""),
    ("N/A", None, "engine", None, ""),  # opensearch-py's ConnectionError
], ids=["401", "401-no-user", "403", "403-item", "403-block", "503", "no-status"])
def test_search_refusals_name_what_to_fix(status: object, body: object, user: str, variable: str | None,
                                         words: str) -> None:
    from panopticon.common.clients import search_refusal

    settings = load_settings({"OPENSEARCH_URL": "https://engine:pw@search:9200", "OPENSEARCH_USERNAME": user})
    refusal = search_refusal(settings, status, body)
    if variable is None:
        assert refusal is None
        return
    assert refusal is not None and refusal.variable == variable
    assert words in str(refusal) and "\n" not in str(refusal) and "pw@" not in str(refusal)
