"""Step 2, flushing: sealed batches -> the search cluster, and their answers read back.

A sealed batch is tracked by the committing step first (offsets commit in seal order), then sent by the
flusher threads (``engine/bulk.py``). Each answer is read here, on the worker's thread: refused items are
dead-lettered, stored ERROR logs republished to the error topic, the block freed.
"""

from __future__ import annotations

import logging
import queue

from panopticon.common.settings import SettingsError
from panopticon.engine.batch import ROLLUP, Batch
from panopticon.engine.bulk import Flusher, FlushResult
from panopticon.engine.committing import Committing
from panopticon.engine.counters import Counter, CounterSlot
from panopticon.engine.publish import Publisher
from panopticon.engine.shm import BlockPool

log = logging.getLogger(__name__)


class Flushing:
    def __init__(self, flusher: Flusher, publisher: Publisher, pool: BlockPool, counters: CounterSlot,
                 committing: Committing) -> None:
        self.flusher = flusher
        self.publisher = publisher
        self.pool = pool
        self.counters = counters
        self.committing = committing

    @property
    def refusal(self) -> SettingsError | None:
        """Set when the search cluster refused the credentials: no retry can help."""
        return self.flusher.refusal

    def submit(self, batch: Batch) -> None:
        self.committing.submit(batch)
        if batch.count:
            self.counters.add(Counter.inflight_bytes, batch.size)
            self.flusher.submit(batch)
        else:
            self.release(batch)
            batch.flushed = True

    def poll(self, timeout_s: float = 0.0) -> None:
        """Read the flush results there are (waiting up to ``timeout_s`` for the first); serve produce
        acknowledgements."""
        done = self.flusher.done
        while True:
            try:
                result = done.get(timeout=timeout_s) if timeout_s else done.get_nowait()
            except queue.Empty:
                break
            self._finish(result)
            timeout_s = 0.0
        self.publisher.poll()

    def close(self) -> None:
        """Stop retrying (what is unfinished is never committed), wait a little for produces and threads."""
        self.flusher.terminate()
        self.publisher.flush(5)
        self.flusher.join(2)

    def release(self, batch: Batch) -> None:
        if batch.block is not None:
            self.pool.release(batch.block)
            batch.block = None
            self.counters.set(Counter.blocks_in_use, self.pool.total - self.pool.free)

    def _finish(self, result: FlushResult) -> None:
        batch = result.batch
        statuses = result.statuses
        counters = self.counters
        counters.add(Counter.bulk_requests)
        counters.observe_latency(result.latency_s)
        counters.add(Counter.bytes_sent, result.bytes_sent)
        counters.add(Counter.retries, result.retries)
        counters.add(Counter.batch_docs, batch.count)
        counters.add(Counter.batches)
        counters.add(Counter.inflight_bytes, -batch.size)
        if statuses is not None:
            kinds = batch.kinds
            counters.add(Counter.duplicates, sum(1 for i, s in enumerate(statuses) if s == 409 and kinds[i] != ROLLUP))
            for index, reason in result.errors.items():
                kind = kinds[index]
                batch.docs[kind] -= 1
                if kind == ROLLUP:
                    log.error("a rollup document was refused: HTTP %d: %s", statuses[index], reason)
                    continue
                self.publisher.reject(batch, batch.records[index], kind, "rejected_by_search",
                                      f"HTTP {statuses[index]}: {reason}", batch.elements.get(index))
        for index in batch.error_items:
            if statuses is None or statuses[index] in (200, 201, 409):
                self.publisher.republish(batch, index)
        batch.flushed = True
        self.release(batch)
        batch.drop_documents()
