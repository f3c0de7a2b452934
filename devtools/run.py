"""``make run``: the whole system on the local stack (Apache Kafka + OpenSearch), with traffic. Ctrl-C stops
everything.

Starts the local stack (data in ``.stack/``, kept between runs), creates the topics, then the engine, the query API, the
error-stream bridge, the OTLP/HTTP receiver (``panopticon ingest``, once the build has it) and loadgen at a modest
rate (plus a small share as OTLP through the receiver), each as its own process, and prints where to look.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from panopticon.common.settings import Settings, load_settings
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
    otlp_rate = os.environ.get("LOADGEN_OTLP_RATE", "20")
    components = [
        Component("engine", ["engine"]),
        Component("api", ["api"]),
        Component("bridge", ["bridge"]),
        Component("ingest", ["ingest"]),
        Component("loadgen", ["loadgen", "--rate", rate, "--invalid-ratio", "0.01", "--quiet"]),
    ]
    if sends(otlp_rate):
        endpoint = f"http://127.0.0.1:{settings.ingest_port}"
        components.append(Component("loadgen-otlp", ["loadgen", "--otlp", "http", "--otlp-endpoint", endpoint,
                                                     "--rate", otlp_rate, "--quiet"]))
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for component in components:
        component.start(env)
    print_banner(settings, stack.brokers, rate, otlp_rate)
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


def print_banner(settings: Settings, brokers: str, rate: str, otlp_rate: str) -> None:
    api, bridge, ws = settings.port, settings.error_stream_port, settings.error_stream_ws_path
    print(f"""
  Web UI           http://127.0.0.1:{api}/

Panopticon is running (loadgen at {rate} records/s). Logs: {LOG_DIR}/

  Query API        http://127.0.0.1:{api}/query/services
                   curl -s 'http://127.0.0.1:{api}/query/services' | python -m json.tool
                   curl -s 'http://127.0.0.1:{api}/query/logs?level=ERROR&size=5' | python -m json.tool
  Service map      curl -s 'http://127.0.0.1:{api}/query/service-map' | python -m json.tool
  OpenAPI          http://127.0.0.1:{api}/openapi.json
  Live errors      ws://127.0.0.1:{bridge}{ws}
                   .venv/bin/python -m panopticon.bridge.watch --url ws://127.0.0.1:{bridge}{ws}
  Engine metrics   http://127.0.0.1:{settings.engine_metrics_port}/metrics
{otlp_lines(settings, brokers, otlp_rate)}
Ctrl-C stops everything.
""", flush=True)


def otlp_lines(settings: Settings, brokers: str, otlp_rate: str) -> str:
    """How to send OpenTelemetry data: to the receiver (OTLP/HTTP), or through a Collector's kafka exporter."""
    endpoint = f"http://127.0.0.1:{settings.ingest_port}"
    share = (f"\n                   loadgen also sends {otlp_rate} records/s through it as OTLP "
             f"(--otlp http; log: loadgen-otlp.log)" if sends(otlp_rate) else "")
    http = f"""  OTLP/HTTP        {endpoint}/v1/traces and /v1/logs (panopticon ingest){share}
                   an application's OpenTelemetry SDK sends there with
                   OTEL_EXPORTER_OTLP_ENDPOINT={endpoint} OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"""
    spans, logs = settings.kafka_otlp_span_topic, settings.kafka_otlp_log_topic
    if not (spans and logs):
        return http + "\n"
    return f"""{http}
  OTLP via Kafka   the engine reads {spans} and {logs}; an OpenTelemetry Collector (>= 0.124) writes them with
                   exporters:
                     kafka:
                       brokers: [{", ".join(brokers.split(","))}]
                       traces: {{topic: {spans}, encoding: otlp_proto}}
                       logs: {{topic: {logs}, encoding: otlp_proto}}
"""


def sends(rate: str) -> bool:
    """LOADGEN_OTLP_RATE: 0 (or not a number) turns the OTLP share off."""
    try:
        return float(rate) > 0
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
