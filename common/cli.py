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
    "stack": ("common.stack_cli", "start, check or stop the local Apache Kafka + OpenSearch"),
    "topics": ("common.topics_cli", "create the topics (idempotent)"),
    "loadgen": ("common.loadgen", "produce realistic logs and spans"),
    "sample": ("common.sample", "send one example log or span"),
    "retention": ("engine.retention", "delete daily indices older than their retention, once"),
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
    """The parser of one subcommand; its module is imported only when the command is used."""
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
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


if __name__ == "__main__":
    sys.exit(main())
