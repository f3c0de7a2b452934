"""The in-stream rollup design is exact: crash anywhere, replay from the commit, and the documents add up.

A simulation of the worker's contract with the real RollupStage: records are processed in order; at
random points the changed windows are written (external versions: an older write never wins) and the
commit is taken as min(processed, hold) with the hold's metadata; at a random point the process dies and
a new one restores the watermark from the commit metadata and replays from the committed offset.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from common.indices import IndexNames
from common.rollup import SCOPE_ENDPOINT
from common.schema import SpanDoc
from engine.rollups import RollupStage, format_metadata, parse_metadata

TP = ("apm.spans", 0)
T0 = 1_795_770_000_000


def span(service: str, endpoint: str, kind: str, error: bool) -> SpanDoc:
    return SpanDoc(timestamp="", ingested_at="", service_name=service, environment="production", trace_id="t",
                   span_id="s", name=endpoint, kind=kind, duration_ms=12.5, status="ERROR" if error else "OK")


record = st.tuples(
    st.integers(-6 * 3_600_000, 120_000),  # event time relative to the stream clock: up to 6 h late
    st.sampled_from(["a", "b"]), st.sampled_from(["GET /x", "POST /y"]),
    st.sampled_from(["SERVER", "SERVER", "CLIENT"]), st.booleans(),
)


class Store:
    """Rollup documents by id, with the search cluster's external-version rule."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[int, dict[str, Any]]] = {}

    def write(self, action: bytes, doc: bytes) -> None:
        meta = msgspec.json.decode(action)["index"]
        current = self.docs.get(meta["_id"])
        if current is None or meta["version"] > current[0]:
            self.docs[meta["_id"]] = (meta["version"], msgspec.json.decode(doc))

    def counts(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for _, doc in self.docs.values():
            if doc["scope"] == SCOPE_ENDPOINT:
                out[(doc["service_name"], doc["endpoint"])] += doc["request_count"]
        return out


def run(stage: RollupStage, store: Store, records: list[tuple[Any, ...]], start: int, stop: int,
        flush_every: int, commit: list[Any]) -> None:
    state = stage.get(TP)
    for offset in range(start, stop):
        rel, service, endpoint, kind, error = records[offset]
        clock = T0 + offset * 1000  # the Kafka timestamp advances a second per record
        state.add(offset, span(service, endpoint, kind, error), clock + rel, clock)
        if (offset + 1) % flush_every == 0:
            flush(stage, store, offset + 1, commit, final=False)


def flush(stage: RollupStage, store: Store, processed: int, commit: list[Any], final: bool) -> None:
    writes = stage.writes(T0, {TP} if final else None)
    for write in writes:
        store.write(write.action, write.doc)
        if write.final:
            write.window.release_seq = processed  # stored at once in this simulation
    stage.release(processed)
    commit[:] = list(stage.position(TP, processed, None))


@given(st.lists(record, min_size=1, max_size=160), st.integers(1, 12), st.data())
@settings(max_examples=300, deadline=None)
def test_replay_after_a_crash_adds_up(records: list[tuple[Any, ...]], flush_every: int, data: st.DataObject) -> None:
    names = IndexNames()
    truth = Counter((s, e) for _, s, e, kind, _ in records if kind == "SERVER")
    crash_at = data.draw(st.integers(0, len(records)))

    store = Store()
    commit: list[Any] = [0, None]
    first = RollupStage(names, 5_000, msgspec.json.Encoder().encode)
    first.assign(*TP, None)
    run(first, store, records, 0, crash_at, flush_every, commit)
    # kill -9: the first stage is gone; a new owner starts from the commit
    second = RollupStage(names, 5_000, msgspec.json.Encoder().encode)
    second.assign(*TP, commit[1])
    run(second, store, records, commit[0], len(records), flush_every, commit)
    flush(second, store, len(records), commit, final=True)
    assert store.counts() == truth
    assert commit[0] == len(records)


def test_metadata_round_trip() -> None:
    assert parse_metadata(format_metadata(T0)) == T0
    assert parse_metadata(None) == 0 and parse_metadata("") == 0 and parse_metadata("junk") == 0
