"""``panopticon stack up|down|status``: the local Apache Kafka and OpenSearch (``devtools/stack.py``)."""

from __future__ import annotations

import argparse
import os
import sys

from panopticon.devtools.stack import LocalStack, StackError


def env_port(variable: str, default: int) -> int:
    """A port from the environment (``make run``'s PANOPTICON_KAFKA_PORT / PANOPTICON_SEARCH_PORT)."""
    value = os.environ.get(variable, "")
    return int(value) if value.isdigit() else default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--data-dir", default=os.environ.get("PANOPTICON_STACK_DIR", ".stack"))
    parser.add_argument("--kafka-port", type=int, default=env_port("PANOPTICON_KAFKA_PORT", 9092))
    parser.add_argument("--search-port", type=int, default=env_port("PANOPTICON_SEARCH_PORT", 9200))
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each topic (up)")


def run(args: argparse.Namespace) -> int:
    data_dir = os.path.abspath(args.data_dir)
    current = LocalStack.load(data_dir)
    if args.action == "status":
        if current and current.alive():
            print(f"up: kafka {current.brokers}  opensearch {current.search_url}  (data {data_dir})")
            return 0
        print("down")
        return 1
    if args.action == "down":
        if current:
            current.stop()
        print("down")
        return 0
    try:
        stack = up(data_dir, args.kafka_port, args.search_port, current)
    except StackError as exc:
        print(f"panopticon stack: {exc}", file=sys.stderr)
        return 2
    from panopticon.common.settings import load_settings
    from panopticon.common.topics import create_topics

    settings = load_settings({**os.environ, **stack.env()})
    for topic, outcome in create_topics(settings, args.partitions).items():
        print(f"topic {topic}: {outcome}")
    return 0


def up(data_dir: str, kafka_port: int, search_port: int, current: LocalStack | None) -> LocalStack:
    """The stack of ``data_dir``: the running one, or a new start (a dead one's processes are stopped first)."""
    if current and current.alive():
        print(f"already up: kafka {current.brokers}  opensearch {current.search_url}")
        return current
    if current:
        current.stop()
    print(f"starting Apache Kafka (:{kafka_port}) and OpenSearch (:{search_port}), data in {data_dir} ...",
          flush=True)
    stack = LocalStack(data_dir, kafka_port, search_port).start()
    print(f"up: kafka {stack.brokers}  opensearch {stack.search_url}")
    return stack
