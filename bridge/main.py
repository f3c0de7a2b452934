"""``panopticon bridge``: the live error feed (WebSocket + Socket.IO) on ERROR_STREAM_PORT."""

from __future__ import annotations

import argparse
import logging

from prometheus_client import disable_created_metrics

from panopticon.bridge.runner import BridgeApplication
from panopticon.bridge.service import ServerOptions
from panopticon.common.logs import setup_logging
from panopticon.common.ports import check_port
from panopticon.common.settings import load_settings

log = logging.getLogger("bridge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument("--max-clients", type=int, default=2000,
                        help="concurrent connections one process holds (one thread each; default 2000)")
    parser.add_argument("--send-buffer-kb", type=int, default=256,
                        help="kernel send buffer per client; beyond it errors wait in the client's queue")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_port(args.host, settings.error_stream_port, "ERROR_STREAM_PORT")  # before gunicorn's retries
    setup_logging(settings, "bridge")
    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series next to every counter
    options = ServerOptions(host=args.host, port=settings.error_stream_port,
                            max_clients=max(1, args.max_clients),
                            send_buffer_bytes=max(0, args.send_buffer_kb) * 1024)
    log.info("error stream on %s:%d%s, topic %s", options.host, options.port, settings.error_stream_ws_path,
             settings.kafka_apm_log_error_topic)
    try:
        BridgeApplication(settings, options).run()
    except SystemExit as exc:  # gunicorn's arbiter exits when it halts
        return exc.code if isinstance(exc.code, int) else 1
    return 0
