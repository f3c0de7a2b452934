"""``panopticon engine``: validate the configuration, size the worker pool, run the supervisor."""

from __future__ import annotations

import argparse
import logging
import os

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from common.clients import admin_config, opensearch_client, producer_config
from common.indices import IndexNames
from common.logs import setup_logging
from common.settings import Settings, SettingsError, load_settings
from engine.compactor import HourlyCompactor
from engine.retention import RetentionJob, TemplateJob
from engine.supervisor import Supervisor

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, help="override ENGINE_WORKERS")


def check_kafka_config(settings: Settings) -> None:
    """Build (and drop) a client so that a bad KAFKA_CONF_* property stops start-up, before any fork."""
    try:
        Producer(producer_config(settings, "panopticon-config-check")).flush(0)
    except (KafkaException, ValueError, TypeError) as exc:
        raise SettingsError("KAFKA_CONF_*", f"librdkafka refused the configuration: {exc}") from None


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
        log.warning("could not read the topics' partitions (%s); using the CPU count", exc)
        partitions = cpus
    return max(1, min(cpus, partitions or cpus))


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings, "engine")
    check_kafka_config(settings)
    workers = args.workers or worker_count(settings)
    search = opensearch_client(settings)
    names = IndexNames(settings.opensearch_index_prefix)
    jobs = [TemplateJob(settings, search), RetentionJob(settings, search), HourlyCompactor(search, names)]
    supervisor = Supervisor(settings, workers, jobs=jobs)
    if settings.engine_metrics_port:
        from prometheus_client import REGISTRY, start_http_server

        from engine.metrics import EngineCollector

        REGISTRY.register(EngineCollector(supervisor))
        start_http_server(settings.engine_metrics_port, addr="0.0.0.0")
        log.info("metrics on :%d/metrics", settings.engine_metrics_port)
    return supervisor.run()
