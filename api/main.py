"""``panopticon api``: serve the query API with gunicorn (``api.app:get_app`` in each worker).

Prometheus multiprocess mode is fixed when ``prometheus_client`` is imported, so ``PROMETHEUS_MULTIPROC_DIR``
must be in the environment before Python starts: ``run`` prepares the directory (a fresh temporary one, or
the configured one wiped), then re-executes this module with it set. The arbiter marks reaped workers dead
(``child_exit``) so their live gauges leave the exposition.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_ENV = "PANOPTICON_API_METRICS_DIR_READY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", help="host:port to listen on (default 0.0.0.0:$PORT)")
    parser.add_argument("--workers", type=int, help="worker processes (default $API_WORKERS)")
    parser.add_argument("--threads", type=int, help="threads per worker (default $API_THREADS)")


def prepare_metrics_dir(env: dict[str, str]) -> str:
    """The configured directory emptied, or a fresh temporary one."""
    configured = env.get(MULTIPROC_ENV, "").strip()
    if not configured:
        return tempfile.mkdtemp(prefix="panopticon-api-metrics-")
    path = Path(configured)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return str(path)


def listen_address(settings: Any, args: argparse.Namespace) -> tuple[str, int, str] | None:
    """(host, port, the variable or flag that chose it) of a TCP bind; None for what gunicorn alone reads."""
    if not args.bind:
        return "0.0.0.0", settings.port, "PORT"
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit() or host.startswith("unix"):
        return None
    return host.strip("[]"), int(port), "--bind"


def run(args: argparse.Namespace) -> int:
    """Validate the settings and the port, prepare the metrics directory, then become the gunicorn arbiter."""
    from panopticon.common.ports import check_port
    from panopticon.common.settings import load_settings

    settings = load_settings()  # a bad variable stops here, with a message naming it
    address = listen_address(settings, args)
    if address is not None:
        check_port(*address)  # a port in use too, before gunicorn's retries
    env = dict(os.environ)
    env[MULTIPROC_ENV] = prepare_metrics_dir(env)
    env[READY_ENV] = "1"
    argv = [sys.executable, "-m", "panopticon.api.main"]
    for flag in ("bind", "workers", "threads"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += [f"--{flag}", str(value)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def gunicorn_options(settings: Any, args: argparse.Namespace) -> dict[str, Any]:
    threads = args.threads or settings.api_threads
    return {
        "bind": args.bind or f"0.0.0.0:{settings.port}",
        "workers": args.workers or settings.api_workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": int(max(30.0, settings.opensearch_timeout_s * 3 + 5)),
        "graceful_timeout": 15,
        "keepalive": 5,
        "accesslog": None,  # one line per request comes from api.middleware.Telemetry
        "loglevel": settings.log_level.lower(),
        "proc_name": "panopticon-api",
        "child_exit": child_exit,
        "control_socket_disable": True,  # else one fixed path per user ($HOME/.gunicorn): instances would share it
    }


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from panopticon.common.logs import setup_logging
    from panopticon.common.settings import load_settings

    settings = load_settings()
    setup_logging(settings, "api")
    options = gunicorn_options(settings, args)

    class ApiApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from panopticon.api.app import get_app

            return get_app(settings)

    ApiApplication().run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="panopticon api")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if os.environ.get(READY_ENV) != "1" or not os.environ.get(MULTIPROC_ENV):
        return run(args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
