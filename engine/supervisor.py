"""The supervisor: forks worker processes and keeps their number right (the gunicorn arbiter pattern).

Signal handlers only enqueue. The main loop is one fixed cycle: wait for a signal (at most 1 s) ->
dispatch -> kill hung workers -> reap dead ones -> spawn missing ones -> periodic jobs. A worker that
exits with EXIT_BOOT_FAILURE (or EXIT_REFUSED: the search cluster refused the credentials) halts the engine,
which exits with that code, instead of crash-looping. SIGTERM drains every worker;
a second SIGTERM, or SIGINT/SIGQUIT, is a fast stop.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from panopticon import _compiled
from panopticon.common.clock import now_ms
from panopticon.common.settings import Settings
from panopticon.engine.counters import Counter, CounterTable, LagTable
from panopticon.engine.shm import BlockPool, remove_stale_segments, segment_name
from panopticon.engine.throughput import ThroughputLog
from panopticon.engine.worker import HALTS, run_worker

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD)
RESPAWN_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
BOOT_GRACE_S = 60.0  # a booting worker (joining the group) gets this long before its first heartbeat counts


@dataclass
class WorkerSlot:
    index: int
    pool: BlockPool
    pid: int = 0
    started: float = 0.0
    started_ms: int = 0
    failures: int = 0
    next_spawn: float = 0.0
    restarts: int = 0


class JobRunner(threading.Thread):
    """Periodic jobs that talk to the search cluster (templates, retention, compaction), off the main loop:
    a slow or unreachable cluster must never delay signals, heartbeats or reaping."""

    def __init__(self, jobs: list[Any]) -> None:
        super().__init__(name="jobs", daemon=True)
        self.jobs = jobs
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(1.0):
            for job in self.jobs:
                try:
                    job.poll(now_ms())
                except Exception as exc:  # a periodic job never takes the engine down
                    log.warning("%s failed: %s", type(job).__name__, exc)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Supervisor:
    def __init__(self, settings: Settings, workers: int, jobs: list[Any] | None = None) -> None:
        self.settings = settings
        self.workers = workers
        self.jobs = jobs or []
        self.slots: list[WorkerSlot] = []
        self.signals: list[int] = []
        self.stopping = False
        self.fast = False
        self.halt_code: int | None = None
        self.instance = settings.engine_instance_id or socket.gethostname()
        self.counters: CounterTable | None = None
        self.lag: LagTable | None = None
        self.deadline = 0.0
        self._pipe: tuple[int, int] | None = None

    # ------------------------------------------------------------------ setup

    def block_size(self) -> int:
        return self.settings.bulk_batch_bytes + 4 * self.settings.engine_max_message_bytes + 65536

    def start(self) -> None:
        stale = remove_stale_segments()
        if stale:
            log.info("removed %d shared-memory segments left by a dead supervisor", len(stale))
        self.counters = CounterTable.create(segment_name("counters", 0), self.workers)
        self.lag = LagTable.create(segment_name("lag", 0), self.settings.input_topics)
        for i in range(self.workers):
            pool = BlockPool.create(segment_name("blocks", i), self.block_size(), self.settings.engine_shm_blocks)
            self.slots.append(WorkerSlot(i, pool))
        self._pipe = os.pipe()
        for fd in self._pipe:
            os.set_blocking(fd, False)
        for sig in SIGNALS:
            signal.signal(sig, self.enqueue_signal)
        log.info("engine supervisor: %d workers, %d blocks of %.1f MB each, group %s, %s", self.workers,
                 self.settings.engine_shm_blocks, self.block_size() / 1e6, self.settings.engine_group_id,
                 _compiled.build())

    def enqueue_signal(self, signum: int, _frame: Any) -> None:
        if len(self.signals) < 10:
            self.signals.append(signum)
        if self._pipe:
            try:
                os.write(self._pipe[1], b".")
            except OSError:
                pass

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        self.start()
        throughput = ThroughputLog(self.settings.stream_throughput_batch_size,
                                   self.settings.stream_throughput_min_interval_ms,
                                   self.settings.stream_throughput_target_count, now_ms())
        jobs = JobRunner(self.jobs)
        jobs.start()
        try:
            while True:
                self.sleep()
                self.dispatch_signals()
                self.murder_workers()
                self.reap_workers()
                if self.halt_code is not None or (self.stopping and not self.live()):
                    break
                if not self.stopping:
                    self.spawn_workers()
                    self.log_throughput(throughput)
        finally:
            jobs.stop()
            self.stop_workers()
            self.cleanup()
        return self.halt_code or 0

    def sleep(self) -> None:
        assert self._pipe is not None
        if self.signals:
            return
        try:
            ready, _, _ = select.select([self._pipe[0]], [], [], 1.0)
            if ready:
                while os.read(self._pipe[0], 4096):
                    pass
        except (OSError, InterruptedError) as exc:
            if getattr(exc, "errno", None) not in (errno.EAGAIN, errno.EINTR, None):
                raise

    def dispatch_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            handler = {signal.SIGTERM: self.handle_term, signal.SIGINT: self.handle_int,
                       signal.SIGQUIT: self.handle_int}.get(signal.Signals(signum))
            if handler:
                handler()

    def handle_term(self) -> None:
        if self.stopping:
            self.handle_int()
            return
        log.info("SIGTERM: draining %d workers", len(self.live()))
        self.stopping = True
        self.deadline = time.monotonic() + self.settings.engine_shutdown_timeout_s
        self.kill_all(signal.SIGTERM)

    def handle_int(self) -> None:
        log.info("fast stop")
        self.stopping = self.fast = True
        self.deadline = time.monotonic() + 3.0
        self.kill_all(signal.SIGINT)

    def live(self) -> list[WorkerSlot]:
        return [slot for slot in self.slots if slot.pid]

    def kill_all(self, sig: int) -> None:
        for slot in self.live():
            self.kill(slot.pid, sig)

    @staticmethod
    def kill(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def murder_workers(self) -> None:
        """A worker whose heartbeat is older than ENGINE_WORKER_TIMEOUT_S is killed (it is replaced later)."""
        assert self.counters is not None
        if self.stopping:
            if time.monotonic() > self.deadline:
                self.kill_all(signal.SIGKILL)
            return
        now = now_ms()
        timeout_ms = self.settings.engine_worker_timeout_s * 1000
        for slot in self.live():
            beat = self.counters.slots[slot.index].get(Counter.heartbeat_ms)
            booting = time.monotonic() - slot.started < BOOT_GRACE_S and beat < slot.started_ms
            if not booting and now - beat > timeout_ms:
                log.error("worker %d (pid %d) missed its heartbeat for %.0fs: killing it", slot.index, slot.pid,
                          (now - beat) / 1000)
                self.kill(slot.pid, signal.SIGKILL)

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    self.worker_exited(slot, status)

    def worker_exited(self, slot: WorkerSlot, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        slot.pid = 0
        if self.lag is not None:
            self.lag.clear(slot.index)
        if code in HALTS:
            log.error("worker %d %s: halting the engine", slot.index, HALTS[code])
            if self.halt_code is None:
                self.halt_code = code
            return
        if self.stopping:
            log.info("worker %d exited (%d)", slot.index, code)
            return
        slot.failures += 1
        slot.restarts += 1
        delay = RESPAWN_BACKOFF_S[min(slot.failures, len(RESPAWN_BACKOFF_S) - 1)]
        slot.next_spawn = time.monotonic() + delay
        log.warning("worker %d exited with %d; replacing it in %.1fs", slot.index, code, delay)

    def spawn_workers(self) -> None:
        for slot in self.slots:
            if not slot.pid and time.monotonic() >= slot.next_spawn:
                self.spawn_worker(slot)
            elif slot.pid and slot.failures and time.monotonic() - slot.started > 60:
                slot.failures = 0

    def spawn_worker(self, slot: WorkerSlot) -> None:
        assert self.counters is not None
        counters = self.counters.slots[slot.index]
        slot.started = time.monotonic()
        slot.started_ms = now_ms()
        counters.set(Counter.heartbeat_ms, 0)
        parent = os.getpid()
        pid = os.fork()
        if pid:
            slot.pid = pid
            log.info("spawned worker %d (pid %d)", slot.index, pid)
            return
        code = 1
        try:
            self.init_child(parent)
            instance = f"{self.settings.engine_group_id}-{self.instance}-w{slot.index}"
            code = run_worker(self.settings, slot.index, slot.pool, counters, self.lag,
                              instance if self.settings.engine_static_membership else None)
        except BaseException:
            log.exception("worker %d crashed", slot.index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def init_child(self, parent: int) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self._pipe:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
        if os.getppid() != parent:
            os._exit(1)

    def log_throughput(self, throughput: ThroughputLog) -> None:
        assert self.counters is not None
        totals = self.counters.totals()
        stored = {self.settings.kafka_apm_log_topic: totals[Counter.stored_logs],
                  self.settings.kafka_apm_span_topic: totals[Counter.stored_spans]}
        for line in throughput.lines(stored, now_ms()):
            log.info("%s", line)

    # ------------------------------------------------------------------ stop

    def stop_workers(self) -> None:
        if self.live() and not self.stopping:
            self.stopping = True
            self.deadline = time.monotonic() + self.settings.engine_shutdown_timeout_s
            self.kill_all(signal.SIGTERM)
        while self.live():
            if time.monotonic() > self.deadline:
                self.kill_all(signal.SIGKILL)
            self.reap_workers()
            time.sleep(0.05)

    def cleanup(self) -> None:
        for slot in self.slots:
            slot.pool.close()
            slot.pool.segment.unlink()
        if self.counters is not None:
            self.counters.close()
            self.counters.segment.unlink()
            self.counters = None
        if self.lag is not None:
            self.lag.close()
            self.lag.segment.unlink()
            self.lag = None
        log.info("engine stopped")
