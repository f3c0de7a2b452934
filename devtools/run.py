"""``make run``: the whole system on the local stack (Apache Kafka + OpenSearch), with traffic. Ctrl-C stops
everything.

Starts the local stack (data in ``.stack/``, kept between runs), creates the topics, then the engine, the query API, the
error-stream bridge and loadgen at a modest rate, each as its own process, and prints where to look.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from panopticon.common.settings import load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools.stack import LocalStack, StackError
from panopticon.devtools.stack_cli import env_port, up

ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = Path(os.environ.get("PANOPTICON_STACK_DIR") or ROOT / ".stack").resolve()
LOG_DIR = STACK_DIR / "logs"


@dataclass
class Component:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        log = open(LOG_DIR / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen([sys.executable, "-m", "panopticon", *self.args], env=env, cwd=ROOT,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 35.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def main() -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    kafka_port, search_port = env_port("PANOPTICON_KAFKA_PORT", 9092), env_port("PANOPTICON_SEARCH_PORT", 9200)
    try:
        stack = up(str(STACK_DIR), kafka_port, search_port, LocalStack.load(str(STACK_DIR)))
    except StackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    env = {**os.environ, **stack.env(), "PYTHONUNBUFFERED": "1"}
    settings = load_settings(env)
    create_topics(settings, 4)
    rate = os.environ.get("LOADGEN_RATE", "200")
    components = [
        Component("engine", ["engine"]),
        Component("api", ["api"]),
        Component("bridge", ["bridge"]),
        Component("loadgen", ["loadgen", "--rate", rate, "--invalid-ratio", "0.01", "--quiet"]),
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for component in components:
        component.start(env)
    print_banner(settings.port, settings.error_stream_port, settings.error_stream_ws_path,
                 settings.engine_metrics_port, rate)
    try:
        while not stopping:
            time.sleep(0.5)
            for component in components:
                if not component.alive() and component.process is not None:
                    print(f"{component.name} exited ({component.process.returncode}); see {LOG_DIR}/"
                          f"{component.name}.log", flush=True)
                    component.process = None
    finally:
        print("\nstopping ...", flush=True)
        for component in reversed(components):
            component.stop()
        stack.stop()
        print("stopped.", flush=True)
    return 0


def print_banner(api_port: int, bridge_port: int, ws_path: str, metrics_port: int, rate: str) -> None:
    print(f"""
Panopticon is running (loadgen at {rate} records/s). Logs: {LOG_DIR}/

  Query API        http://127.0.0.1:{api_port}/query/services
                   curl -s 'http://127.0.0.1:{api_port}/query/services' | python -m json.tool
                   curl -s 'http://127.0.0.1:{api_port}/query/logs?level=ERROR&size=5' | python -m json.tool
  OpenAPI          http://127.0.0.1:{api_port}/openapi.json
  Live errors      ws://127.0.0.1:{bridge_port}{ws_path}
                   .venv/bin/python -m panopticon.bridge.watch --url ws://127.0.0.1:{bridge_port}{ws_path}
  Engine metrics   http://127.0.0.1:{metrics_port}/metrics

Ctrl-C stops everything.
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
