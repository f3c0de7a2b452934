"""The flushing side: sends a batch's block to ``_bulk`` and reads every item of the answer.

Transient failures (connection errors, HTTP 429 and 5xx, a 403 cluster block, item 429 or 5xx) are retried
with exponential backoff and full jitter, without limit in count, until the flusher is told to stop; a
request still failing after BULK_RETRY_STREAK_S is logged at WARNING with its cause and counted
(``retry_streaks``). An authentication or authorization refusal (401, a permission 403, for the request or an
item) is not transient: the flusher stops and keeps the refusal in ``refusal`` for the worker, which stops
the engine; the batch is abandoned, so its offsets are never committed.
Items answered 201 or 409 are stored; other 4xx items are permanent refusals, bound for the DLQ.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import urllib3

from panopticon.common.clients import search_error, search_refusal
from panopticon.common.settings import Settings, SettingsError
from panopticon.engine.batch import Batch
from panopticon.engine.counters import Counter, CounterSlot

log = logging.getLogger(__name__)

OK_STATUS = frozenset({200, 201, 409})
WARN_EVERY_ATTEMPTS = 10  # once a streak is long, a WARNING line every this many attempts


class ItemResult(msgspec.Struct):
    status: int
    error: Any = None


class BulkAnswer(msgspec.Struct):
    errors: bool
    items: list[dict[str, ItemResult]] = []


class BulkAnswerSummary(msgspec.Struct):
    errors: bool


@dataclass(slots=True)
class FlushResult:
    """What happened to a batch: None statuses means every item was created (201)."""

    batch: Batch
    statuses: list[int] | None
    errors: dict[int, str]  # item index -> reason, for refused items
    retries: int
    latency_s: float
    bytes_sent: int


class Backoff:
    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0, rng: random.Random | None = None) -> None:
        self._base, self._cap = base_s, cap_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(0, min(self._cap, self._base * (2**attempt)))


class TransientError(Exception):
    pass


def transient(status: int) -> bool:
    return status == 429 or status >= 500


class Streak:
    """Consecutive failed attempts at one request."""

    __slots__ = ("started", "attempts", "long")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.attempts = 0
        self.long = False


class BulkClient:
    """A lean HTTP client for ``_bulk``: the body is sent as it lies in the block, the answer parsed by msgspec."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        headers = {"Content-Type": "application/x-ndjson"}
        if settings.opensearch_username:
            headers.update(urllib3.make_headers(
                basic_auth=f"{settings.opensearch_username}:{settings.opensearch_password}"))
        kwargs: dict[str, Any] = {}
        if settings.opensearch_url.startswith("https"):
            kwargs["cert_reqs"] = "CERT_REQUIRED" if settings.opensearch_verify_certs else "CERT_NONE"
            if settings.opensearch_ca_certs:
                kwargs["ca_certs"] = settings.opensearch_ca_certs
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=8, headers=headers, retries=False,
                                         timeout=urllib3.Timeout(connect=5, read=settings.opensearch_timeout_s * 6),
                                         **kwargs)
        self._url = settings.opensearch_url.rstrip("/") + "/_bulk"
        self._full = msgspec.json.Decoder(BulkAnswer)
        self._summary = msgspec.json.Decoder(BulkAnswerSummary)

    def send(self, body: bytes | memoryview) -> BulkAnswer | None:
        """None when every item succeeded; the full answer otherwise. Raises TransientError, or SettingsError
        when the cluster refuses the credentials."""
        try:
            answer = self._pool.request("POST", self._url, body=cast(Any, body), preload_content=True)
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(f"unreachable: {exc}") from exc
        data = answer.data
        refusal = search_refusal(self._settings, answer.status, data)
        if refusal is not None:
            raise refusal
        if transient(answer.status) or answer.status == 403:  # 403 here: a cluster block, lifted by an operator
            _, reason = search_error(data)
            raise TransientError(f"_bulk answered HTTP {answer.status}" + (f": {reason}" if reason else ""))
        if answer.status >= 400:
            return BulkAnswer(errors=True, items=[])  # whole request refused: caller refuses every item
        try:
            if not self._summary.decode(data).errors:
                return None
            return self._full.decode(data)
        except msgspec.DecodeError as exc:
            raise TransientError(f"unreadable _bulk answer: {exc}") from exc

    def close(self) -> None:
        self._pool.clear()


def describe_error(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"[:1000]
    return str(error)[:1000]


class Flusher:
    """Threads that take sealed batches, ensure their indices exist, send them, and hand back results.

    All batch state stays with the worker's main thread: flushers only read the block and return a
    FlushResult through ``done``.
    """

    def __init__(self, settings: Settings, ensure_index: Callable[[str, str], None],
                 threads: int, client_factory: Callable[[], BulkClient] | None = None,
                 counters: CounterSlot | None = None) -> None:
        self.todo: queue.Queue[Batch | None] = queue.Queue()
        self.done: queue.Queue[FlushResult] = queue.Queue()
        self.refusal: SettingsError | None = None  # set once, by the first thread refused: the engine must stop
        self._settings = settings
        self._ensure = ensure_index
        self._counters = counters
        self._counting = threading.Lock()  # flusher threads share one counter slot
        self._long_s = settings.bulk_retry_streak_s
        self._stop = threading.Event()
        self._factory = client_factory or (lambda: BulkClient(settings))
        self._threads = [threading.Thread(target=self._run, name=f"flusher-{i}", daemon=True)
                         for i in range(threads)]
        self._backoff = Backoff()
        for thread in self._threads:
            thread.start()

    def submit(self, batch: Batch) -> None:
        self.todo.put(batch)

    def terminate(self) -> None:
        """Stop retrying: batches still failing are abandoned (their offsets are never committed)."""
        self._stop.set()
        for _ in self._threads:
            self.todo.put(None)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        client = self._factory()
        try:
            while not self._stop.is_set():
                batch = self.todo.get()
                if batch is None:
                    return
                result = self._flush(client, batch)
                if result is not None:
                    self.done.put(result)
        finally:
            client.close()

    def _retry(self, streak: Streak, why: str) -> bool:
        """Wait before the next attempt (False: told to stop). A streak that lasts BULK_RETRY_STREAK_S is
        logged at WARNING with its cause and counted once; shorter ones leave an INFO line at their start."""
        delay = self._backoff.delay(streak.attempts)
        streak.attempts += 1
        lasted = time.monotonic() - streak.started
        became_long = not streak.long and lasted >= self._long_s
        if became_long:
            streak.long = True
            self._count(Counter.retry_streaks)
        if became_long or (streak.long and streak.attempts % WARN_EVERY_ATTEMPTS == 0):
            log.warning("search cluster: %s; retrying for %.0fs now (%d attempts, next in %.1fs)", why, lasted,
                        streak.attempts, delay)
        elif streak.attempts == 1:
            log.info("search cluster: %s; retrying in %.2fs", why, delay)
        return not self._stop.wait(delay)

    def _refused(self, refusal: SettingsError) -> None:
        """Not worth a retry: stop every thread; the worker reads ``refusal`` and stops the engine."""
        if self.refusal is None:
            self.refusal = refusal
        self._stop.set()

    def _count(self, counter: int) -> None:
        if self._counters is not None:
            with self._counting:
                self._counters.add(counter)

    def _ensure_indices(self, batch: Batch) -> bool:
        streak = Streak()
        while True:
            try:
                for kind, index in batch.indices:
                    self._ensure(kind, index)
                return True
            except Exception as exc:  # a refusal stops; any other failure to create an index is retried
                status, body = getattr(exc, "status_code", None), getattr(exc, "info", None)  # opensearch-py's
                refusal = search_refusal(self._settings, status, body)
                if refusal is not None:
                    self._refused(refusal)
                    return False
                if not self._retry(streak, f"creating an index failed ({exc})"):
                    return False

    def _flush(self, client: BulkClient, batch: Batch) -> FlushResult | None:
        if not self._ensure_indices(batch):
            return None
        started = time.monotonic()
        pending = list(range(batch.count))
        statuses: list[int] | None = None
        errors: dict[int, str] = {}
        sent = 0
        streak = Streak()
        body: bytes | memoryview = batch.body()
        while True:
            try:
                sent += len(body)
                answer = client.send(body)
                if answer is not None:
                    if statuses is None:
                        statuses = [201] * batch.count
                    pending = self._read_items(answer, pending, statuses, errors)
            except TransientError as exc:
                if not self._retry(streak, str(exc)):
                    return None
                continue
            except SettingsError as refusal:
                self._refused(refusal)
                return None
            if answer is None:
                if statuses is not None:
                    for index in pending:
                        statuses[index] = 201
                break
            if not pending:
                break
            if not self._retry(streak, f"{len(pending)} items answered 429/5xx"):
                return None
            body = b"".join(batch.item_bytes(i) for i in pending)
        return FlushResult(batch, statuses, errors, streak.attempts, time.monotonic() - started, sent)

    def _read_items(self, answer: BulkAnswer, pending: list[int], statuses: list[int],
                    errors: dict[int, str]) -> list[int]:
        """Record each item's outcome; return the items to retry. Raises SettingsError for an item refused
        for want of a permission (the engine stops rather than dead-letter the documents)."""
        if not answer.items:  # the whole request was refused
            for index in pending:
                statuses[index] = 400
                errors[index] = "the search cluster refused the bulk request"
            return []
        retry = []
        for index, item in zip(pending, answer.items, strict=False):
            result = next(iter(item.values()))
            status = result.status
            statuses[index] = status
            if status in OK_STATUS:
                continue
            if transient(status):
                retry.append(index)
            elif status in (401, 403) and (refusal := search_refusal(self._settings, status, result.error)):
                raise refusal
            else:
                errors[index] = describe_error(result.error)
        return retry
