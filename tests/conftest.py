"""Fixtures: the real local stack (Apache Kafka + OpenSearch), started once by the tests on free ports."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from panopticon.common.settings import Settings, load_settings
from panopticon.devtools.stack import LocalStack, free_port
from tests.harness import EngineProcess

_names = itertools.count()
SESSION_TIMEOUT_MS = 6000  # a worker killed by a test leaves the group this long after (the broker allows >= 1 s)

# A loaded machine (or CI) must not fail a property for being slow: speed lives in benchmarks/.
hypothesis_settings.register_profile("panopticon", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("panopticon")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the local stack (directly or through a fixture) is an integration test, marked or
    not: ``make test-fast`` leaves them out."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One Kafka broker + OpenSearch node for the whole session; every test has its own topics, group and
    index prefix (``settings_env``)."""
    data_dir = tmp_path_factory.mktemp("stack")
    local = LocalStack(str(data_dir), free_port(), free_port()).start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def engines() -> Iterator[list[EngineProcess]]:
    """Engine processes a test started; any still running at the end is killed."""
    started: list[EngineProcess] = []
    yield started
    for engine in started:
        engine.ensure_stopped()


@pytest.fixture
def unique() -> str:
    """A short name unique in this session, for topics, groups and index prefixes."""
    return f"t{os.getpid()}x{next(_names)}"


@pytest.fixture
def settings_env(stack: LocalStack, unique: str) -> dict[str, str]:
    """Environment for a component under test: its own topics, group and index prefix."""
    return {
        **stack.env(),
        "KAFKA_APM_LOG_TOPIC": f"{unique}.logs",
        "KAFKA_APM_SPAN_TOPIC": f"{unique}.spans",
        "KAFKA_APM_LOG_ERROR_TOPIC": f"{unique}.logs.error",
        "KAFKA_APM_DLQ_TOPIC": f"{unique}.dlq",
        "KAFKA_OTLP_SPAN_TOPIC": f"{unique}.otlp_spans",
        "KAFKA_OTLP_LOG_TOPIC": f"{unique}.otlp_logs",
        "ENGINE_GROUP_ID": f"{unique}-engine",
        "OPENSEARCH_INDEX_PREFIX": f"{unique}-",
        "ENGINE_METRICS_PORT": "0",
        "ENGINE_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
    }


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return load_settings(settings_env)
