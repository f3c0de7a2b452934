"""Rollups are exact: per service, environment and endpoint they equal the stored SERVER spans,
through a kill -9 and a restart, with late spans minutes to hours old."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from panopticon.common.histogram import exact_percentile
from panopticon.common.rollup import SCOPE_ENDPOINT, SCOPE_SERVICE, RollupCell
from panopticon.common.settings import load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools.stack import LocalStack
from panopticon.devtools.traffic import generate
from tests.harness import EngineProcess, Key, Store, eventually, produce, rollup_cells, stored_server_spans

pytestmark = pytest.mark.integration


def test_rollups_equal_stored_spans_through_kill_9_and_late_data(settings_env: dict[str, str], unique: str,
                                                                 tmp_path: Path, stack: LocalStack) -> None:
    env = {**settings_env, "ENGINE_INSTANCE_ID": unique, "BULK_FLUSH_INTERVAL_MS": "200",
           "ROLLUP_FLUSH_INTERVAL_MS": "500", "ROLLUP_GRACE_MS": "5000"}
    settings = load_settings(env)
    create_topics(settings, 4)
    store = Store(settings)
    now = int(time.time() * 1000)
    stream = list(generate(seed=21, count=20_000, base_time_ms=now - 90_000, trace_interval_ms=3.0))
    first = EngineProcess(env, tmp_path / "engine-1.log").start()
    second = None
    try:
        produce(settings, stream[:10_000])
        store.reach("traces-apm", 4000)
        first.kill9()
        second = EngineProcess(env, tmp_path / "engine-2.log").start()
        produce(settings, stream[10_000:])
        late = [r for hours_ago in (10 / 60, 1.5, 6)
                for r in generate(seed=int(hours_ago * 100), count=600, base_time_ms=now - int(hours_ago * 3.6e6))]
        sent = produce(settings, late)
        expected_spans = len({(r.trace_id, r.span_id) for r in stream + sent.records if r.kind == "span"})
        assert store.wait_for("traces-apm", expected_spans) == expected_spans

        truth = stored_server_spans(store)
        spans_by_key = {k: len(v) for k, v in truth.items()}
        cells: dict[Key, RollupCell] = {}

        def counted() -> bool:
            nonlocal cells
            cells = rollup_cells(store, SCOPE_ENDPOINT)
            return {k: c.request_count for k, c in cells.items()} == spans_by_key

        eventually(counted, 60, lambda: f"rollups counting the {sum(spans_by_key.values())} stored SERVER spans "
                   f"(last read: {sum(c.request_count for c in cells.values())})", interval_s=1.0)
        assert {k: c.error_count for k, c in cells.items()} == {k: sum(e for _, e in v) for k, v in truth.items()}
        worst = 0.0
        for key, spans in truth.items():
            exact = exact_percentile([d for d, _ in spans], 95)
            estimate = cells[key].percentiles((95,))[0]
            worst = max(worst, abs(estimate - exact) / exact if exact else 0.0)
        assert worst <= 0.01, worst
        services = rollup_cells(store, SCOPE_SERVICE)
        per_service: dict[tuple[str, str], int] = defaultdict(int)
        for (service, environment, _), spans in truth.items():
            per_service[(service, environment)] += len(spans)
        assert {(s, e): c.request_count for (s, e, _), c in services.items()} == per_service
        print(f"\nrollups: {sum(map(len, truth.values()))} SERVER spans in {len(truth)} endpoints; "
              f"worst p95 error {worst:.4%}")
    finally:
        first.ensure_stopped()
        if second:
            assert second.terminate() == 0
