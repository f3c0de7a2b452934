"""Topic creation (idempotent) and partition discovery."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from panopticon.common.clients import admin_config
from panopticon.common.settings import Settings


def all_topics(settings: Settings) -> list[str]:
    return [*settings.input_topics, settings.kafka_apm_log_error_topic, settings.kafka_apm_dlq_topic]


def create_topics(settings: Settings, partitions: int = 4, replication: int = 1,
                  timeout_s: float = 30.0) -> dict[str, str]:
    """Create the topics; an existing topic is left as it is. Returns topic -> 'created'|'exists'."""
    admin = AdminClient(admin_config(settings))
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = [t for t in all_topics(settings) if t not in existing]
    outcome = {t: "exists" for t in all_topics(settings) if t in existing}
    if wanted:
        futures = admin.create_topics([NewTopic(t, partitions, replication) for t in wanted],
                                      operation_timeout=timeout_s)
        for topic, future in futures.items():
            try:
                future.result()
                outcome[topic] = "created"
            except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent creator is fine
                if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
                outcome[topic] = "exists"
    return outcome


def partition_count(settings: Settings, topics: list[str], timeout_s: float = 10.0) -> int:
    admin = AdminClient(admin_config(settings))
    metadata = admin.list_topics(timeout=timeout_s).topics
    return sum(len(metadata[t].partitions) for t in topics if t in metadata)
