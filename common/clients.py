"""Kafka and OpenSearch client factories: the only place that turns Settings into client configuration, and
that turns the servers' refusals into lines naming the variable to fix.

Create clients in the process that uses them (after a fork): librdkafka threads do not survive ``fork()``.
"""

from __future__ import annotations

import functools
import logging
import math
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from panopticon.common.settings import Settings, SettingsError

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

KAFKA_ERROR_EVERY_S = 30.0


class KafkaErrorLog:
    """librdkafka's ``error_cb``: one readable line naming KAFKA_BROKERS, repeated every KAFKA_ERROR_EVERY_S
    while the error lasts, instead of silence or librdkafka's own line per connection attempt."""

    def __init__(self, brokers: str, every_s: float = KAFKA_ERROR_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._brokers = brokers
        self._every_s = every_s
        self._clock = clock
        self._logged: dict[object, float] = {}

    def __call__(self, error: KafkaError) -> None:
        from confluent_kafka import KafkaError  # loaded by Kafka's users only: the query API has none

        unreachable = error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE)
        key = "unreachable" if unreachable else error.code()
        now = self._clock()
        if now - self._logged.get(key, -math.inf) < self._every_s:
            return
        self._logged[key] = now
        what = "Kafka unreachable" if unreachable else "Kafka error"
        log.log(logging.ERROR if error.fatal() else logging.WARNING, "%s at KAFKA_BROKERS=%s: %s; retrying",
                what, self._brokers, error.str())


def kafka_base(settings: Settings, client_id: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_brokers,
        "client.id": f"{client_id}-{socket.gethostname()}",
        "error_cb": KafkaErrorLog(settings.kafka_brokers),
        "logger": logging.getLogger("librdkafka"),  # its own lines, quieted by common.logs: error_cb speaks
        "log.connection.close": False,  # an idle connection the broker closes is no error
    }
    if settings.kafka_msk_iam:
        conf.update(_msk_iam(settings))
    conf.update(settings.kafka_conf)
    return conf


def _msk_iam(settings: Settings) -> dict[str, Any]:
    try:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    except ImportError:  # pragma: no cover - optional extra
        raise SettingsError("KAFKA_MSK_IAM", "true needs the 'msk' extra: pip install 'panopticon[msk]'") from None

    def oauth_cb(_config: str) -> tuple[str, float]:
        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(settings.kafka_msk_region)
        return token, expiry_ms / 1000

    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "oauth_cb": oauth_cb}


# librdkafka's prefetch: most of a consumer's memory at full speed (librdkafka's CONFIGURATION.md). The high-level
# consumer stops fetching once its one queue (all partitions together) holds queued.max.messages.kbytes; the Fetch
# answer already asked for comes on top: up to fetch.max.bytes of compressed batches, ~3x that decompressed, plus
# librdkafka's few hundred bytes per message. At 16 MB / 16 MB an engine worker held ~60 MB of messages at once, its
# librdkafka thread's malloc arena grew to ~160 MB (glibc keeps it) and peak RSS was 220-300 MB; at these values
# 110-140 MB, at the same or a better rate (benchmarks e2e). Under the threshold a fetch is sent at once: 2 MB is
# ~45 ms of work at 100k events/s, time for a round trip. Over it librdkafka waits fetch.queue.backoff.ms before it
# looks again, 1 s by default, in which a worker drains a 2 MB queue many times over: hence 20 ms, as the
# documentation advises for low thresholds. A record larger than these limits is still fetched (the first batch is
# returned whatever its size). KAFKA_CONF_* overrides any of them.
PREFETCH: dict[str, Any] = {
    "fetch.max.bytes": 2 * 1024 * 1024,
    "max.partition.fetch.bytes": 1024 * 1024,
    "queued.max.messages.kbytes": 2 * 1024,
    "fetch.queue.backoff.ms": 20,
}


def consumer_config(settings: Settings, group_id: str, client_id: str, **extra: Any) -> dict[str, Any]:
    conf = kafka_base(settings, client_id)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            **PREFETCH,
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
        "serializer": msgspec_serializer(),
    }
    if settings.opensearch_ca_certs:
        kwargs["ca_certs"] = settings.opensearch_ca_certs
    kwargs.update(extra)
    return OpenSearch(**kwargs)


@functools.cache
def msgspec_serializer() -> Any:
    """opensearch-py's JSON serializer with msgspec parsing the answers: a page of 10,000 logs (5 MB) parses in
    20 ms of CPU here instead of stdlib json's 32 ms. Requests are still written by opensearch-py."""
    from opensearchpy.exceptions import SerializationError
    from opensearchpy.serializer import JSONSerializer

    class MsgspecJSONSerializer(JSONSerializer):
        def loads(self, s: str) -> Any:
            try:
                return msgspec.json.decode(s)
            except msgspec.DecodeError as exc:
                raise SerializationError(s, exc) from None

    return MsgspecJSONSerializer()


# ---------------------------------------------------------------- the search cluster's refusals

CREDENTIALS = "OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD"


def search_error(body: object) -> tuple[str, str]:
    """(error type, reason) of a search cluster's error answer (bytes, text or parsed), on one line."""
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        raw = body
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            text = raw if isinstance(raw, str) else bytes(raw).decode(errors="replace")
            return "", " ".join(text.split())[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("type", "")), " ".join(str(error.get("reason", "")).split())[:300]
        return "", " ".join(str(error).split())[:300]
    return "", ""


def search_refusal(settings: Settings, status: object, body: object) -> SettingsError | None:
    """A 401, or a 403 that is about permissions, as the error naming what to fix; None for anything else
    (a 403 ``cluster_block_exception`` is a blocked index, not a refusal of these credentials)."""
    url = safe_url(settings.opensearch_url)
    user = settings.opensearch_username
    if status == 401:
        if not user:
            return SettingsError(CREDENTIALS, f"the search cluster at {url} requires credentials (HTTP 401); "
                                              "none are set")
        return SettingsError(CREDENTIALS, f"the search cluster at {url} refused the credentials of user "
                                          f"{user!r} (HTTP 401)")
    if status == 403:
        kind, reason = search_error(body)
        if kind == "cluster_block_exception":
            return None
        who = f"user {user!r} (OPENSEARCH_USERNAME)" if user else "anonymous access (OPENSEARCH_USERNAME unset)"
        return SettingsError("OPENSEARCH_USERNAME", f"the search cluster at {url} denied {who} a permission "
                                                    f"the engine needs (HTTP 403): {reason or 'forbidden'}")
    return None


def safe_url(url: str) -> str:
    """The URL without the credentials it may carry (``https://user:password@host``), fit for a log line."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
