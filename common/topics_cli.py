"""``panopticon topics create [--partitions N]``."""

from __future__ import annotations

import argparse

from panopticon.common.settings import load_settings
from panopticon.common.topics import create_topics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["create"])
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--replication", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    for topic, outcome in create_topics(settings, args.partitions, args.replication).items():
        print(f"topic {topic}: {outcome}")
    return 0
