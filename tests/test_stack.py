"""The local stack is the real Apache Kafka and OpenSearch; it starts, answers, applies our templates, stops
without leaving anything behind, and refuses to start with one clear line when it cannot."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from panopticon.common.clients import opensearch_client
from panopticon.common.indices import LOGS, SPAN_MAPPING, TRACES, IndexNames, install_templates
from panopticon.common.settings import load_settings
from panopticon.devtools.stack import LocalStack, StackError, exited, free_port, port_open

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panopticon", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, check=False)


def pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_the_search_server_is_opensearch(stack: LocalStack) -> None:
    with urllib.request.urlopen(stack.search_url, timeout=10) as answer:
        about = json.load(answer)
    assert about["version"]["distribution"] == "opensearch"
    assert about["version"]["number"].startswith("2.19.")


def test_the_broker_is_apache_kafka_in_kraft_mode(stack: LocalStack) -> None:
    admin = AdminClient({"bootstrap.servers": stack.brokers})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(timeout=20)
    assert configs["process.roles"].value == "broker,controller"
    assert configs["group.min.session.timeout.ms"].value == "1000"  # tests expire a killed member within seconds


def test_index_templates_apply_to_a_daily_index_nobody_created(stack: LocalStack, unique: str) -> None:
    client = opensearch_client(load_settings(stack.env()))
    names = IndexNames(f"{unique}-")
    install_templates(client, names)
    index = names.daily(TRACES, int(time.time() * 1000))
    client.index(index=index, id="1", refresh=True, body={
        "trace_id": "ab" * 16, "duration_ms": 5, "labels": {"team": "x", "k8s.pod.name": "p-1", "k8s.pod.uid": 7}})
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["trace_id"] == SPAN_MAPPING["properties"]["trace_id"] == {"type": "keyword"}
    assert mapping["duration_ms"]["type"] == "double"  # dynamic mapping would have made it a long
    assert mapping["labels"]["properties"]["team"]["type"] == "keyword"
    pod = mapping["labels"]["properties"]["k8s"]["properties"]["pod"]["properties"]  # dotted keys: objects, then
    assert pod["name"]["type"] == pod["uid"]["type"] == "keyword"  # keyword leaves, as the contract's labels
    assert client.indices.get_settings(index=index)[index]["settings"]["index"]["refresh_interval"] == "1s"
    assert names.pattern(LOGS) in client.indices.get_index_template(name=names.base(LOGS))[
        "index_templates"][0]["index_template"]["index_patterns"]


def test_stack_up_and_down_leave_no_process_and_no_port(tmp_path: Path) -> None:
    kafka_port, search_port = free_port(), free_port()
    data_dir = tmp_path / "stack"
    up = cli("stack", "up", "--data-dir", str(data_dir), "--kafka-port", str(kafka_port),
             "--search-port", str(search_port))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "topic apm.spans: created" in up.stdout
    stack = LocalStack.load(str(data_dir))
    assert stack is not None and stack.alive()
    assert cli("stack", "status", "--data-dir", str(data_dir)).returncode == 0

    down = cli("stack", "down", "--data-dir", str(data_dir))
    assert down.returncode == 0 and down.stdout.strip() == "down"
    groups = {stack.kafka_pid, stack.search_pid}
    left = [p for p in psutil.process_iter() if pgid(p.pid) in groups and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []  # (an exited JVM may wait as a zombie for its new parent, which is not ours, to reap it)
    ports = (kafka_port, search_port, stack.controller_port, stack.transport_port)
    assert not any(port_open(port) for port in ports)
    assert cli("stack", "status", "--data-dir", str(data_dir)).returncode == 1


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("stack", "up", "--data-dir", str(tmp_path), "--kafka-port", str(port),
                     "--search-port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"panopticon stack: port {port} (PANOPTICON_KAFKA_PORT / --kafka-port) "
                                     "is in use by another program")


def test_a_start_that_fails_leaves_no_server_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANOPTICON_SEARCH_HEAP_MB", "64")  # refused once Kafka is already started
    stack = LocalStack(str(tmp_path / "stack"), free_port(), free_port())
    with pytest.raises(StackError, match="PANOPTICON_SEARCH_HEAP_MB"):
        stack.start()
    assert stack.kafka_pid and exited(stack.kafka_pid)
    assert not port_open(stack.kafka_port)


def test_no_java_or_no_maven_says_what_to_install(tmp_path: Path) -> None:
    args = ("stack", "up", "--data-dir", str(tmp_path), "--kafka-port", str(free_port()),
            "--search-port", str(free_port()))
    no_java = cli(*args, env={"JAVA_HOME": str(tmp_path / "no-jdk")})
    assert no_java.returncode == 2
    assert "needs Java" in no_java.stderr and "infra/compose.yaml" in no_java.stderr
    assert len(no_java.stderr.strip().splitlines()) == 1

    java_only = tmp_path / "bin"
    java_only.mkdir()
    java = shutil.which("java")
    assert java is not None
    (java_only / "java").symlink_to(java)
    no_maven = cli(*args, env={"PATH": str(java_only), "JAVA_HOME": "",
                               "PANOPTICON_STACK_CACHE": str(tmp_path / "cache")})
    assert no_maven.returncode == 2
    assert "needs Maven" in no_maven.stderr and "infra/compose.yaml" in no_maven.stderr
