"""``panopticon``: one console script, one subcommand per component.

Each subcommand lives in its component's module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; the module is imported only when its command is used. A bad environment variable stops
start-up with a message naming it (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from types import ModuleType

from panopticon.common.settings import SettingsError


def _engine() -> ModuleType:
    from panopticon.engine import main
    return main


def _api() -> ModuleType:
    from panopticon.api import main
    return main


def _ingest() -> ModuleType:
    from panopticon.ingest import main
    return main


def _bridge() -> ModuleType:
    from panopticon.bridge import main
    return main


def _stack() -> ModuleType:
    from panopticon.devtools import stack_cli
    return stack_cli


def _topics() -> ModuleType:
    from panopticon.common import topics_cli
    return topics_cli


def _loadgen() -> ModuleType:
    from panopticon.devtools import loadgen
    return loadgen


def _sample() -> ModuleType:
    from panopticon.devtools import sample
    return sample


def _retention() -> ModuleType:
    from panopticon.engine import retention
    return retention


COMMANDS: dict[str, tuple[Callable[[], ModuleType], str]] = {
    "engine": (_engine, "run the ingestion engine (supervisor + worker processes)"),
    "api": (_api, "serve the read-only query API with gunicorn"),
    "ingest": (_ingest, "receive OpenTelemetry traces and logs over OTLP/HTTP and produce them to Kafka"),
    "bridge": (_bridge, "relay the error topic to browsers over WebSocket and Socket.IO"),
    "stack": (_stack, "start, check or stop the local Apache Kafka + OpenSearch (development)"),
    "topics": (_topics, "create the topics (idempotent)"),
    "loadgen": (_loadgen, "produce realistic logs and spans (development)"),
    "sample": (_sample, "send one example log or span"),
    "retention": (_retention, "delete daily indices older than their retention, once"),
}


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="panopticon",
        description="Panopticon APM backend",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<10} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\n'panopticon COMMAND --help' describes each command.",
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    load, help_text = COMMANDS[name]
    module = load()
    parser = argparse.ArgumentParser(prog=f"panopticon {name}", description=help_text)
    module.add_arguments(parser)
    parser.set_defaults(run=module.run, command=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv or ["--help"])
    name = top.parse_args(argv[:1]).command
    args = command_parser(name).parse_args(argv[1:])
    try:
        return int(args.run(args) or 0)
    except SettingsError as exc:
        print(f"panopticon {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
