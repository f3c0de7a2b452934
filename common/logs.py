"""Process logging: readable lines by default, one JSON object per line with LOG_FORMAT=json."""

from __future__ import annotations

import logging
import sys
import time

import msgspec

from panopticon.common.settings import Settings

_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def setup_logging(settings: Settings, component: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-5s {component}[%(process)d] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("opensearch", "urllib3", "kafka"):  # our own lines say what failed, once
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # librdkafka logs every failed connection attempt; its errors reach common.clients.KafkaErrorLog instead
    logging.getLogger("librdkafka").setLevel(logging.WARNING if settings.log_level == "DEBUG" else logging.CRITICAL)
