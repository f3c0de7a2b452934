"""The worker's steps are exact together: crash anywhere, replay from the commit, and everything adds up.

The real steps (building -> flushing -> committing, with the real RollupStage, decoder and flusher threads)
run over an in-memory search cluster with OpenSearch's create / external-version rules and a consumer that
only keeps commits. Records go in, in chunks, with the steps polled between chunks; at a random point the
owner dies (kill -9: nothing more of it runs, whatever its flusher had in flight lands or not). A new owner
restores the watermark from the commit metadata and replays from the committed offset, then drains. Every
span is stored once, and the rollup documents add up to the SERVER spans sent, per service and endpoint.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Message, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from panopticon.common.clock import format_timestamp
from panopticon.common.indices import IndexNames
from panopticon.common.rollup import SCOPE_EDGE, SCOPE_ENDPOINT
from panopticon.common.schema import SpanDoc
from panopticon.common.settings import Settings
from panopticon.engine.batch import Batch
from panopticon.engine.building import Builder
from panopticon.engine.bulk import BulkAnswer, Flusher, FlushResult, ItemResult
from panopticon.engine.committing import Committing
from panopticon.engine.counters import SLOTS, CounterSlot
from panopticon.engine.decode import EventDecoder
from panopticon.engine.flushing import Flushing
from panopticon.engine.publish import Publisher
from panopticon.engine.rollups import RollupStage, format_metadata, parse_metadata
from panopticon.engine.shm import BlockPool, segment_name

TOPIC = "apm.spans"
TP = (TOPIC, 0)
T0 = 1_795_770_000_000
POOLS = itertools.count()

record = st.tuples(
    st.integers(-6 * 3_600_000, 120_000),  # event time relative to the stream clock: up to 6 h late
    st.sampled_from(["a", "b"]), st.sampled_from(["GET /x", "POST /y"]),
    st.sampled_from(["SERVER", "SERVER", "CLIENT", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL"]), st.booleans(),
    st.integers(-1, 130),  # the record whose span is the parent (-1: a root); the parent may come later
    st.sampled_from(["", "", "redis"]),  # a client's db.system: a call to a virtual node when no server answers
)
FLUSH = (0, "a", "GET /x", "INTERNAL", False, -1, "")  # twice last, 10 minutes on: the first moves the watermark,
# every half still waiting gives up at the second


class SearchCluster:
    """Documents by id under the bulk API's rules: ``create`` answers 409 for an id it has; an ``index`` with an
    external version wins only over a lower one. Used as the flusher threads' BulkClient."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[int, dict[str, Any]]] = {}

    def send(self, body: bytes | memoryview) -> BulkAnswer | None:
        lines = bytes(body).splitlines()
        statuses = []
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
            (op, meta), = msgspec.json.decode(action_line).items()
            current = self.docs.get(meta["_id"])
            version = meta.get("version", 1)
            if (current is None) if op == "create" else (current is None or version > current[0]):
                self.docs[meta["_id"]] = (version, msgspec.json.decode(doc_line))
                statuses.append(201)
            else:
                statuses.append(409)
        if all(s == 201 for s in statuses):
            return None
        return BulkAnswer(errors=True, items=[{"create": ItemResult(status=s)} for s in statuses])

    def close(self) -> None:
        pass

    def calls(self) -> Counter[tuple[str, str]]:
        """Service-map edges: (caller, callee) -> calls."""
        out: Counter[tuple[str, str]] = Counter()
        for _, doc in self.docs.values():
            if doc.get("scope") == SCOPE_EDGE:
                out[(doc["service_name"], doc["endpoint"])] += doc["request_count"]
        return +out

    def rollup_counts(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for _, doc in self.docs.values():
            if doc.get("scope") == SCOPE_ENDPOINT:
                out[(doc["service_name"], doc["endpoint"])] += doc["request_count"]
        return out

    def span_ids(self) -> list[str]:
        return sorted(doc["span_id"] for _, doc in self.docs.values() if "span_id" in doc)


class CommitLog:
    """The group's committed offsets: what a consumer's commit() leaves behind."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], tuple[int, str]] = {}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        for tp in offsets:
            self.offsets[(tp.topic, tp.partition)] = (tp.offset, tp.metadata)


class Produced:
    """The producer's side of Kafka: records kept by topic, each acknowledged at the next poll."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {}
        self._unacked: list[Any] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, on_delivery: Any) -> None:
        self.records.setdefault(topic, []).append(msgspec.json.decode(value))
        self._unacked.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        acked, self._unacked = self._unacked, []
        for on_delivery in acked:
            on_delivery(None, None)
        return len(acked)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


@dataclass
class Owner:
    """One worker's steps, owning the partition from a committed position."""

    cluster: SearchCluster
    commits: CommitLog
    settings: Settings
    pool: BlockPool
    clock: list[int] = field(default_factory=lambda: [T0])
    produced: Produced = field(default_factory=Produced)

    def __post_init__(self) -> None:
        counters = CounterSlot(memoryview(bytearray(SLOTS * 8)).cast("q"))
        names = IndexNames()
        self.assigned = {TP}
        self.rollups = RollupStage(names, self.settings.rollup_grace_ms, msgspec.json.Encoder().encode,
                                   self.settings.service_map_wait_ms, self.settings.service_map_waiting_max)
        self.rollups.assign(*TP, self.commits.offsets.get(TP, (0, ""))[1])
        now = lambda: self.clock[0]  # noqa: E731
        publisher = Publisher(self.produced, "dlq", "errors", counters)  # type: ignore[arg-type]
        self.flusher = Flusher(self.settings, lambda kind, index: None, 1, lambda: self.cluster,  # type: ignore[arg-type,return-value]
                               counters)
        self.committing = Committing(self.commits, self.rollups, counters, self.assigned, now)  # type: ignore[arg-type]
        self.flushing = Flushing(self.flusher, publisher, self.pool, counters, self.committing)
        decoder = EventDecoder(names, "apm.logs", TOPIC, self.settings.engine_max_message_bytes)
        self.building = Builder(self.settings, decoder, self.rollups, self.pool, publisher, counters,
                                self.flushing.submit, self.assigned, now)

    def take(self, records: list[tuple[Any, ...]], start: int, stop: int) -> None:
        messages = [message(records, offset) for offset in range(start, stop)]
        while messages:
            self.clock[0] = T0 + (start + 1) * 1000
            taken = self.building.submit(messages)
            del messages[:taken]
            start += taken
            self.poll()
            if messages and not taken:  # backpressure: wait for a block to come back
                self.flushing.poll(timeout_s=0.05)

    def poll(self) -> None:
        self.building.poll()
        self.flushing.poll()
        self.committing.poll()

    def kill(self) -> None:
        """kill -9: nothing more of this owner runs. Its flusher may still land what it was sending."""
        self.flusher.terminate()
        self.flusher.join(5)

    def drain(self) -> None:
        written = self.building.join({TP})
        while self.committing.inflight or not written:
            self.flushing.poll(timeout_s=0.05)
            self.committing.advance()
            written = written or self.building.join({TP})
        self.committing.join({TP})
        self.flusher.terminate()


@contextmanager
def blocks(size: int, count: int) -> Iterator[BlockPool]:
    pool = BlockPool.create(segment_name("steps-test", next(POOLS)), size, count)
    try:
        yield pool
    finally:
        pool.close()
        pool.segment.unlink()


def message(records: list[tuple[Any, ...]], offset: int) -> Message:
    rel, service, endpoint, kind, error, parent, peer = records[offset]
    kafka_ms = T0 + offset * 1000 + (600_000 if records[offset] is FLUSH else 0)  # a second per record
    span = {"timestamp": format_timestamp(kafka_ms + rel), "service_name": service, "environment": "production",
            "trace_id": "t", "span_id": f"s{offset}", "name": endpoint, "kind": kind, "duration_ms": 12.5,
            "status": "ERROR" if error else "OK", "labels": {"db.system": peer} if peer else {}}
    if parent >= 0:
        span["parent_span_id"] = f"s{parent}"
    return Message(topic=TOPIC, partition=0, offset=offset, value=msgspec.json.encode(span), key=None,
                   timestamp=(1, kafka_ms))


def run_through(records: list[tuple[Any, ...]], config: Settings) -> SearchCluster:
    """One owner, no crash: what the stream's documents are."""
    cluster = SearchCluster()
    with blocks(16 * 1024, 2) as pool:
        owner = Owner(cluster, CommitLog(), config, pool)
        owner.take(records, 0, len(records))
        owner.drain()
    return cluster


@given(st.lists(record, min_size=1, max_size=120), st.data())
@settings(max_examples=300, deadline=None)
def test_replay_after_a_crash_adds_up(records: list[tuple[Any, ...]], data: st.DataObject) -> None:
    """RED cells equal the SERVER spans sent, and service-map edges equal a run without the crash."""
    records = [*records, FLUSH, FLUSH]
    config = Settings(bulk_batch_size=data.draw(st.integers(1, 12)),
                      bulk_flush_interval_ms=data.draw(st.integers(1, 20_000)),
                      rollup_flush_interval_ms=data.draw(st.integers(1, 20_000)), rollup_grace_ms=5_000,
                      service_map_wait_ms=data.draw(st.sampled_from([0, 5_000, 30_000])),
                      service_map_waiting_max=data.draw(st.sampled_from([2, 100_000])))
    crash_at = data.draw(st.integers(0, len(records)))
    chunks = data.draw(st.integers(1, 10))
    cluster, commits = SearchCluster(), CommitLog()
    with blocks(16 * 1024, 2) as pool:
        first = Owner(cluster, commits, config, pool)
        step = max(1, crash_at // chunks)
        for start in range(0, crash_at, step):
            first.take(records, start, min(crash_at, start + step))
        first.kill()
    with blocks(16 * 1024, 2) as pool:  # the new owner is a new process, with its own blocks
        second = Owner(cluster, commits, config, pool)
        restart = commits.offsets.get(TP, (0, ""))[0]
        second.take(records, restart, len(records))
        second.drain()
    assert cluster.rollup_counts() == Counter((r[1], r[2]) for r in records if r[3] == "SERVER")
    assert cluster.calls() == run_through(records, config).calls()
    assert cluster.span_ids() == sorted(f"s{i}" for i in range(len(records)))
    assert commits.offsets[TP][0] == len(records)
    assert not first.produced.records and not second.produced.records  # valid spans: no dead letter


def test_a_sealed_batch_waits_for_every_batch_before_it() -> None:
    """Committing: batches finish out of order; the commit only takes the finished prefix."""
    commits = CommitLog()
    committing = Committing(commits, RollupStage(IndexNames(), 0, msgspec.json.encode),  # type: ignore[arg-type]
                            CounterSlot(memoryview(bytearray(SLOTS * 8)).cast("q")), {TP}, lambda: 10_000)
    first, second = Batch(1, None, 0), Batch(2, None, 0)
    first.cover(TOPIC, 0, 9)
    second.cover(TOPIC, 0, 19)
    for batch in (first, second):
        batch.sealed = True
        committing.submit(batch)
    second.flushed = True
    assert committing.poll() and commits.offsets == {}
    first.flushed = True
    committing.join({TP})
    assert commits.offsets == {TP: (20, "")}


def test_metadata_round_trip() -> None:
    assert parse_metadata(format_metadata(T0)) == T0
    assert parse_metadata(None) == 0 and parse_metadata("") == 0 and parse_metadata("junk") == 0


def test_building_takes_records_until_no_block_is_free() -> None:
    """Backpressure: a full block is sealed and handed on; with no free block the rest is not taken."""
    with blocks(2048, 2) as pool:
        owner = Owner(SearchCluster(), CommitLog(), Settings(), pool)
        owner.flusher.terminate()  # nothing comes back: blocks stay in flight
        records = [(0, "a", "GET /x", "SERVER", False, -1, "")] * 40
        taken = owner.building.submit([message(records, i) for i in range(40)])
        assert 0 < taken < 40
        assert pool.free == 0 and owner.committing.inflight == 2 and owner.building.batch is None


def test_a_flushed_batch_lets_its_records_go_while_it_waits_for_the_batches_before_it() -> None:
    """Once its answer is read, a batch keeps only what the commit needs: one batch retried for seconds must not
    keep every later batch's records (Messages) in memory behind it."""
    with blocks(16 * 1024, 3) as pool:
        owner = Owner(SearchCluster(), CommitLog(), Settings(bulk_batch_size=2), pool)
        owner.flusher.terminate()  # the answers are handed in below, in the order a slow first request gives
        records = [(0, "a", "GET /x", "INTERNAL", False, -1, "")] * 4
        assert owner.building.submit([message(records, i) for i in range(4)]) == 4
        owner.building.seal()
        first, second = owner.committing.tracker._inflight
        owner.flusher.done.put(FlushResult(second, None, {}, 0, 0.0, 0))
        owner.flushing.poll()
        assert second.flushed and second.block is None
        assert not second.records and not second.starts and not second.kinds
        assert len(first.records) == 2 and owner.committing.inflight == 2  # commits go in seal order
        owner.flusher.done.put(FlushResult(first, None, {}, 0, 0.0, 0))
        owner.flushing.poll()
        owner.committing.join({TP})
        assert owner.committing.inflight == 0 and owner.commits.offsets[TP][0] == 4


class Refusing(SearchCluster):
    """Refuses every span document as unmappable, as a cluster does for a field of the wrong type."""

    def send(self, body: bytes | memoryview) -> BulkAnswer | None:
        items = len(bytes(body).splitlines()) // 2
        error = {"type": "mapper_parsing_exception", "reason": "failed to parse field [duration_ms]"}
        return BulkAnswer(errors=True, items=[{"create": ItemResult(status=400, error=error)}] * items)


def test_flushing_dead_letters_a_refused_document_with_its_reason_before_the_commit() -> None:
    commits = CommitLog()
    with blocks(16 * 1024, 2) as pool:
        owner = Owner(Refusing(), commits, Settings(), pool)
        owner.take([(0, "a", "GET /x", "INTERNAL", False, -1, "")], 0, 1)
        owner.drain()
    (letter,) = owner.produced.records["dlq"]
    assert letter["reason"] == "rejected_by_search" and "failed to parse field [duration_ms]" in letter["detail"]
    assert letter["offset"] == 0 and msgspec.json.decode(letter["value"])["span_id"] == "s0"
    assert commits.offsets[TP][0] == 1  # committed once the dead letter was acknowledged


def test_calls_pair_in_either_order_and_name_their_virtual_nodes() -> None:
    """The service map's rules on a known stream: CLIENT->SERVER and PRODUCER->CONSUMER pairs whichever comes
    first, a root SERVER called by `user`, a database client and an unanswered one given up after the wait."""
    state = RollupStage(IndexNames(), 0, msgspec.json.encode, call_wait_ms=30_000).get(TP)

    def span(offset: int, service: str, kind: str, span_id: str, parent: str | None = None, error: bool = False,
             duration: float = 10.0, labels: dict[str, Any] | None = None, at_s: int = 0) -> None:
        doc = SpanDoc(timestamp="", ingested_at="", service_name=service, environment="production", trace_id="t",
                      span_id=span_id, parent_span_id=parent, name="op", kind=kind, duration_ms=duration,
                      status="ERROR" if error else "OK", labels=labels or {})
        state.add(offset, doc, T0 + at_s * 1000, T0 + at_s * 1000)

    span(0, "web", "SERVER", "a")  # root: user -> web
    span(1, "web", "CLIENT", "b", "a", duration=40.0)  # web -> cart, client first
    span(2, "cart", "SERVER", "c", "b", error=True, duration=30.0)
    span(3, "cart", "SERVER", "e", "d")  # cart answers before its caller's client span arrives
    span(4, "web", "CLIENT", "d", "a", duration=20.0)
    span(5, "cart", "CLIENT", "f", "c", labels={"db.system": "redis"})  # no server: a virtual node
    span(6, "cart", "PRODUCER", "g", "c")
    span(7, "mailer", "CONSUMER", "h", "g")
    span(8, "cart", "PRODUCER", "m", "c", labels={"messaging.system": "kafka", "messaging.destination.name": "mail"})
    span(9, "web", "CLIENT", "i", "a")  # unanswered, no labels: unpaired
    assert list(state.clients) == ["m", "i"] and not state.servers  # the database call counted at once
    span(10, "web", "INTERNAL", "j", at_s=90)  # moves the watermark past the wait ...
    span(11, "web", "INTERNAL", "k", at_s=90)  # ... and the waiting clients give up here
    cells = {key[1:]: cell for w in state.windows() for key, cell in w.cells.items() if key[0] == SCOPE_EDGE}
    counts = {(caller, callee): cell.request_count for (caller, _, callee), cell in cells.items()}
    assert counts == {("user", "web"): 1, ("web", "cart"): 2, ("cart", "redis"): 1, ("cart", "mailer"): 1,
                      ("cart", "kafka/mail"): 1, ("web", ""): 1}
    web_cart = cells[("web", "production", "cart")]
    assert web_cart.error_count == 1 and web_cart.duration_max == 40.0 and web_cart.duration_min == 20.0
    assert state.tally.unpaired == 1 and not state.clients and not state.servers


def test_the_waiting_store_stays_within_its_bound() -> None:
    stage = RollupStage(IndexNames(), 0, msgspec.json.encode, call_wait_ms=3_600_000, waiting_max=100)
    state = stage.get(TP)
    for offset in range(5_000):  # a flood of clients nobody answers
        doc = SpanDoc(timestamp="", ingested_at="", service_name="web", environment="production", trace_id="t",
                      span_id=f"s{offset}", name="op", kind="CLIENT", duration_ms=1.0, status="OK")
        state.add(offset, doc, T0 + offset, T0 + offset)
        assert stage.waiting() <= 100
    assert stage.tally.evicted == 4_900 and stage.tally.unpaired == 4_900
    assert next(iter(state.clients.values())).offset == 4_900  # the oldest still waiting: it holds the commit
