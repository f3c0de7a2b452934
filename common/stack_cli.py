"""``panopticon stack up|down|status``."""

from __future__ import annotations

import argparse
import os

from common.stack import LocalStack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--data-dir", default=os.environ.get("PANOPTICON_STACK_DIR", ".stack"))
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--search-port", type=int, default=9200)
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each topic (up)")


def run(args: argparse.Namespace) -> int:
    data_dir = os.path.abspath(args.data_dir)
    current = LocalStack.load(data_dir)
    if args.action == "status":
        if current and current.alive():
            print(f"up: kafka {current.brokers}  search {current.search_url}  (data {data_dir})")
            return 0
        print("down")
        return 1
    if args.action == "down":
        if current:
            current.stop()
        print("down")
        return 0
    if current and current.alive():
        print(f"already up: kafka {current.brokers}  search {current.search_url}")
        stack = current
    else:
        stack = LocalStack(data_dir, args.kafka_port, args.search_port).start()
        print(f"up: kafka {stack.brokers}  search {stack.search_url}  (data {data_dir})")
    from common.settings import load_settings
    from common.topics import create_topics

    settings = load_settings({**os.environ, **stack.env()})
    for topic, outcome in create_topics(settings, args.partitions).items():
        print(f"topic {topic}: {outcome}")
    return 0
