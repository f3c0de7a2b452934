"""The embedded local stack: one noida-db process speaking Kafka and an Elasticsearch-compatible API.

Used by ``panopticon stack up|down|status``, ``make run`` and the integration tests (which start their
own stack on free ports). The wrapper starts the real binary as a child, so the stack is stopped by
process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "panopticon-stack.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _noida() -> str:
    found = shutil.which("noida-db") or str(Path(sys.executable).with_name("noida-db"))
    if not Path(found).exists():
        raise RuntimeError("noida-db is not installed: pip install 'panopticon[local]'")
    return found


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _search_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@dataclass
class LocalStack:
    data_dir: str
    kafka_port: int
    search_port: int
    pid: int = 0

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def search_url(self) -> str:
        return f"http://127.0.0.1:{self.search_port}"

    def env(self) -> dict[str, str]:
        return {"KAFKA_BROKERS": self.brokers, "OPENSEARCH_URL": self.search_url}

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 60.0) -> LocalStack:
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(self.data_dir) / "stack.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            [_noida(), "start", "--data-dir", self.data_dir, "--only", "kafka,elasticsearch",
             "--kafka-port", str(self.kafka_port), "--elasticsearch-port", str(self.search_port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.pid = process.pid
        self._save()
        self.wait_ready(timeout_s, process)
        return self

    def wait_ready(self, timeout_s: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the local stack exited at start; see {self.data_dir}/stack.log")
            if _port_open(self.kafka_port) and _search_answers(self.search_port):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the local stack did not answer within {timeout_s:.0f}s")

    def stop(self) -> None:
        subprocess.run([_noida(), "down", "--data-dir", self.data_dir], capture_output=True, timeout=30,
                       check=False)
        if self.pid:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                for _ in range(50):
                    os.killpg(self.pid, 0)
                    time.sleep(0.1)
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        state = Path(self.data_dir) / STATE_FILE
        state.unlink(missing_ok=True)

    def alive(self) -> bool:
        if not self.pid:
            return False
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return _port_open(self.kafka_port) and _search_answers(self.search_port)

    # ------------------------------------------------------------ outages (tests)

    def service(self, verb: str, name: str) -> None:
        """``verb`` is start, stop or restart; ``name`` is kafka or elasticsearch. Data is kept."""
        subprocess.run([_noida(), verb, name, "--data-dir", self.data_dir], capture_output=True, timeout=60,
                       check=True)

    def stop_search(self) -> None:
        self.service("stop", "elasticsearch")

    def start_search(self) -> None:
        self.service("start", "elasticsearch")
        deadline = time.monotonic() + 30
        while not _search_answers(self.search_port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart_kafka(self) -> None:
        """Stands in for the session expiry a real broker does for a member that died without leaving."""
        self.service("restart", "kafka")
        deadline = time.monotonic() + 30
        while not _port_open(self.kafka_port) and time.monotonic() < deadline:
            time.sleep(0.1)

    # ------------------------------------------------------------ state file (``panopticon stack``)

    def _save(self) -> None:
        (Path(self.data_dir) / STATE_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, data_dir: str) -> LocalStack | None:
        state = Path(data_dir) / STATE_FILE
        if not state.exists():
            return None
        return cls(**json.loads(state.read_text()))
