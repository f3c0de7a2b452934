"""A fast fake search cluster: answers ``_bulk`` like OpenSearch without storing anything.

``python -m benchmarks.sink --port P`` prints ``ready`` once it listens. It answers what the engine and
opensearch-py use: ``GET /`` (cluster info), ``PUT /<index>`` (create), ``PUT /_index_template/<name>``,
``HEAD /<index>``, ``GET /<pattern>`` (``{}``: no index, nothing to expire) and ``POST [/<index>]/_bulk``
with ``{"took", "errors": false, "items": [{"create": {"_index", "_id", "status": 201}}, ...]}``: each item
is its action line with ``"status":201`` added, so the items are present and right for a client that reads
them (the naive baseline), and building them costs a split and a join.

Benchmark controls: ``GET /_bench/stats`` (documents, requests, bytes, first/last document time),
``POST /_bench/reset`` and ``POST /_bench/pause?seconds=S`` (``_bulk`` answers 503 for S seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

INFO = json.dumps({"name": "bench-sink", "cluster_name": "bench", "cluster_uuid": "bench",
                   "version": {"distribution": "opensearch", "number": "2.13.0", "lucene_version": "9.10.0",
                               "minimum_wire_compatibility_version": "7.10.0",
                               "minimum_index_compatibility_version": "7.0.0"},
                   "tagline": "The OpenSearch Project: https://opensearch.org/"}).encode()
UNAVAILABLE = b'{"error":{"type":"unavailable","reason":"paused by the benchmark"},"status":503}'
STATUS = b',"status":201}}'


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.docs = self.requests = self.bytes = self.refused = 0
        self.first_ms = self.last_ms = 0
        self.paused_until = 0.0

    def stored(self, docs: int, size: int) -> None:
        now = int(time.time() * 1000)
        with self.lock:
            self.docs += docs
            self.requests += 1
            self.bytes += size
            self.first_ms = self.first_ms or now
            self.last_ms = now

    def as_json(self) -> bytes:
        return json.dumps({"docs": self.docs, "requests": self.requests, "bytes": self.bytes,
                           "refused": self.refused, "first_ms": self.first_ms, "last_ms": self.last_ms,
                           "paused": time.monotonic() < self.paused_until}).encode()


def bulk_answer(body: bytes) -> tuple[bytes, int]:
    """The items of a successful bulk answer: every action line with ``"status":201`` added."""
    lines = body.split(b"\n")
    if b'{"delete"' in body:  # delete actions have no document line
        actions, skip = [], False
        for line in lines:
            if skip:
                skip = False
            elif line.strip():
                actions.append(line)
                skip = not line.lstrip().startswith(b'{"delete"')
    else:
        actions = [a for a in lines[0::2] if a]
    items = b",".join(a.rstrip()[:-2] + STATUS for a in actions)
    return b'{"took":1,"errors":false,"items":[' + items + b"]}", len(actions)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counters: Counters

    def log_message(self, *_: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"{}") -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_HEAD(self) -> None:
        self._answer(200, b"")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            self._answer(200, INFO)
        elif path == "/_bench/stats":
            self._answer(200, self.counters.as_json())
        else:
            self._answer(200, b"{}")

    def do_PUT(self) -> None:
        self._body()
        path = urlsplit(self.path).path.strip("/")
        if path.startswith("_index_template/") or path.startswith("_template/"):
            self._answer(200, b'{"acknowledged":true}')
        else:
            index = path.split("/", 1)[0]
            self._answer(200, b'{"acknowledged":true,"shards_acknowledged":true,"index":"%s"}' % index.encode())

    def do_DELETE(self) -> None:
        self._body()
        self._answer(200, b'{"acknowledged":true}')

    def do_POST(self) -> None:
        body = self._body()
        url = urlsplit(self.path)
        if url.path.endswith("/_bulk"):
            self.bulk(body)
        elif url.path == "/_bench/reset":
            self.counters.reset()
            self._answer(200)
        elif url.path == "/_bench/pause":
            seconds = float(parse_qs(url.query).get("seconds", ["20"])[0])
            self.counters.paused_until = time.monotonic() + seconds
            self._answer(200)
        else:
            self._answer(200, b'{"_shards":{"total":1,"successful":1,"failed":0}}')

    def bulk(self, body: bytes) -> None:
        if time.monotonic() < self.counters.paused_until:
            self.counters.refused += 1
            self._answer(503, UNAVAILABLE)
            return
        answer, docs = bulk_answer(body)
        self.counters.stored(docs, len(body))
        self._answer(200, answer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sink", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    Handler.counters = Counters()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
