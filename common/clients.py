"""Kafka and OpenSearch client factories: the only place that turns Settings into client configuration.

Create clients in the process that uses them (after a fork): librdkafka threads do not survive ``fork()``.
"""

from __future__ import annotations

import socket
from typing import Any

from common.settings import Settings


def kafka_base(settings: Settings, client_id: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_brokers,
        "client.id": f"{client_id}-{socket.gethostname()}",
    }
    if settings.kafka_msk_iam:
        conf.update(_msk_iam(settings))
    conf.update(settings.kafka_conf)
    return conf


def _msk_iam(settings: Settings) -> dict[str, Any]:
    try:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    except ImportError as exc:  # pragma: no cover - optional extra
        raise RuntimeError("KAFKA_MSK_IAM=true needs the 'msk' extra: pip install 'panopticon[msk]'") from exc

    def oauth_cb(_config: str) -> tuple[str, float]:
        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(settings.kafka_msk_region)
        return token, expiry_ms / 1000

    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "oauth_cb": oauth_cb}


def consumer_config(settings: Settings, group_id: str, client_id: str, **extra: Any) -> dict[str, Any]:
    conf = kafka_base(settings, client_id)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": 16 * 1024 * 1024,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "queued.max.messages.kbytes": 16 * 1024,  # bounds the prefetch: a worker stays small at full speed
        }
    )
    conf.update(extra)
    conf.update(settings.kafka_conf)
    return conf


def producer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    conf = kafka_base(settings, client_id)
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    conf.update(extra)
    conf.update(settings.kafka_conf)
    return conf


def admin_config(settings: Settings) -> dict[str, Any]:
    return kafka_base(settings, "panopticon-admin")


def opensearch_client(settings: Settings, timeout_s: float | None = None, **extra: Any) -> Any:
    from opensearchpy import OpenSearch

    auth = None
    if settings.opensearch_username:
        auth = (settings.opensearch_username, settings.opensearch_password)
    kwargs: dict[str, Any] = {
        "hosts": [settings.opensearch_url],
        "http_auth": auth,
        "verify_certs": settings.opensearch_verify_certs,
        "ssl_show_warn": settings.opensearch_verify_certs,
        "timeout": timeout_s or settings.opensearch_timeout_s,
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if settings.opensearch_ca_certs:
        kwargs["ca_certs"] = settings.opensearch_ca_certs
    kwargs.update(extra)
    return OpenSearch(**kwargs)
