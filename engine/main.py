"""``panopticon engine``: validate the configuration, check the servers, size the worker pool, run the supervisor.

What would only fail later, and then quietly, stops start-up here with one line naming the variable (exit 2):
a bad librdkafka property, the metrics port in use, a search cluster that refuses the credentials.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from opensearchpy.exceptions import TransportError

from panopticon.common.clients import admin_config, opensearch_client, producer_config, safe_url, search_refusal
from panopticon.common.clock import now_ms
from panopticon.common.indices import IndexNames
from panopticon.common.logs import setup_logging
from panopticon.common.ports import check_port
from panopticon.common.settings import Settings, SettingsError, load_settings
from panopticon.engine.compactor import HourlyCompactor
from panopticon.engine.retention import RetentionJob, TemplateJob
from panopticon.engine.supervisor import Supervisor

log = logging.getLogger(__name__)

METRICS_HOST = "0.0.0.0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, help="override ENGINE_WORKERS")


def check_kafka_config(settings: Settings) -> None:
    """Build (and drop) a client so that a bad KAFKA_CONF_* property stops start-up, before any fork."""
    try:
        Producer(producer_config(settings, "panopticon-config-check")).flush(0)
    except (KafkaException, ValueError, TypeError) as exc:
        raise SettingsError("KAFKA_CONF_*", f"librdkafka refused the configuration: {exc}") from None


def check_search(settings: Settings, templates: TemplateJob) -> None:
    """Install the index templates now, the engine's first request to the search cluster: a cluster that
    refuses the credentials (401) or a permission (403) stops start-up; one that cannot be reached yet is
    retried by the template job while the engine runs (batches wait for it)."""
    try:
        templates.poll(now_ms())
    except TransportError as exc:
        refusal = search_refusal(settings, exc.status_code, exc.info)
        if refusal is not None:
            raise refusal from None
        log.warning("search cluster at OPENSEARCH_URL=%s not ready (%s); starting anyway, retrying",
                    safe_url(settings.opensearch_url), exc)


def worker_count(settings: Settings) -> int:
    """ENGINE_WORKERS, or the input topics' partitions capped at the CPU count."""
    if settings.engine_workers:
        return settings.engine_workers
    cpus = os.cpu_count() or 1
    try:
        admin = AdminClient(admin_config(settings))
        topics = admin.list_topics(timeout=10).topics
        partitions = sum(len(topics[t].partitions) for t in settings.input_topics if t in topics)
        del admin
    except KafkaException as exc:
        log.warning("could not read the topics' partitions from KAFKA_BROKERS=%s (%s); using the CPU count",
                    settings.kafka_brokers, exc)
        partitions = cpus
    return max(1, min(cpus, partitions or cpus))


def periodic_jobs(settings: Settings, search: Any) -> list[Any]:
    """What the supervisor runs on a schedule beside the workers (and the template job): retention, hourly
    rollup compaction."""
    return [RetentionJob(settings, search),
            HourlyCompactor(search, IndexNames(settings.opensearch_index_prefix),
                            every_ms=settings.rollup_hourly_interval_ms, grace_ms=settings.rollup_hourly_grace_ms)]


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.engine_metrics_port:
        check_port(METRICS_HOST, settings.engine_metrics_port, "ENGINE_METRICS_PORT")
    setup_logging(settings, "engine")
    check_kafka_config(settings)
    search = opensearch_client(settings)
    templates = TemplateJob(settings, search)
    check_search(settings, templates)
    workers = args.workers or worker_count(settings)
    supervisor = Supervisor(settings, workers, jobs=[templates, *periodic_jobs(settings, search)])
    if settings.engine_metrics_port:
        from prometheus_client import REGISTRY, start_http_server

        from panopticon.engine.metrics import EngineCollector

        REGISTRY.register(EngineCollector(supervisor))
        start_http_server(settings.engine_metrics_port, addr=METRICS_HOST)
        log.info("metrics on :%d/metrics", settings.engine_metrics_port)
    return supervisor.run()
