"""``panopticon sample log|span [--error]``: send one example record and print it.

The counterpart of the original's ``npm run test:app-log``: a quick end-to-end check that something
written to the input topic shows up in the query API (and, with ``--error``, in the live error feed).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from panopticon.common.clients import producer_config
from panopticon.common.clock import format_timestamp
from panopticon.common.settings import load_settings

Event = dict[str, Any]


def sample_event(kind: str, error: bool, now_ms: int, rng: random.Random, service: str = "order-service",
                 environment: str = "production") -> Event:
    """One valid log or span event of the ingest contract, as a producer would send it."""
    ids: Event = {
        "type": kind,
        "timestamp": format_timestamp(now_ms),
        "service_name": service,
        "environment": environment,
        "trace_id": f"{rng.getrandbits(128):032x}",
        "span_id": f"{rng.getrandbits(64):016x}",
    }
    if kind == "log":
        level, message = ("ERROR", "payment failed: card declined by issuer") if error else ("INFO", "order created")
        body: Event = {"level": level, "message": message}
    else:
        body = {"parent_span_id": None, "name": "POST /orders", "kind": "SERVER",
                "duration_ms": round(5 + rng.random() * 200, 3), "status": "ERROR" if error else "OK"}
    http = {"http_method": "POST", "http_path": "/orders", "http_status_code": 500 if error else 201}
    labels = {"host": "sample-host", "region": "eu-west-1", "version": "1.0.0", "source": "sample"}
    return {**ids, **body, **http, "labels": labels}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["log", "span"])
    parser.add_argument("--error", action="store_true", help="an ERROR log, or a failed span (HTTP 500)")
    parser.add_argument("--service", default="order-service")
    parser.add_argument("--environment", default="production")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    event = sample_event(args.kind, args.error, int(time.time() * 1000), random.Random(),
                         args.service, args.environment)
    topic = settings.kafka_apm_log_topic if args.kind == "log" else settings.kafka_apm_span_topic
    outcome: list[str] = []

    def report(error: KafkaError | None, message: Message) -> None:
        outcome.append(f"failed: {error}" if error is not None
                       else f"delivered to {message.topic()} [{message.partition()}] @ {message.offset()}")

    producer = Producer(producer_config(settings, "panopticon-sample"))
    producer.produce(topic, msgspec.json.encode(event), event["trace_id"].encode(), on_delivery=report)
    producer.flush(30)
    print(msgspec.json.format(msgspec.json.encode(event), indent=2).decode())
    result = outcome[0] if outcome else f"failed: not delivered to {topic} within 30 s"
    print(result, file=sys.stderr)
    return 0 if result.startswith("delivered") else 1
