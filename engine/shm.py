"""Shared-memory segments: bulk blocks (a fixed free list per worker) and counters.

One owner: the supervisor creates every segment before forking and is the only process that unlinks
them. Children inherit the mappings through ``fork()`` and never attach by name, so Python's resource
tracker never unlinks a segment under a live owner; if the supervisor is killed, the tracker (its own
process) unlinks what was left, and the next supervisor removes any segment whose creator is dead.
"""

from __future__ import annotations

import os
from collections import deque
from multiprocessing import shared_memory
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIX = "panopticon-"


def segment_name(kind: str, index: int) -> str:
    return f"{PREFIX}{os.getpid()}-{kind}-{index}"


def remove_stale_segments() -> list[str]:
    """Unlink segments left by a supervisor that no longer runs (its pid is in the name)."""
    removed: list[str] = []
    if not SHM_DIR.is_dir():
        return removed
    for path in SHM_DIR.glob(f"{PREFIX}*"):
        try:
            pid = int(path.name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if not _alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Segment:
    """A shared-memory segment created by the owner; children use it through the inherited mapping."""

    def __init__(self, name: str, size: int) -> None:
        self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        self.name = name
        self.size = size
        self.owner = os.getpid()

    @property
    def buf(self) -> memoryview:
        buf = self._shm.buf
        assert buf is not None
        return buf

    def close(self) -> None:
        self._shm.close()

    def unlink(self) -> None:
        if os.getpid() == self.owner:
            self._shm.unlink()


class Block:
    """One bulk body in shared memory. Owned by one side at a time: the builder, then the flusher."""

    __slots__ = ("index", "view", "length")

    def __init__(self, index: int, view: memoryview) -> None:
        self.index = index
        self.view = view
        self.length = 0

    @property
    def capacity(self) -> int:
        return len(self.view)

    def fill(self, payload: bytes | bytearray) -> bool:
        """Copy a finished NDJSON body in; False when it does not fit."""
        size = len(payload)
        if size > len(self.view):
            return False
        self.view[:size] = payload
        self.length = size
        return True

    def body(self) -> memoryview:
        return self.view[: self.length]


class BlockPool:
    """A fixed free list of blocks carved out of one segment. No free block = backpressure."""

    def __init__(self, segment: Segment, block_size: int, count: int) -> None:
        self.segment = segment
        self._blocks = [
            Block(i, segment.buf[i * block_size : (i + 1) * block_size]) for i in range(count)
        ]
        self._free: deque[Block] = deque(self._blocks)

    @classmethod
    def create(cls, name: str, block_size: int, count: int) -> BlockPool:
        return cls(Segment(name, block_size * count), block_size, count)

    @property
    def total(self) -> int:
        return len(self._blocks)

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire(self) -> Block | None:
        return self._free.popleft() if self._free else None

    def release(self, block: Block) -> None:
        block.length = 0
        self._free.append(block)

    def close(self) -> None:
        for block in self._blocks:
            block.view.release()
        self._blocks.clear()
        self._free.clear()
        self.segment.close()
