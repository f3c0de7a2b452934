"""Settings: typed from the environment; a bad value names its variable and stops start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from panopticon.common.settings import SettingsError, load_settings


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert s.kafka_brokers == "localhost:9092"
    assert s.input_topics == ("apm.logs", "apm.spans", "otlp_spans", "otlp_logs")
    assert load_settings({"KAFKA_OTLP_SPAN_TOPIC": "", "KAFKA_OTLP_LOG_TOPIC": " "}).input_topics == (
        "apm.logs", "apm.spans")
    assert (s.kafka_apm_log_error_topic, s.kafka_apm_dlq_topic) == ("apm.logs.error", "apm.dlq")
    assert s.engine_group_id == "panopticon-engine"
    assert s.opensearch_url == "http://localhost:9200" and s.opensearch_verify_certs is True
    assert (s.retention_logs_days, s.retention_traces_days, s.retention_metrics_days) == (14, 7, 90)
    assert s.engine_max_message_bytes == 1_048_576 and s.engine_shutdown_timeout_s == 30
    assert (s.stream_throughput_batch_size, s.stream_throughput_min_interval_ms) == (5000, 10_000)
    assert s.stream_throughput_target_count is None
    assert (s.port, s.error_stream_port, s.error_stream_ws_path) == (3001, 3010, "/ws/error-logs")
    assert s.api_auth_token == "" and s.bulk_retry_streak_s == 30
    assert (s.rollup_hourly_grace_ms, s.rollup_hourly_interval_ms) == (300_000, 300_000)


def test_values_are_typed() -> None:
    s = load_settings({"BULK_BATCH_SIZE": " 250 ", "OPENSEARCH_VERIFY_CERTS": "false", "BULK_BATCH_BYTES_MB": "2.5",
                       "LOG_LEVEL": "debug", "STREAM_THROUGHPUT_TARGET_COUNT": "5000000"})
    assert s.bulk_batch_size == 250 and s.opensearch_verify_certs is False
    assert s.bulk_batch_bytes == int(2.5 * 1024 * 1024)
    assert s.log_level == "DEBUG" and s.stream_throughput_target_count == 5_000_000


def test_kafka_conf_prefix_passes_librdkafka_properties() -> None:
    s = load_settings({"KAFKA_CONF_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_CONF_SECURITY_PROTOCOL": "SASL_SSL"})
    assert s.kafka_conf == {"sasl.mechanism": "SCRAM-SHA-512", "security.protocol": "SASL_SSL"}


def test_the_consumer_prefetch_is_small_with_a_short_backoff_and_librdkafka_takes_it() -> None:
    from confluent_kafka import Consumer

    from panopticon.common.clients import consumer_config

    conf = consumer_config(load_settings({"KAFKA_BROKERS": "127.0.0.1:1"}), "g", "c")
    # the queue's threshold plus the one Fetch answer that may land on top of it (common/clients.py, PREFETCH)
    assert conf["queued.max.messages.kbytes"] * 1024 + conf["fetch.max.bytes"] <= 8 * 1024 * 1024
    assert conf["fetch.queue.backoff.ms"] <= 100  # librdkafka's 1 s would leave a drained queue waiting
    Consumer(conf).close()  # every property is known to the librdkafka in use
    wider = consumer_config(load_settings({"KAFKA_CONF_QUEUED_MAX_MESSAGES_KBYTES": "16384"}), "g", "c")
    assert wider["queued.max.messages.kbytes"] == "16384"  # KAFKA_CONF_* still has the last word


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BULK_BATCH_SIZE", "abc"),
        ("BULK_BATCH_SIZE", "0"),
        ("BULK_FLUSH_INTERVAL_MS", "-5"),
        ("BULK_MAX_PARALLEL_FLUSHES", "many"),
        ("ENGINE_WORKERS", "-1"),
        ("BULK_BATCH_BYTES_MB", "0"),
        ("OPENSEARCH_VERIFY_CERTS", "maybe"),
        ("PORT", "70000"),
        ("LOG_FORMAT", "xml"),
        ("ENGINE_SHUTDOWN_TIMEOUT_S", "soon"),
    ],
    ids=lambda v: str(v),
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert variable in str(caught.value) and repr(value) in str(caught.value)


def test_a_bad_value_stops_the_engine_before_it_connects() -> None:
    env = {**os.environ, "BULK_BATCH_SIZE": "lots", "KAFKA_BROKERS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "panopticon", "engine"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "BULK_BATCH_SIZE" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_librdkafka_property_it_refuses_stops_the_engine() -> None:
    env = {**os.environ, "KAFKA_CONF_NO_SUCH_PROPERTY": "1", "KAFKA_BROKERS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "panopticon", "engine"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "KAFKA_CONF_" in done.stderr and "no.such.property" in done.stderr
    assert "Traceback" not in done.stderr
