"""``panopticon``: one console script, one subcommand per component.

Each subcommand lives in its component's module, which provides ``add_arguments(parser)`` and
``run(args) -> int``. A bad environment variable stops start-up with a message naming it (exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from common.settings import SettingsError

COMMANDS: dict[str, tuple[str, str]] = {
    "engine": ("engine.main", "run the ingestion engine (supervisor + worker processes)"),
    "api": ("api.main", "serve the read-only query API with gunicorn"),
    "bridge": ("bridge.main", "relay the error topic to browsers over WebSocket and Socket.IO"),
    "stack": ("common.stack_cli", "start, check or stop the embedded local stack (Kafka + search)"),
    "topics": ("common.topics_cli", "create the topics (idempotent)"),
    "loadgen": ("common.loadgen", "produce realistic logs and spans"),
    "sample": ("common.sample", "send one example log or span"),
    "retention": ("engine.retention", "delete daily indices older than their retention, once"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panopticon", description="Panopticon APM backend")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SettingsError as exc:
        print(f"panopticon {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
