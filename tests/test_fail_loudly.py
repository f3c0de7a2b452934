"""Failing loudly: a refused password, a port in use, an unreachable broker, a worker that cannot boot each
say so in one line naming the variable to fix and stop (or keep retrying) visibly, never quietly.

The search cluster's refusals come from a real HTTP reverse proxy (``tests.harness.SearchProxy``) in front of
the real OpenSearch, which has no security plugin here.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from panopticon.common.settings import Settings
from panopticon.devtools.stack import LocalStack, free_port
from tests.harness import (
    ROOT,
    EngineProcess,
    SearchProxy,
    Store,
    committed,
    eventually,
    produce,
    recent_records,
    settings_with_topics,
)

pytestmark = pytest.mark.integration

USER, PASSWORD = "engine", "s3cret"


def one_line_naming(output: str, variable: str) -> str:
    """The output is one line, it names ``variable`` and it is no traceback."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert re.search(rf"(^|\W){re.escape(variable)}(\W|$)", lines[0]), output
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture
def proxy(stack: LocalStack) -> Iterator[SearchProxy]:
    server = SearchProxy(stack.env()["OPENSEARCH_URL"], USER, PASSWORD)
    yield server
    server.close()


@pytest.fixture
def env(settings_env: dict[str, str], proxy: SearchProxy) -> dict[str, str]:
    """The engine's environment: the search cluster behind the proxy, with the right credentials."""
    return {**settings_env, "OPENSEARCH_URL": proxy.url, "OPENSEARCH_USERNAME": USER,
            "OPENSEARCH_PASSWORD": PASSWORD, "BULK_FLUSH_INTERVAL_MS": "200"}


@pytest.fixture
def settings(env: dict[str, str], stack: LocalStack) -> Settings:
    """Settings of the test's side: the search cluster itself (no proxy), the engine's topics and prefix."""
    return settings_with_topics({**env, "OPENSEARCH_URL": stack.env()["OPENSEARCH_URL"]})


def run_command(args: list[str], env: dict[str, str], timeout_s: float = 90.0) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "panopticon", *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, timeout=timeout_s)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


# ---------------------------------------------------------------- the search cluster refuses

@pytest.mark.parametrize(("refusal", "password", "variable", "named"), [
    (None, "wrong", "OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD", "HTTP 401"),
    (403, PASSWORD, "OPENSEARCH_USERNAME", "indices:admin/index_template/put"),
], ids=["wrong-password-401", "missing-permission-403"])
def test_refused_credentials_stop_the_engine_at_boot(env: dict[str, str], proxy: SearchProxy, refusal: int | None,
                                                    password: str, variable: str, named: str) -> None:
    if refusal:
        proxy.refuse(refusal)
    code, output = run_command(["engine"], {**env, "OPENSEARCH_PASSWORD": password, "ENGINE_WORKERS": "1"})
    assert code == 2, output
    line = one_line_naming(output, variable)
    assert named in line and proxy.refused >= 1


def test_credentials_refused_at_run_time_stop_the_engine_and_nothing_unstored_is_committed(
        settings: Settings, env: dict[str, str], proxy: SearchProxy, engines: list, tmp_path: Path) -> None:
    first = produce(settings, recent_records(3_000, seed=71))
    store = Store(settings)
    engine = EngineProcess(env, tmp_path / "engine.log", workers=1).start()
    engines.append(engine)
    assert store.wait_for("logs-apm", first.valid_logs(), timeout_s=180) == first.valid_logs(), engine.log()[-3000:]
    assert store.wait_for("traces-apm", first.valid_spans(), timeout_s=60) == first.valid_spans()

    proxy.refuse(401)  # the password was rotated under the running engine
    second = produce(settings, recent_records(1_000, seed=72))
    assert engine.process is not None
    code = engine.process.wait(90)

    log = engine.log()
    assert code == 2, log[-3000:]
    assert "Traceback" not in log
    refused = [line for line in log.splitlines() if "OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD" in line]
    assert refused and "HTTP 401" in refused[0] and "stopping the engine" in refused[0], log[-3000:]
    assert store.count("logs-apm") == first.valid_logs()  # nothing of the second batch was stored ...
    for topic in settings.input_topics:  # ... so no commit may pass its first record in any partition
        firsts: dict[int, int] = {}
        for t, partition, offset in second.positions:
            if t == topic:
                firsts[partition] = min(offset, firsts.get(partition, offset))
        offsets = committed(settings, topic)
        for partition, first_unstored in firsts.items():
            assert offsets[partition] <= first_unstored, (topic, partition, offsets, firsts)


def metric(port: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in the metrics")


def test_a_long_retry_streak_is_logged_with_its_cause_and_counted(settings: Settings, env: dict[str, str],
                                                                  proxy: SearchProxy, engines: list,
                                                                  tmp_path: Path) -> None:
    port = str(free_port())
    sent = produce(settings, recent_records(1_000, seed=73))
    proxy.refuse(503, "/_bulk")  # transient: retried with backoff, however long it lasts
    engine = EngineProcess({**env, "ENGINE_METRICS_PORT": port, "BULK_RETRY_STREAK_S": "2"}, tmp_path / "engine.log",
                           workers=1).start()
    engines.append(engine)
    eventually(lambda: "retrying for" in engine.log(), 90, "the streak's WARNING line")
    warning = next(line for line in engine.log().splitlines() if "retrying for" in line)
    assert "WARNING" in warning and "_bulk answered HTTP 503: primary shard is not active" in warning, warning
    assert metric(port, "panopticon_engine_bulk_retry_streaks_total") >= 1
    proxy.allow()
    store = Store(settings)
    assert store.wait_for("logs-apm", sent.valid_logs(), timeout_s=120) == sent.valid_logs(), engine.log()[-3000:]
    assert engine.process is not None and engine.process.poll() is None  # still running: 503 is transient
    assert engine.terminate() == 0


# ---------------------------------------------------------------- a worker that cannot boot

def test_a_worker_that_fails_to_boot_halts_the_engine(settings_env: dict[str, str], unique: str, engines: list,
                                                       tmp_path: Path) -> None:
    """An invalid topic pattern: the supervisor starts, every worker fails to subscribe. Replacing them again
    and again would change nothing; the engine halts with EXIT_BOOT_FAILURE and says why."""
    env = {**settings_env, "KAFKA_APM_LOG_TOPIC": f"^[{unique}"}
    engine = EngineProcess(env, tmp_path / "engine.log", workers=2).start()
    engines.append(engine)
    assert engine.process is not None
    code = engine.process.wait(90)
    log = engine.log()
    assert code == 3, log[-3000:]
    assert "failed to boot" in log and "KAFKA_APM_LOG_TOPIC" in log and "halting the engine" in log, log[-3000:]
    assert log.count("spawned worker") <= 2 and "replacing it" not in log
    assert "Traceback" not in log


# ---------------------------------------------------------------- ports in use, an unreachable broker

@pytest.mark.parametrize(("command", "variable"), [
    ("engine", "ENGINE_METRICS_PORT"), ("api", "PORT"), ("bridge", "ERROR_STREAM_PORT"),
])
def test_a_port_in_use_names_its_variable(command: str, variable: str) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        closed = str(free_port())
        code, output = run_command([command], {variable: port, "KAFKA_BROKERS": f"127.0.0.1:{closed}",
                                               "OPENSEARCH_URL": f"http://127.0.0.1:{closed}", "ENGINE_WORKERS": "1"})
    assert code == 2, output
    line = one_line_naming(output, variable)
    assert f"port {port} is already in use" in line


@pytest.mark.parametrize("command", ["engine", "bridge"])
def test_an_unreachable_broker_is_named_periodically(settings_env: dict[str, str], command: str,
                                                     tmp_path: Path) -> None:
    brokers = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, **settings_env, "KAFKA_BROKERS": brokers, "ENGINE_WORKERS": "1",
           "ERROR_STREAM_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / f"{command}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "panopticon", command], env=env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:  # the line repeats every 30 s per client while it lasts (test_engine_units checks the period)
        eventually(lambda: f"Kafka unreachable at KAFKA_BROKERS={brokers}: " in log_path.read_text(), 60,
                   "a line naming KAFKA_BROKERS")
        assert process.poll() is None  # it keeps retrying
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    output = log_path.read_text()
    assert "%3|" not in output, output[-2000:]  # librdkafka's own line per connection attempt is gone
    assert "Traceback" not in output


# ---------------------------------------------------------------- gunicorn's control socket

def test_api_instances_leave_no_control_socket_to_share(stack: LocalStack, tmp_path: Path) -> None:
    """gunicorn's default control socket is one path per user ($HOME/.gunicorn/gunicorn.ctl): a second
    instance took it over from the first, and stopping either removed it for both."""
    env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
    env.update(stack.env(), HOME=str(tmp_path))
    apis = []
    try:
        for _ in range(2):
            port = free_port()
            log = open(tmp_path / f"api-{port}.log", "wb")  # noqa: SIM115 - the child keeps it
            apis.append((port, subprocess.Popen(
                [sys.executable, "-m", "panopticon", "api", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                 "--threads", "1"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)))
            log.close()
        for port, process in apis:
            eventually(lambda p=port: answers(f"http://127.0.0.1:{p}/health"), 60, "the API")
            assert process.poll() is None
    finally:
        for _, process in apis:
            process.send_signal(signal.SIGTERM)
        for _, process in apis:
            process.wait(30)
    logs = "".join(path.read_text() for path in tmp_path.glob("api-*.log"))
    assert not (tmp_path / ".gunicorn").exists(), logs[-2000:]
    assert "Control socket" not in logs


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True
