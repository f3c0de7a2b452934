"""A Falcon app under gunicorn, as the query API and the OTLP receiver run: checked, re-executed, served.

Prometheus multiprocess mode is fixed when ``prometheus_client`` is imported, so ``PROMETHEUS_MULTIPROC_DIR``
must be in the environment before Python starts: ``launch`` checks the settings and the port (a port in use is
one line naming its variable, exit 2, before gunicorn's retries), prepares the directory (a fresh temporary
one, or the configured one wiped), then re-executes the component's module with it set; the module then calls
``serve``. The arbiter marks reaped workers dead (``child_exit``) so their live gauges leave the exposition.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_ENV = "PANOPTICON_METRICS_DIR_READY"  # set by launch() for the re-executed process only


@dataclass(frozen=True)
class Component:
    name: str  # "api": the command, the log name, the process name
    module: str  # the module re-executed, whose main() calls serve()
    port_variable: str  # "PORT"
    workers_variable: str
    threads_variable: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bind", help=f"host:port to listen on (default 0.0.0.0:${self.port_variable})")
        parser.add_argument("--workers", type=int, help=f"worker processes (default ${self.workers_variable})")
        parser.add_argument("--threads", type=int, help=f"threads per worker (default ${self.threads_variable})")

    def setting(self, settings: Any, variable: str) -> Any:
        return getattr(settings, variable.lower())

    def main(self, argv: list[str] | None, serve: Callable[[argparse.Namespace], int]) -> int:
        """The re-executed process serves; any other starts by ``launch``."""
        parser = argparse.ArgumentParser(prog=f"panopticon {self.name}")
        self.add_arguments(parser)
        args = parser.parse_args(argv)
        if os.environ.get(READY_ENV) != "1" or not os.environ.get(MULTIPROC_ENV):
            return self.launch(args)
        os.environ.pop(READY_ENV)  # not inherited by anything the server starts
        return serve(args)

    def launch(self, args: argparse.Namespace) -> int:
        """Validate the settings and the port, prepare the metrics directory, then re-execute to serve."""
        from panopticon.common.ports import check_port
        from panopticon.common.settings import load_settings

        settings = load_settings()  # a bad variable stops here, with a message naming it
        address = listen_address(args.bind, self.setting(settings, self.port_variable), self.port_variable)
        if address is not None:
            check_port(*address)
        env = dict(os.environ)
        env[MULTIPROC_ENV] = prepare_metrics_dir(env, self.name)
        env[READY_ENV] = "1"
        argv = [sys.executable, "-m", self.module]
        for flag in ("bind", "workers", "threads"):
            value = getattr(args, flag, None)
            if value is not None:
                argv += [f"--{flag}", str(value)]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)
        return 0  # not reached

    def options(self, settings: Any, args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
        """gunicorn's settings: ours from the environment and the flags, then the component's ``overrides``."""
        threads = args.threads or self.setting(settings, self.threads_variable)
        return {
            "bind": args.bind or f"0.0.0.0:{self.setting(settings, self.port_variable)}",
            "workers": args.workers or self.setting(settings, self.workers_variable),
            "threads": threads,
            "worker_class": "gthread" if threads > 1 else "sync",
            "graceful_timeout": 15,
            "keepalive": 5,
            "accesslog": None,  # one line per request comes from the component's middleware
            "loglevel": settings.log_level.lower(),
            "proc_name": f"panopticon-{self.name}",
            "child_exit": child_exit,
            "control_socket_disable": True,  # else one fixed path per user ($HOME/.gunicorn): instances would share it
            **overrides,
        }


def serve(options: dict[str, Any], load: Callable[[], Any]) -> int:
    """Become the gunicorn arbiter; each worker calls ``load`` for its WSGI app after the fork."""
    from gunicorn.app.base import BaseApplication

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return load()

    Application().run()
    return 0


def prepare_metrics_dir(env: dict[str, str], name: str) -> str:
    """The configured directory emptied, or a fresh temporary one."""
    configured = env.get(MULTIPROC_ENV, "").strip()
    if not configured:
        return tempfile.mkdtemp(prefix=f"panopticon-{name}-metrics-")
    path = Path(configured)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return str(path)


def listen_address(bind: str | None, port: int, variable: str) -> tuple[str, int, str] | None:
    """(host, port, the variable or flag that chose it) of a TCP bind; None for what gunicorn alone reads."""
    if not bind:
        return "0.0.0.0", port, variable
    host, _, port_text = bind.rpartition(":")
    if not host or not port_text.isdigit() or host.startswith("unix"):
        return None
    return host.strip("[]"), int(port_text), "--bind"


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def exposition(registry: Any) -> bytes:
    """The metrics of every worker (multiprocess mode), or else of this process's ``registry``."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    if os.environ.get(MULTIPROC_ENV):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    return generate_latest(registry)
