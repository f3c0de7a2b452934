"""Retention: delete daily indices older than their kind's retention. A CLI command and an engine job."""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from panopticon.common.clients import opensearch_client
from panopticon.common.indices import IndexNames, apply_retention, install_templates
from panopticon.common.logs import setup_logging
from panopticon.common.settings import Settings, load_settings

log = logging.getLogger(__name__)


class RetentionJob:
    """Runs retention once an hour (first run right away)."""

    def __init__(self, settings: Settings, client: Any, every_ms: int = 3_600_000) -> None:
        self.settings, self.client, self.every_ms = settings, client, every_ms
        self.names = IndexNames(settings.opensearch_index_prefix)
        self.next_ms = 0

    def poll(self, now_ms: int) -> None:
        if now_ms < self.next_ms:
            return
        self.next_ms = now_ms + self.every_ms
        apply_retention(self.client, self.names, self.settings, now_ms)


class TemplateJob:
    """Installs the index templates at start-up, and retries until the cluster takes them."""

    def __init__(self, settings: Settings, client: Any) -> None:
        self.client = client
        self.names = IndexNames(settings.opensearch_index_prefix)
        self.done = False
        self.next_ms = 0

    def poll(self, now_ms: int) -> None:
        if self.done or now_ms < self.next_ms:
            return
        self.next_ms = now_ms + 10_000
        install_templates(self.client, self.names)
        self.done = True
        log.info("index templates installed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings, "retention")
    client = opensearch_client(settings)
    names = IndexNames(settings.opensearch_index_prefix)
    if args.dry_run:
        from panopticon.common.indices import expired_indices

        existing = list(client.indices.get(index=f"{names.prefix}*-apm*").keys())
        for index in expired_indices(existing, names, settings, int(time.time() * 1000)):
            print(index)
        return 0
    for index in apply_retention(client, names, settings, int(time.time() * 1000)):
        print(f"deleted {index}")
    return 0
