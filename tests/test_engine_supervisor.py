"""The supervisor and the group: replaced workers, a second instance, hung workers, shared memory, counters."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from panopticon.common.settings import Settings
from panopticon.devtools.stack import free_port
from panopticon.engine.shm import SHM_DIR
from tests.harness import (
    EngineProcess,
    Sent,
    Store,
    eventually,
    produce,
    read_topic,
    recent_records,
    settings_with_topics,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings_env: dict[str, str], unique: str) -> dict[str, str]:
    return {**settings_env, "ENGINE_INSTANCE_ID": unique, "BULK_FLUSH_INTERVAL_MS": "200",
            "ENGINE_METRICS_PORT": str(free_port()), "ENGINE_WORKER_TIMEOUT_S": "5"}


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return settings_with_topics(env)


def workers(engine: EngineProcess) -> list[psutil.Process]:
    def started() -> list[psutil.Process]:
        children = [p for p in psutil.Process(engine.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]
        return children if len(children) >= 2 else []

    return eventually(started, 30, "the workers to start")


def wait_for_logs(store: Store, more_than: int) -> None:
    eventually(lambda: store.count("logs-apm") > more_than, 180, f"more than {more_than} logs stored", interval_s=0.3)


def wait_for_replacement(engine: EngineProcess) -> None:
    """Two workers spawned at start, then one replacement."""
    eventually(lambda: engine.log().count("spawned worker") >= 3, 180, "a replacement worker")


def assert_all_stored(store: Store, sent: Sent, engine: EngineProcess) -> None:
    spans = store.wait_for("traces-apm", sent.valid_spans())
    logs = store.wait_for("logs-apm", sent.valid_logs())
    assert (spans, logs) == (sent.valid_spans(), sent.valid_logs()), engine.log()[-3000:]


def harm_a_worker_mid_stream(settings: Settings, env: dict[str, str], engines: list, tmp_path: Path, sent: Sent,
                             victim: int, stored_first: int,
                             harm: Callable[[EngineProcess, psutil.Process], None]) -> EngineProcess:
    """An engine stores ``sent``; once more than ``stored_first`` logs are stored, ``harm`` is done to its worker
    ``victim``. A replacement is spawned and everything is stored all the same."""
    store = Store(settings)
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    engines.append(engine)
    worker = workers(engine)[victim]
    wait_for_logs(store, stored_first)
    harm(engine, worker)
    wait_for_replacement(engine)
    assert_all_stored(store, sent, engine)
    return engine


def test_a_killed_worker_is_replaced_and_nothing_is_lost(settings: Settings, env: dict[str, str], engines: list,
                                                        tmp_path: Path) -> None:
    sent = produce(settings, recent_records(12_000, seed=31))
    engine = harm_a_worker_mid_stream(settings, env, engines, tmp_path, sent, victim=0, stored_first=1000,
                                      harm=lambda _, worker: worker.send_signal(signal.SIGKILL))
    assert "replacing it" in engine.log()
    assert engine.terminate() == 0


def test_with_static_membership_a_replaced_worker_takes_its_seat_at_once(settings: Settings, env: dict[str, str],
                                                                         engines: list, tmp_path: Path) -> None:
    """The replacement joins with the dead worker's group.instance.id: the broker hands it the seat at once,
    so its partitions do not wait for the dead member's session (60 s here) to expire."""
    static_env = {**env, "ENGINE_STATIC_MEMBERSHIP": "true", "ENGINE_SESSION_TIMEOUT_MS": "60000"}
    first = produce(settings, recent_records(4_000, seed=37))
    store = Store(settings)
    engine = EngineProcess(static_env, tmp_path / "engine.log").start()
    engines.append(engine)
    assert_all_stored(store, first, engine)
    workers(engine)[0].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for_replacement(engine)
    more = produce(settings, recent_records(4_000, seed=38))
    total = Sent(first.records + more.records)
    assert store.wait_for("logs-apm", total.valid_logs(), timeout_s=50) == total.valid_logs(), engine.log()[-2000:]
    assert time.monotonic() - killed_at < 55, "the partitions waited for the dead member's session to expire"
    assert_all_stored(store, total, engine)
    assert engine.terminate() == 0


def test_a_hung_worker_is_detected_and_replaced(settings: Settings, env: dict[str, str], engines: list,
                                               tmp_path: Path) -> None:
    def hang(engine: EngineProcess, worker: psutil.Process) -> None:
        worker.send_signal(signal.SIGSTOP)
        eventually(lambda: "missed its heartbeat" in engine.log(), 30,
                   lambda: f"'missed its heartbeat' in the log:\n{engine.log()[-2000:]}")
        eventually(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 10,
                   "the hung worker to be killed")

    sent = produce(settings, recent_records(6_000, seed=32))
    engine = harm_a_worker_mid_stream(settings, env, engines, tmp_path, sent, victim=1, stored_first=500, harm=hang)
    assert engine.terminate() == 0


def test_a_second_instance_shares_the_partitions_and_gives_them_back(settings: Settings, env: dict[str, str],
                                                                    engines: list, tmp_path: Path) -> None:
    sent = produce(settings, recent_records(10_000, seed=33))
    store = Store(settings)
    first = EngineProcess({**env, "ENGINE_WORKERS": "1"}, tmp_path / "first.log", workers=1).start()
    engines.append(first)
    wait_for_logs(store, 1000)
    second_env = {**env, "ENGINE_INSTANCE_ID": env["ENGINE_INSTANCE_ID"] + "-b", "ENGINE_METRICS_PORT": "0"}
    second = EngineProcess(second_env, tmp_path / "second.log", workers=1).start()
    engines.append(second)
    eventually(lambda: "assigned [(" in second.log(), 90, lambda: f"the second's first assignment:\n{second.log()}")
    # the first gave up part of its partitions: revoked, or "lost" when the broker ended its generation first
    assert " revoked " in first.log() or " lost " in first.log(), first.log()[-2000:]
    more = produce(settings, recent_records(10_000, seed=34))
    assignments = first.log().count("assigned [(")
    assert second.terminate() == 0  # it leaves the group: the first takes its partitions back
    eventually(lambda: first.log().count("assigned [(") > assignments, 90,
               lambda: f"the first to take the partitions back:\n{first.log()[-2000:]}")
    last = produce(settings, recent_records(4_000, seed=35))
    total = Sent(sent.records + more.records + last.records)
    assert_all_stored(store, total, first)
    assert first.terminate() == 0


def segments(pid: int) -> list[str]:
    return [p.name for p in SHM_DIR.glob(f"panopticon-{pid}-*")]


def test_no_shared_memory_survives_a_clean_stop_or_a_kill_9(settings: Settings, env: dict[str, str],
                                                            engines: list, tmp_path: Path) -> None:
    engine = EngineProcess(env, tmp_path / "a.log").start()
    engines.append(engine)
    workers(engine)
    assert segments(engine.pid), "the supervisor creates its segments in /dev/shm"
    assert engine.terminate() == 0
    assert segments(engine.pid) == []

    crashed = EngineProcess(env, tmp_path / "b.log").start()
    engines.append(crashed)
    workers(crashed)
    os.kill(crashed.pid, signal.SIGKILL)  # the supervisor alone; its workers follow it (PDEATHSIG)
    assert crashed.process is not None
    crashed.process.wait(10)
    restarted = EngineProcess(env, tmp_path / "c.log").start()
    engines.append(restarted)
    workers(restarted)
    assert segments(crashed.pid) == []
    assert restarted.terminate() == 0
    assert segments(restarted.pid) == []


def metric(text: str, name: str, **labels: str) -> float:
    found = metric_or_none(text, name, **labels)
    if found is None:
        raise AssertionError(f"{name} {labels} not in metrics")
    return found


def metric_or_none(text: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_counters_equal_what_was_sent_stored_and_dead_lettered(settings: Settings, env: dict[str, str],
                                                              engines: list, tmp_path: Path) -> None:
    sent = produce(settings, recent_records(8_000, seed=36, invalid_ratio=0.03))
    store = Store(settings)
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    engines.append(engine)
    assert_all_stored(store, sent, engine)
    dead = read_topic(settings, settings.kafka_apm_dlq_topic)
    url = f"http://127.0.0.1:{env['ENGINE_METRICS_PORT']}/metrics"

    def scrape() -> str:
        return urllib.request.urlopen(url, timeout=5).read().decode()

    logs, spans = settings.kafka_apm_log_topic, settings.kafka_apm_span_topic
    eventually(lambda: metric(scrape(), "panopticon_engine_errors_republished_total") == sent.error_logs(), 180,
               f"{sent.error_logs()} errors republished")
    text = scrape()
    assert metric(text, "panopticon_engine_records_total", topic=logs, outcome="consumed") + metric(
        text, "panopticon_engine_records_total", topic=spans, outcome="consumed") == len(sent.records)
    assert metric(text, "panopticon_engine_events_total", topic=logs, outcome="stored") == sent.valid_logs()
    assert metric(text, "panopticon_engine_events_total", topic=spans, outcome="stored") == sent.valid_spans()
    assert metric(text, "panopticon_engine_events_total", topic=logs, outcome="dlq") + metric(
        text, "panopticon_engine_events_total", topic=spans, outcome="dlq") == len(dead)
    assert metric(text, "panopticon_engine_duplicates_total") == 0
    assert metric(text, "panopticon_engine_bulk_requests_total") > 0
    for partition in range(4):  # everything committed: the log partitions have no lag left
        eventually(lambda p=str(partition): metric_or_none(  # reported once its owner has fetched it
            scrape(), "panopticon_engine_consumer_lag", topic=logs, partition=p) == 0, 20,
            f"no lag on {logs} partition {partition}")
    assert engine.terminate() == 0
