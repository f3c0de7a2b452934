"""One frozen Settings object, loaded from the environment once.

Every field's name is its environment variable in lower case (``bulk_batch_size`` <- ``BULK_BATCH_SIZE``),
so a validation error path such as ``$.bulk_batch_size`` names the variable directly.
librdkafka properties pass through from ``KAFKA_CONF_<PROPERTY>`` (``KAFKA_CONF_SASL_MECHANISM`` ->
``sasl.mechanism``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

KAFKA_CONF_PREFIX = "KAFKA_CONF_"

class SettingsError(Exception):
    """A variable has a value that cannot be used; the message names it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"configuration error: {variable}: {message}")
        self.variable = variable


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # Kafka
    kafka_brokers: NonEmpty = "localhost:9092"
    kafka_apm_log_topic: NonEmpty = "apm.logs"
    kafka_apm_span_topic: NonEmpty = "apm.spans"
    kafka_apm_log_error_topic: NonEmpty = "apm.logs.error"
    kafka_apm_dlq_topic: NonEmpty = "apm.dlq"
    kafka_otlp_span_topic: str = "otlp_spans"  # the OpenTelemetry Collector kafka exporter's; empty: not read
    kafka_otlp_log_topic: str = "otlp_logs"
    kafka_msk_iam: bool = False
    kafka_msk_region: str = ""
    kafka_conf: dict[str, str] = msgspec.field(default_factory=dict)

    # OpenSearch
    opensearch_url: NonEmpty = "http://localhost:9200"
    opensearch_username: str = ""
    opensearch_password: str = ""
    opensearch_verify_certs: bool = True
    opensearch_ca_certs: str = ""
    opensearch_index_prefix: str = ""
    opensearch_timeout_s: PositiveFloat = 10.0
    retention_logs_days: Positive = 14
    retention_traces_days: Positive = 7
    retention_metrics_days: Positive = 90
    retention_metrics_hourly_days: Positive = 400

    # Engine
    engine_group_id: NonEmpty = "panopticon-engine"
    engine_instance_id: str = ""  # default: the host name; names this instance's static group members
    engine_static_membership: bool = False
    engine_workers: NonNegative = 0  # 0: partitions of the input topics, capped at the CPU count
    engine_max_message_bytes: Positive = 1_048_576
    engine_shutdown_timeout_s: PositiveFloat = 30.0
    engine_worker_timeout_s: PositiveFloat = 30.0
    engine_session_timeout_ms: Annotated[int, msgspec.Meta(ge=1000)] = 30_000  # the group evicts a silent worker
    engine_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9400
    engine_shm_blocks: Annotated[int, msgspec.Meta(ge=2)] = 4
    bulk_batch_size: Positive = 5000
    bulk_batch_bytes_mb: Annotated[float, msgspec.Meta(gt=0, le=512)] = 8.0
    bulk_flush_interval_ms: Positive = 500  # with the 1 s refresh: searchable within 2 s (p99)
    bulk_max_parallel_flushes: Positive = 2
    bulk_retry_streak_s: PositiveFloat = 30.0  # a request retried this long is logged at WARNING and counted
    stream_throughput_batch_size: int = 5000
    stream_throughput_min_interval_ms: NonNegative = 10_000
    stream_throughput_target_count: NonNegative | None = None
    rollup_flush_interval_ms: Positive = 5000
    rollup_grace_ms: NonNegative = 60_000  # how long after its minute a span still counts as on time
    rollup_hourly_grace_ms: NonNegative = 300_000  # an hour is compacted into the 1-hour tier this long after it ends
    rollup_hourly_interval_ms: Positive = 300_000  # how often the compactor looks for hours to (re)compact
    service_map: bool = True  # build the service map's edges in the stream
    service_map_wait_ms: NonNegative = 60_000  # how long (event time) a call's half waits for the other
    service_map_waiting_max: Positive = 100_000  # halves waiting per partition; beyond, the oldest is let go

    # OpenTelemetry input (the engine's OTLP topics and the OTLP/HTTP receiver, `panopticon ingest`)
    otlp_default_environment: NonEmpty = "unknown"  # when a resource has no deployment.environment(.name)
    ingest_port: Port = 4318
    ingest_workers: Positive = 2  # one worker is CPU-bound in the mapping at ~43k spans/s here; two: ~71k
    ingest_threads: Positive = 8
    ingest_max_body_mb: Annotated[float, msgspec.Meta(gt=0, le=256)] = 16.0  # larger requests: 413
    ingest_produce_timeout_s: PositiveFloat = 10.0  # Kafka acknowledgements awaited before a 503

    # Query API
    port: Port = 3001
    api_workers: Positive = 2
    api_threads: Positive = 4
    cors_allowed_origins: str = ""
    api_auth_token: str = ""  # bearer token of the query API and the bridge's handshake; empty: no authentication

    # Error stream bridge
    error_stream_port: Port = 3010
    error_stream_ws_path: NonEmpty = "/ws/error-logs"
    error_stream_ws_origins: str = ""
    error_stream_kafka_client_id: NonEmpty = "error-stream-kafka-client"
    error_stream_kafka_group_id: NonEmpty = "error-stream-kafka-group"
    error_stream_replay: NonNegative = 20
    error_stream_slow_client_s: PositiveFloat = 30.0
    error_stream_queue_size: Positive = 256

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @property
    def bulk_batch_bytes(self) -> int:
        return int(self.bulk_batch_bytes_mb * 1024 * 1024)

    @property
    def ingest_max_body_bytes(self) -> int:
        return int(self.ingest_max_body_mb * 1024 * 1024)

    @property
    def input_topics(self) -> tuple[str, ...]:
        """The topics the engine reads: the contract's, then the OTLP ones that are set."""
        return (self.kafka_apm_log_topic, self.kafka_apm_span_topic,
                *(t for t in (self.kafka_otlp_span_topic, self.kafka_otlp_log_topic) if t))

    def origins(self, raw: str) -> frozenset[str]:
        return frozenset(o.strip() for o in raw.split(",") if o.strip())


_FIELDS = frozenset(f for f in Settings.__struct_fields__ if f != "kafka_conf")
_UPPER_CASE = frozenset({"log_level"})
_EMPTY_MEANS_OFF = frozenset({"kafka_otlp_span_topic", "kafka_otlp_log_topic"})  # elsewhere empty means unset


def _kafka_conf(env: Mapping[str, str]) -> dict[str, str]:
    conf = {}
    for name, value in env.items():
        if name.startswith(KAFKA_CONF_PREFIX) and len(name) > len(KAFKA_CONF_PREFIX):
            conf[name[len(KAFKA_CONF_PREFIX):].lower().replace("_", ".")] = value
    return conf


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the environment once; a bad value raises SettingsError naming the variable."""
    env = os.environ if env is None else env
    raw: dict[str, object] = {}
    for field in _FIELDS:
        value = env.get(field.upper())
        if value is None or (value.strip() == "" and field not in _EMPTY_MEANS_OFF):
            continue
        value = value.strip()
        raw[field] = value.upper() if field in _UPPER_CASE else value.lower() if field == "log_format" else value
    raw["kafka_conf"] = _kafka_conf(env)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = message.rsplit("$.", 1)[-1].strip("`").split(".", 1)[0].split("[", 1)[0] if "$." in message else ""
        variable = field.upper() if field in _FIELDS else "environment"
        detail = message.split(" - at ", 1)[0]
        got = raw.get(field)
        raise SettingsError(variable, f"{detail} (got {got!r})") from None
