"""``panopticon ingest``: the OTLP/HTTP receiver under gunicorn (``ingest.app.build`` in each worker; the launch,
the port check naming INGEST_PORT and the metrics directory are ``common.serving``'s, as for the query API).
Each worker builds its own Kafka producer after the fork and flushes it when it exits (``worker_exit``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from panopticon.common.serving import Component, serve

INGEST = Component("ingest", "panopticon.ingest.main", "INGEST_PORT", "INGEST_WORKERS", "INGEST_THREADS")
add_arguments = INGEST.add_arguments
run = INGEST.launch


def serve_ingest(args: argparse.Namespace) -> int:
    from prometheus_client import disable_created_metrics

    from panopticon.common.logs import setup_logging
    from panopticon.common.settings import load_settings
    from panopticon.ingest.app import CLOSE_TIMEOUT_S, build
    from panopticon.ingest.sink import KafkaSink

    settings = load_settings()
    setup_logging(settings, "ingest")
    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series next to every counter
    sinks: list[KafkaSink] = []  # the worker's own, filled after the fork

    def worker_exit(server: Any, worker: Any) -> None:
        for sink in sinks:
            sink.close(CLOSE_TIMEOUT_S)

    def load() -> Any:
        app, sink = build(settings)
        sinks.append(sink)
        return app

    produce_timeout_s = settings.ingest_produce_timeout_s
    return serve(INGEST.options(
        settings, args, worker_exit=worker_exit,
        timeout=int(max(30.0, produce_timeout_s * 3 + 5)),  # a request may wait for Kafka that long
        graceful_timeout=int(max(15.0, produce_timeout_s + 10)),
        keepalive=30,  # OTLP exporters keep their connection between batches
    ), load)


def main(argv: list[str] | None = None) -> int:
    return INGEST.main(argv, serve_ingest)


if __name__ == "__main__":
    sys.exit(main())
