"""Rollup windows kept in each API worker, so repeated long RED reads cost the cluster (almost) nothing.

A ``WindowSource`` for ``common.rollup_reader.RollupReader``, one per worker process, shared by its threads:

- **Closed hours** (those the compactor marked done): their 1-hour cells are read once per question shape
  (``RollupQuery``; one service's totals share the shape of all services: ``_shared``) and kept. Whether an
  hour changed is told by its marker (the compactor rewrites an hour's documents, then its marker, when late
  data arrives): the markers of the hours asked about are re-read at most every ``hour_ttl_s``, in one small
  search, and only hours whose marker changed are read again. The cells of a UTC day whose 24 hours are all
  marked are also kept merged, so a 14-day total sums ~14 entries.
- **Minutes** (the open hour, hours not marked yet, the partial hours at both ends of a range): the 1-minute
  cells of each hour touched are read whole and kept for ``minute_ttl_s`` when the hour ended less than
  ``recent_ms`` ago, else for ``hour_ttl_s``.

Staleness: an answer may miss what was stored in the last ``minute_ttl_s`` (5 s) for recent minutes, and a
recompaction of a closed hour shows within ``hour_ttl_s`` (30 s) — plus, while one thread refreshes, the
duration of that read (others answer from what is kept). The numbers are otherwise exactly the reader's.

Memory: at most ``max_shapes`` question shapes (least recently used dropped), hours older than the longest
range (31 days) dropped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from panopticon.common.clock import parse_timestamp
from panopticon.common.indices import IndexNames
from panopticon.common.rollup import SCOPE_HOUR_MARKER, SCOPE_SERVICE, TIER_1H, TIER_1M, CellKey, RollupCell, cell_key
from panopticon.common.rollup_reader import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    RollupQuery,
    SearchSession,
    StoredWindows,
    WindowCells,
    add_cell,
    pieces_query,
    time_range,
)

Cells = dict[CellKey, RollupCell]
Marker = tuple[str, int]  # the marker's written_at and request_count: a new value means a recompaction
KEEP_MS = 32 * DAY_MS


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def _runs(hours: list[int]) -> list[tuple[int, int]]:
    """Sorted hours as contiguous ``[start, end)`` runs."""
    runs: list[tuple[int, int]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + HOUR_MS)
        else:
            runs.append((hour, hour + HOUR_MS))
    return runs


def _shared(query: RollupQuery) -> tuple[RollupQuery, Callable[[Cells], Cells]]:
    """The shape a question is kept under, and how to take its cells out of it. One service's totals
    (``.../metrics``) share the shape of all services (``/query/services``): one read of a window serves every
    service, where a shape per service would read once per service."""
    if query.scope != SCOPE_SERVICE or query.service is None:
        return query, _all
    service = query.service

    def only(cells: Cells) -> Cells:
        return {key: cell for key, cell in cells.items() if key[1] == service}

    return msgspec.structs.replace(query, service=None), only


def _all(cells: Cells) -> Cells:
    return cells


class _Shape:
    """What is kept for one question shape; ``lock`` makes one thread at a time read for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hours: dict[int, tuple[Marker, Cells]] = {}
        self.days: dict[int, tuple[tuple[Marker, ...], Cells]] = {}
        self.minutes: dict[int, tuple[float, dict[int, Cells]]] = {}  # hour -> (read at, minute -> cells)


class CachedWindows:
    """``WindowSource`` over ``StoredWindows`` that keeps what it read (see the module's docstring)."""

    def __init__(self, names: IndexNames, *, hour_ttl_s: float = 30.0, minute_ttl_s: float = 5.0,
                 recent_ms: int = 15 * 60_000, max_shapes: int = 128,
                 clock: Callable[[], float] = time.monotonic, now_ms: Callable[[], int] = wall_clock_ms,
                 page_size: int = 5_000) -> None:
        self._stored = StoredWindows(names, page_size)
        self._page_size = page_size
        self._hour_ttl_s = hour_ttl_s
        self._minute_ttl_s = minute_ttl_s
        self._recent_ms = recent_ms
        self._max_shapes = max_shapes
        self._clock = clock
        self._now_ms = now_ms
        self._lock = threading.Lock()  # guards the dicts below (never held during a search)
        self._markers: dict[int, tuple[float, Marker | None]] = {}  # hour -> (checked at, marker or None)
        self._marker_refresh = threading.Lock()
        self._shapes: OrderedDict[RollupQuery, _Shape] = OrderedDict()

    # ------------------------------------------------------------------ WindowSource

    def hours(self, session: SearchSession, query: RollupQuery, first: int, end: int,
              whole_days: bool) -> tuple[list[WindowCells], list[int]]:
        markers = self._marked(session, first, end)
        query, only = _shared(query)
        shape = self._shape(query)
        self._fill_hours(session, query, shape, markers)
        windows: list[WindowCells] = []
        hour = first
        with self._lock:
            while hour < end:
                if whole_days and hour % DAY_MS == 0 and hour + DAY_MS <= end:
                    day = self._day(shape, hour, markers)
                    if day is not None:
                        windows.append((hour, only(day)))
                        hour += DAY_MS
                        continue
                kept = shape.hours.get(hour)
                if hour in markers and kept is not None:
                    windows.append((hour, only(kept[1])))
                hour += HOUR_MS
        return windows, sorted(markers)

    def minutes(self, session: SearchSession, query: RollupQuery,
                pieces: list[tuple[int, int]]) -> Iterable[WindowCells]:
        query, only = _shared(query)
        shape = self._shape(query)
        touched = sorted({hour for start, end in pieces
                          for hour in range(start - start % HOUR_MS, end, HOUR_MS)})
        self._fill_minutes(session, query, shape, touched)
        windows: list[WindowCells] = []
        with self._lock:
            for hour in touched:
                kept = shape.minutes.get(hour)
                for minute, cells in (kept[1].items() if kept else ()):
                    if any(start <= minute < end for start, end in pieces):
                        windows.append((minute, only(cells)))
        return windows

    # ------------------------------------------------------------------ markers

    def _marked(self, session: SearchSession, first: int, end: int) -> dict[int, Marker]:
        """The markers of the hours in ``[first, end)``, re-read when older than ``hour_ttl_s``."""
        hours = range(first, end, HOUR_MS)
        now = self._clock()
        with self._lock:
            due = [h for h in hours if h not in self._markers or now - self._markers[h][0] >= self._hour_ttl_s]
            known = all(h in self._markers for h in hours)
        if due and self._marker_refresh.acquire(blocking=not known):  # known: another thread may refresh
            try:
                self._read_markers(session, due[0], due[-1] + HOUR_MS)
            finally:
                self._marker_refresh.release()
        with self._lock:
            return {h: marker for h in hours if (marker := self._markers.get(h, (0.0, None))[1]) is not None}

    def _read_markers(self, session: SearchSession, first: int, end: int) -> None:
        checked = self._clock()
        body = {"size": (end - first) // HOUR_MS + 1,
                "query": {"bool": {"filter": [{"term": {"scope": SCOPE_HOUR_MARKER}}, time_range(first, end)]}},
                "_source": ["@timestamp", "written_at", "request_count"], "sort": [{"@timestamp": "asc"}]}
        answer = session.search(self._stored.indices(TIER_1H, [(first, end)]), body)
        found: dict[int, Marker] = {}
        for hit in answer.get("hits", {}).get("hits", []):
            source = hit["_source"]
            hour = parse_timestamp(source["@timestamp"])
            if hour is not None:
                found[hour] = (str(source.get("written_at", "")), int(source.get("request_count", 0)))
        session.stats.documents += len(found)
        with self._lock:
            for hour in range(first, end, HOUR_MS):
                self._markers[hour] = (checked, found.get(hour))
            self._forget(self._markers, first)

    # ------------------------------------------------------------------ closed hours

    def _fill_hours(self, session: SearchSession, query: RollupQuery, shape: _Shape,
                    markers: dict[int, Marker]) -> None:
        """Read the 1-hour cells of the marked hours this shape lacks (or holds from before a recompaction)."""
        with shape.lock:
            with self._lock:
                missing = [h for h, marker in sorted(markers.items())
                           if h not in shape.hours or shape.hours[h][0] != marker]
            if not missing:
                return
            runs = _runs(missing)
            read: dict[int, Cells] = {hour: {} for hour in missing}
            for start, doc in session.scan(self._stored.indices(TIER_1H, runs), pieces_query(query, runs),
                                           self._page_size):
                if start in read:
                    add_cell(read[start], cell_key(doc), RollupCell.from_doc(doc))
            with self._lock:
                for hour, cells in read.items():
                    shape.hours[hour] = (markers[hour], cells)
                self._forget(shape.hours, missing[0])

    def _day(self, shape: _Shape, day: int, markers: dict[int, Marker]) -> Cells | None:
        """The merged cells of a UTC day whose 24 hours are all marked and kept (under ``self._lock``)."""
        hours = range(day, day + DAY_MS, HOUR_MS)
        if any(h not in markers or shape.hours.get(h, (None,))[0] != markers[h] for h in hours):
            return None
        version = tuple(markers[h] for h in hours)
        kept = shape.days.get(day)
        if kept is None or kept[0] != version:
            merged: Cells = {}
            for hour in hours:
                for key, cell in shape.hours[hour][1].items():
                    add_cell(merged, key, cell)
            kept = shape.days[day] = (version, merged)
            self._forget(shape.days, day)
        return kept[1]

    # ------------------------------------------------------------------ minutes

    def _fill_minutes(self, session: SearchSession, query: RollupQuery, shape: _Shape, hours: list[int]) -> None:
        now, wall = self._clock(), self._now_ms()
        with self._lock:
            due = [h for h in hours if h not in shape.minutes
                   or now - shape.minutes[h][0] >= self._minute_ttl(h, wall)]
            known = all(h in shape.minutes for h in hours)
        if not due or not shape.lock.acquire(blocking=not known):  # known: answer from what is kept
            return
        try:
            runs = _runs(due)
            read: dict[int, dict[int, Cells]] = {hour: {} for hour in due}
            for start, doc in session.scan(self._stored.indices(TIER_1M, runs), pieces_query(query, runs),
                                           self._page_size):
                hour = start - start % HOUR_MS
                if hour in read:
                    add_cell(read[hour].setdefault(start - start % MINUTE_MS, {}), cell_key(doc),
                             RollupCell.from_doc(doc))
            with self._lock:
                for hour, minutes in read.items():
                    shape.minutes[hour] = (now, dict(sorted(minutes.items())))
                self._forget(shape.minutes, due[0])
        finally:
            shape.lock.release()

    def _minute_ttl(self, hour: int, wall_ms: int) -> float:
        return self._minute_ttl_s if hour + HOUR_MS + self._recent_ms > wall_ms else self._hour_ttl_s

    # ------------------------------------------------------------------ housekeeping

    def _shape(self, query: RollupQuery) -> _Shape:
        with self._lock:
            shape = self._shapes.get(query)
            if shape is None:
                shape = self._shapes[query] = _Shape()
            self._shapes.move_to_end(query)
            while len(self._shapes) > self._max_shapes:
                self._shapes.popitem(last=False)
            return shape

    def _forget(self, kept: dict[int, Any], reading: int) -> None:
        """Drop entries older than a range of the last KEEP_MS reaches, but none the read in hand (from
        ``reading`` on) needs: an older range is answered, just not kept (under ``self._lock``)."""
        horizon = min(self._now_ms() - KEEP_MS, reading)
        for start in [s for s in kept if s < horizon]:
            del kept[start]

