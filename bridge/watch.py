"""Watch the live error feed from a terminal: ``python -m panopticon.bridge.watch [--url U] [--service S] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from urllib.parse import urlencode

import simple_websocket


def build_url(base: str, services: list[str], environment: str | None) -> str:
    query = [("service", s) for s in services] + ([("environment", environment)] if environment else [])
    return f"{base}?{urlencode(query)}" if query else base


def line(event: dict[str, object]) -> str:
    trace = f" trace={event['trace_id']}" if event.get("trace_id") else ""
    http = f" {event.get('http_method', '')} {event.get('http_path', '')} {event.get('http_status_code', '')}"
    http = http if event.get("http_path") else ""
    return (f"{event.get('timestamp')} {event.get('level'):<5} {event.get('service_name')}"
            f"[{event.get('environment')}]{http} {event.get('message')}{trace}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m panopticon.bridge.watch", description=__doc__)
    parser.add_argument("--url", default="ws://localhost:3010/ws/error-logs")
    parser.add_argument("--service", action="append", default=[], help="only this service (repeatable)")
    parser.add_argument("--environment", help="only this environment")
    parser.add_argument("--origin", help="Origin header, when the bridge has an allow-list")
    parser.add_argument("--json", action="store_true", help="print each error as received (JSON)")
    args = parser.parse_args(argv)
    headers = {"Origin": args.origin} if args.origin else None
    try:
        ws = simple_websocket.Client.connect(build_url(args.url, args.service, args.environment), headers=headers)
    except (OSError, simple_websocket.ConnectionError) as exc:
        print(f"cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        while True:
            text = ws.receive()
            print(text if args.json else line(json.loads(text)), flush=True)
    except simple_websocket.ConnectionClosed as exc:
        print(f"closed by the bridge: {exc.reason} {exc.message or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        ws.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
