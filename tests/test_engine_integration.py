"""The engine against the real local stack: nothing lost, nothing duplicated, through crashes and outages."""

from __future__ import annotations

import functools
import re
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from panopticon.common.rollup import SCOPE_ENDPOINT
from panopticon.common.settings import Settings
from panopticon.devtools.stack import LocalStack, free_port
from tests.harness import (
    EngineProcess,
    Sent,
    Store,
    decode,
    produce,
    read_topic,
    recent_records,
    rollup_cells,
    settings_with_topics,
    stored_server_spans,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings_env: dict[str, str], unique: str) -> dict[str, str]:
    return {**settings_env, "ENGINE_INSTANCE_ID": unique, "BULK_FLUSH_INTERVAL_MS": "200",
            "STREAM_THROUGHPUT_BATCH_SIZE": "5000", "STREAM_THROUGHPUT_MIN_INTERVAL_MS": "2000"}


@pytest.fixture
def engine_settings(env: dict[str, str]) -> Settings:
    return settings_with_topics(env)


records = functools.partial(recent_records, invalid_ratio=0.02, age_ms=120_000)


def check_dead_letters(settings: Settings, sent: Sent) -> list:
    letters = [decode(m) for m in read_topic(settings, settings.kafka_apm_dlq_topic)]
    seen = {(d["source_topic"], d["partition"], d["offset"]) for d in letters}
    missing = sent.invalid_positions() - seen
    assert not missing, f"{len(missing)} malformed records have no DLQ record"
    assert all(d["reason"] and d["detail"] and "value" in d and d["failed_at"] for d in letters)
    return letters


def test_a_stream_is_stored_exactly_once(engine_settings: Settings, env: dict[str, str], engines: list,
                                         tmp_path: Path) -> None:
    """50,000 loadgen records with 2% malformed, in a normal run."""
    sent = produce(engine_settings, records(50_000, seed=11))
    started = time.monotonic()
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    engines.append(engine)
    store = Store(engine_settings)
    spans = store.wait_for("traces-apm", sent.valid_spans())
    logs = store.wait_for("logs-apm", sent.valid_logs())
    wall = time.monotonic() - started
    assert (spans, logs) == (sent.valid_spans(), sent.valid_logs()), engine.log()[-3000:]

    check_dead_letters(engine_settings, sent)
    errors = read_topic(engine_settings, engine_settings.kafka_apm_log_error_topic)
    assert len(errors) == sent.error_logs()  # exactly once each in a normal run
    keys = Counter(m.key().decode() for m in errors)
    assert sum(keys.values()) == len(errors) and all(keys)
    first = decode(errors[0])
    assert first["level"] in ("ERROR", "FATAL") and first["service_name"] == errors[0].key().decode()

    assert engine.terminate() == 0
    log = engine.log()
    assert re.search(r"throughput topic=\S+ total=[\d,]+ elapsed=\S+ avg=[\d,]+/s recent=[\d,]+/s", log), log[-2000:]
    print(f"\nstream: {len(sent.records)} records, {spans} spans + {logs} logs stored, "
          f"{len(sent.invalid_positions())} malformed, {len(errors)} errors republished, {wall:.1f}s")


def test_kill_9_mid_stream_loses_and_duplicates_nothing(engine_settings: Settings, env: dict[str, str],
                                                        engines: list, tmp_path: Path, stack: LocalStack) -> None:
    # enough records that the kill lands mid-stream even when a count is slow on a loaded machine (the engine
    # drains this backlog in about 10 s on real Kafka and OpenSearch)
    sent = produce(engine_settings, records(50_000, seed=12))
    store = Store(engine_settings)
    first = EngineProcess(env, tmp_path / "engine-1.log").start()
    engines.append(first)
    store.reach("logs-apm", sent.valid_logs() // 10)
    first.kill9()
    stored_at_kill = store.count("logs-apm")
    second = EngineProcess(env, tmp_path / "engine-2.log").start()
    engines.append(second)
    spans = store.wait_for("traces-apm", sent.valid_spans())
    logs = store.wait_for("logs-apm", sent.valid_logs())
    assert stored_at_kill < sent.valid_logs()
    assert (spans, logs) == (sent.valid_spans(), sent.valid_logs()), second.log()[-3000:]
    check_dead_letters(engine_settings, sent)
    errors = read_topic(engine_settings, engine_settings.kafka_apm_log_error_topic)
    assert len(errors) >= sent.error_logs()  # duplicates on the error topic only after a crash
    assert second.terminate() == 0


def test_search_outage_pauses_and_resumes(tmp_path: Path, engines: list, unique: str, stack: LocalStack,
                                          settings_env: dict[str, str]) -> None:
    """The search server stopped for 20 s mid-stream: no crash, bounded memory, resumes alone, zero lost."""
    metrics_port = free_port()
    env = {**settings_env, "ENGINE_INSTANCE_ID": unique,
           "ENGINE_METRICS_PORT": str(metrics_port), "BULK_FLUSH_INTERVAL_MS": "200", "BULK_BATCH_SIZE": "1000",
           "ENGINE_SHM_BLOCKS": "2"}
    settings = settings_with_topics(env)
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    engines.append(engine)
    store = Store(settings)
    all_records = records(16_000, seed=13)
    produce(settings, all_records[:6000])
    store.wait_for("logs-apm", Sent(all_records[:6000]).valid_logs(), timeout_s=120)

    stack.stop_search()
    producer = threading.Thread(target=produce, args=(settings, all_records[6000:]))
    producer.start()
    paused, rss = watch(engine, metrics_port, seconds=20, longest_s=60)
    stack.start_search()
    producer.join()

    assert engine.process is not None and engine.process.poll() is None, "the engine died during the outage"
    assert paused, "no worker paused fetching while the search server was down"
    assert max(rss) - min(rss) < 150, f"memory grew during the outage: {rss}"
    total = Sent(all_records)
    spans = store.wait_for("traces-apm", total.valid_spans())
    logs = store.wait_for("logs-apm", total.valid_logs())
    assert (spans, logs) == (total.valid_spans(), total.valid_logs()), engine.log()[-3000:]
    assert engine.terminate() == 0  # the final rollup writes are stored before the commit
    truth = {key: len(spans) for key, spans in stored_server_spans(store).items()}
    assert {key: cell.request_count for key, cell in rollup_cells(store, SCOPE_ENDPOINT).items()} == truth


def watch(engine: EngineProcess, metrics_port: int, seconds: float, longest_s: float) -> tuple[bool, list[float]]:
    """Sample the engine's memory (MB, all processes) and whether a worker reports being paused, for ``seconds``,
    or longer until a pause is seen (a loaded machine is slow to fill the blocks), at most ``longest_s``."""
    import psutil

    paused = False
    rss: list[float] = []
    started = time.monotonic()
    while time.monotonic() - started < (seconds if paused else longest_s):
        parent = psutil.Process(engine.pid)
        procs = [parent, *parent.children()]
        rss.append(sum(p.memory_info().rss for p in procs) / 1e6)
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
            paused = paused or bool(re.search(r'panopticon_engine_paused\{worker="\d+"\} 1', text))
        except OSError:
            pass
        time.sleep(1.0)
    return paused, rss[2:] or rss


def test_sigterm_drains_and_exits_zero(engine_settings: Settings, env: dict[str, str], engines: list,
                                       tmp_path: Path) -> None:
    sent = produce(engine_settings, records(15_000, seed=14, invalid_ratio=0.0))
    store = Store(engine_settings)
    engine = EngineProcess({**env, "ENGINE_SHUTDOWN_TIMEOUT_S": "20"}, tmp_path / "engine.log").start()
    engines.append(engine)
    store.reach("logs-apm", sent.valid_logs() // 4)
    started = time.monotonic()
    assert engine.terminate(timeout_s=25) == 0
    assert time.monotonic() - started < 20
    stored = store.count("logs-apm") + store.count("traces-apm")
    # what the engine committed is stored: a restart picks up exactly the rest
    second = EngineProcess(env, tmp_path / "engine-2.log").start()
    engines.append(second)
    spans = store.wait_for("traces-apm", sent.valid_spans())
    logs = store.wait_for("logs-apm", sent.valid_logs())
    assert (spans, logs) == (sent.valid_spans(), sent.valid_logs())
    assert stored > 0
    assert "drained: 0 batches unfinished" in engine.log()
    assert second.terminate() == 0
