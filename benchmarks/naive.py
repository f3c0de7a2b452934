"""The naive way, as a baseline: stdlib ``json``, dicts, the ingest contract's normalization rules by hand.

``NaiveRefiner.entries(topic, partition, offset, value)`` does what ``engine.decode.EventDecoder`` does
(same rules, same ids and index names) the way a first Python version would. ``python -m benchmarks.naive``
is a one-process consumer: confluent-kafka -> json.loads -> refine -> opensearch-py ``helpers.bulk`` ->
synchronous commit after each bulk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

ENV_ALIASES = {"prod": "production", "dev": "development", "stage": "staging"}
LEVEL_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL"}
LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}
KINDS = {"SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER"}
LOG_KEYS = {"type", "timestamp", "service_name", "environment", "level", "message", "trace_id", "span_id",
            "http_method", "http_path", "http_status_code", "labels"}
SPAN_KEYS = LOG_KEYS - {"level", "message"} | {"parent_span_id", "name", "kind", "duration_ms", "status"}
BAD_KEY = re.compile(r"[^A-Za-z0-9_.-]")


class Invalid(Exception):
    pass


def iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def parse_time(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return None


def text(event: dict[str, Any], key: str, required: bool) -> str | None:
    value = event.get(key)
    if value is None or value == "":
        if required:
            raise Invalid(f"{key} is missing")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise Invalid(f"{key} is not a non-empty string")
    return value


def labels_of(event: dict[str, Any], known: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (event.get("labels") or {}).items():
        if len(out) >= 64 or value is None:
            continue
        if not isinstance(value, (str, int, float, bool)):
            value = json.dumps(value)
        out.setdefault(BAD_KEY.sub("_", key[:128]), value[:256] if isinstance(value, str) else value)
    for key, value in event.items():
        if key not in known and isinstance(value, (str, int, float, bool)) and len(out) < 64:
            out.setdefault(BAD_KEY.sub("_", key[:128]), value[:256] if isinstance(value, str) else value)
    return out


def common_fields(event: dict[str, Any], now_ms: int) -> tuple[dict[str, Any], int]:
    service = text(event, "service_name", True)
    env = text(event, "environment", True).strip().lower()  # type: ignore[union-attr]
    epoch = parse_time(event.get("timestamp"))
    doc: dict[str, Any] = {"@timestamp": iso(epoch if epoch is not None else now_ms), "ingested_at": iso(now_ms),
                           "service_name": service.strip(), "environment": ENV_ALIASES.get(env, env)}  # type: ignore[union-attr]
    if epoch is None:
        doc["timestamp_defaulted"] = True
    for key in ("trace_id", "span_id", "http_method", "http_path"):
        if text(event, key, False):
            doc[key] = event[key]
    status = event.get("http_status_code")
    if status is not None:
        if isinstance(status, str) and status.strip().isdigit():
            status = int(status)
        if not isinstance(status, int) or isinstance(status, bool):
            raise Invalid("http_status_code")
        doc["http_status_code"] = status
    return doc, epoch if epoch is not None else now_ms


class NaiveRefiner:
    def __init__(self, log_topic: str, span_topic: str) -> None:
        self.log_topic, self.span_topic = log_topic, span_topic

    def log(self, event: dict[str, Any], topic: str, partition: int, offset: int, index: int | None,
            now_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
        doc, epoch = common_fields(event, now_ms)
        level = text(event, "level", True).strip().upper()  # type: ignore[union-attr]
        level = LEVEL_ALIASES.get(level, level)
        if level not in LEVELS:
            raise Invalid("level")
        doc.update(type="log", level=level, message=text(event, "message", True), labels=labels_of(event, LOG_KEYS))
        doc_id = f"{topic}-{partition}-{offset}" + ("" if index is None else f"-{index}")
        day = datetime.fromtimestamp(epoch / 1000, UTC).strftime("%Y.%m.%d")
        return {"create": {"_index": f"logs-apm-{day}", "_id": doc_id}}, doc

    def span(self, event: dict[str, Any], now_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
        doc, epoch = common_fields(event, now_ms)
        trace_id, span_id = text(event, "trace_id", True), text(event, "span_id", True)
        kind = (text(event, "kind", False) or "INTERNAL").strip().upper()
        kind = "INTERNAL" if kind == "UNSPECIFIED" else kind
        status = (text(event, "status", False) or "OK").strip().upper()
        status = "OK" if status == "UNSET" else status
        duration = event.get("duration_ms")
        if isinstance(duration, str):
            duration = float(duration)
        if kind not in KINDS or status not in ("OK", "ERROR") or not isinstance(duration, (int, float)) \
                or not math.isfinite(duration) or duration < 0:
            raise Invalid("kind, status or duration_ms")
        doc.update(type="span", name=text(event, "name", True), kind=kind, status=status,
                   duration_ms=float(duration), labels=labels_of(event, SPAN_KEYS))
        if event.get("parent_span_id"):
            doc["parent_span_id"] = event["parent_span_id"]
        doc_id = hashlib.blake2b(f"{trace_id}\x00{span_id}".encode(), digest_size=16).hexdigest()
        day = datetime.fromtimestamp(epoch / 1000, UTC).strftime("%Y.%m.%d")
        return {"create": {"_index": f"traces-apm-{day}", "_id": doc_id}}, doc

    def entries(self, topic: str, partition: int, offset: int, value: bytes,
                now_ms: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(action, document) pairs of one record; invalid events are skipped (a real one would dead-letter)."""
        try:
            parsed = json.loads(value)
        except ValueError:
            return []
        events = parsed if isinstance(parsed, list) else [parsed]
        out = []
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                continue
            try:
                if topic == self.span_topic:
                    out.append(self.span(event, now_ms))
                else:
                    out.append(self.log(event, topic, partition, offset, i if len(events) > 1 else None, now_ms))
            except (Invalid, ValueError, TypeError, AttributeError):
                continue
        return out


def ndjson(pairs: list[tuple[dict[str, Any], dict[str, Any]]], out: list[str]) -> None:
    for action, doc in pairs:
        out.append(json.dumps(action))
        out.append(json.dumps(doc))


# ---------------------------------------------------------------- the naive consumer process

def consume(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer
    from opensearchpy import OpenSearch, helpers

    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})  # librdkafka's defaults otherwise
    client = OpenSearch(hosts=[args.url], timeout=60)
    refiner = NaiveRefiner(args.log_topic, args.span_topic)
    consumer.subscribe([args.log_topic, args.span_topic])
    stored = 0
    try:
        while args.events <= 0 or stored < args.events:
            messages = consumer.consume(1000, 0.5)
            now_ms = int(time.time() * 1000)
            actions: list[dict[str, Any]] = []
            for m in messages:
                if m.error() is not None:
                    continue
                for action, doc in refiner.entries(m.topic(), m.partition(), m.offset(), m.value(), now_ms):
                    op, meta = next(iter(action.items()))
                    actions.append({"_op_type": op, **meta, "_source": doc})
            if actions:
                ok, _ = helpers.bulk(client, actions, chunk_size=500)
                stored += ok
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    print(f"naive: stored {stored}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive", description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--log-topic", default="apm.logs")
    parser.add_argument("--span-topic", default="apm.spans")
    parser.add_argument("--events", type=int, default=0, help="exit after storing this many (0: never)")
    return consume(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
