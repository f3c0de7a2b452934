"""In-stream RED rollups, exact under crashes, rebalances, outages and late data.

Per source partition of the span topic, SERVER spans are added to *window instances*: a 1-minute window
plus the offset of its first record (``segment``). A window's document is rewritten whole (external
version = its record count, so an older write never overwrites a newer one), and its id is
(minute, key, partition, first offset). Readers sum every instance.

Why this is exact. Which window a record joins depends only on the record and the partition's
*watermark* (the largest event time seen, capped at the record's Kafka timestamp + 1 min):
- a record whose minute is still open (minute + 60 s + grace > watermark) joins that minute's on-time window;
- otherwise it is late: it joins the late window of its minute opened at the current watermark minute,
  or starts a new one. A window accepts nothing more once the watermark moves past it ("sealed").
The committed offset never passes the first record of a window whose final write is not yet stored
(a *hold*), and the commit carries the watermark as of that offset in its metadata. A restarted or new
owner restores the watermark and replays from the commit: it rebuilds the very same windows with the
same ids, so rewriting them is idempotent. Windows are closed on revoke and on shutdown, their final
writes stored before the commit; later records then start new instances.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from panopticon.common.indices import METRICS_1M, IndexNames
from panopticon.common.rollup import (
    SCOPE_EDGE,
    SCOPE_ENDPOINT,
    SCOPE_SERVICE,
    TIER_1M,
    CellKey,
    RollupCell,
    RollupKey,
)
from panopticon.common.schema import LabelValue, SpanDoc

MINUTE_MS = 60_000
FUTURE_CAP_MS = 60_000  # an event time counts for the watermark at most this far past its Kafka timestamp
CALLERS, CALLEES = frozenset({"CLIENT", "PRODUCER"}), frozenset({"SERVER", "CONSUMER"})
USER = "user"  # the virtual caller of a root SERVER or CONSUMER span


class Half:
    """One side of a call, waiting for the other (a CLIENT for its SERVER child, or the reverse). Per span: a plain
    class, so its ``__init__`` compiles too."""

    __slots__ = ("offset", "watermark", "deadline", "event_ms", "service", "environment", "duration_ms", "error",
                 "peer")

    def __init__(self, offset: int, watermark: int, deadline: int, event_ms: int, service: str, environment: str,
                 duration_ms: float, error: bool, peer: str) -> None:
        self.offset = offset
        self.watermark = watermark  # the partition's watermark before its record
        self.deadline = deadline  # it gives up once the watermark reaches this (SERVICE_MAP_WAIT_MS on)
        self.event_ms = event_ms
        self.service = service
        self.environment = environment
        self.duration_ms = duration_ms
        self.error = error
        self.peer = peer  # the callee a client's labels name, should no span answer it (not the labels: memory)


@dataclass(slots=True)
class CallTally:
    """This process's service-map troubles, over every partition it owned."""

    unpaired: int = 0  # clients that waited out SERVICE_MAP_WAIT_MS with no callee named
    evicted: int = 0  # halves let go early: more than SERVICE_MAP_WAITING_MAX waited


def peer_of(labels: Mapping[str, LabelValue]) -> str:
    """The callee a CLIENT (or PRODUCER) span's labels name when no instrumented span answers it:
    ``peer.service``, else the database (``db.system``/``db.name``), else the queue
    (``messaging.system``/``messaging.destination.name``), else the host (``server.address``, ``net.peer.name``,
    ``http.host``)."""
    if not labels:
        return ""
    peer = labels.get("peer.service")
    if peer:
        return str(peer)
    system = labels.get("db.system")
    if system:
        name = labels.get("db.name")
        return f"{system}/{name}" if name else str(system)
    system = labels.get("messaging.system")
    if system:
        name = labels.get("messaging.destination.name")
        return f"{system}/{name}" if name else str(system)
    for key in ("server.address", "net.peer.name", "http.host"):
        host = labels.get(key)
        if host:
            return str(host)
    return ""


@dataclass(eq=False)
class Window:
    minute_ms: int
    first_offset: int
    watermark_at_open: int  # the partition's watermark before its first record: the commit metadata
    open_wm_minute: int  # late windows accept records only while the watermark stays in this minute
    late: bool
    cells: dict[CellKey, RollupCell] = field(default_factory=dict)
    count: int = 0
    last_offset: int = -1
    written: int | None = 0  # count at the last write; None: write it again (its last write found no room)
    release_seq: int = 0  # the batch that carries its final write; 0 while it may still change
    stored: bool = False  # its final write is stored
    hold_offset: int = -1  # the earliest record it depends on (a call's other half may precede first_offset)
    hold_watermark: int = 0  # the watermark before that record

    def __post_init__(self) -> None:
        self.hold_offset, self.hold_watermark = self.first_offset, self.watermark_at_open

    def add_call(self, caller: str, environment: str, callee: str, duration_ms: float, is_error: bool,
                 first_offset: int, first_watermark: int) -> None:
        """A call whose earliest half is the record at ``first_offset`` (the watermark before it given)."""
        key = (SCOPE_EDGE, caller, environment, callee)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = RollupCell()
        cell.add(duration_ms, is_error)
        self.count += 1
        if first_offset < self.hold_offset:
            self.hold_offset, self.hold_watermark = first_offset, first_watermark

    def add(self, service: str, environment: str, endpoint: str, duration_ms: float, is_error: bool) -> None:
        cells = self.cells
        for key in ((SCOPE_ENDPOINT, service, environment, endpoint), (SCOPE_SERVICE, service, environment, "")):
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = RollupCell()
            cell.add(duration_ms, is_error)
        self.count += 1


@dataclass(eq=False)
class PartitionRollups:
    name: str  # "apm.spans:3"
    grace_ms: int
    call_wait_ms: int = 60_000
    waiting_max: int = 100_000
    calls: bool = True  # build the service map's edges
    watermark: int = 0
    on_time: dict[int, Window] = field(default_factory=dict)
    late: dict[int, Window] = field(default_factory=dict)
    closing: list[Window] = field(default_factory=list)
    clients: OrderedDict[str, Half] = field(default_factory=OrderedDict)  # by span_id, in offset order
    servers: OrderedDict[str, Half] = field(default_factory=OrderedDict)  # by parent_span_id, in offset order
    tally: CallTally = field(default_factory=CallTally)
    due: int = 2**63  # the watermark at which the oldest waiting half gives up

    def horizon(self) -> int:
        """Minutes at or before this are closed for on-time records."""
        return self.watermark - self.grace_ms - MINUTE_MS

    def add(self, offset: int, doc: SpanDoc, event_ms: int, kafka_ms: int) -> None:
        if self.watermark >= self.due:
            self._expire(offset)
        kind = doc.kind
        if kind == "SERVER":
            window = self._window(offset, event_ms)
            window.add(doc.service_name, doc.environment, doc.name, doc.duration_ms, doc.status == "ERROR")
            window.last_offset = offset
        capped = min(event_ms, kafka_ms + FUTURE_CAP_MS) if kafka_ms > 0 else event_ms
        watermark = max(self.watermark, capped)  # the partition's watermark after this record
        if self.calls and (kind in CALLEES or kind in CALLERS):
            self._pair(offset, doc, event_ms, watermark + self.call_wait_ms)
        self.watermark = watermark

    def _pair(self, offset: int, doc: SpanDoc, event_ms: int, deadline: int) -> None:
        """A call's half: counted with its other half if that came first, else left waiting for it."""
        watermark = self.watermark
        if doc.kind in CALLEES:
            parent = doc.parent_span_id
            client = self.clients.pop(parent, None) if parent else None
            if client is not None:
                self._call(offset, client.service, client.environment, doc.service_name, client.event_ms,
                           client.duration_ms, client.error or doc.status == "ERROR", client.offset,
                           client.watermark)
            elif not parent:
                self._call(offset, USER, doc.environment, doc.service_name, event_ms, doc.duration_ms,
                           doc.status == "ERROR", offset, watermark)
            else:
                self._wait(self.servers, parent, Half(offset, watermark, deadline, event_ms, doc.service_name,
                                                      doc.environment, doc.duration_ms, doc.status == "ERROR", ""),
                           offset)
            return
        labels = doc.labels
        if labels and "db.system" in labels:  # databases are not instrumented: no span will answer
            self._call(offset, doc.service_name, doc.environment, peer_of(labels), event_ms, doc.duration_ms,
                       doc.status == "ERROR", offset, watermark)
            return
        server = self.servers.pop(doc.span_id, None)
        if server is None:
            self._wait(self.clients, doc.span_id, Half(offset, watermark, deadline, event_ms, doc.service_name,
                                                       doc.environment, doc.duration_ms, doc.status == "ERROR",
                                                       peer_of(labels)), offset)
        else:
            self._call(offset, doc.service_name, doc.environment, server.service, event_ms, doc.duration_ms,
                       doc.status == "ERROR" or server.error, server.offset, server.watermark)

    def _call(self, offset: int, caller: str, environment: str, callee: str, event_ms: int, duration_ms: float,
              error: bool, first_offset: int, first_watermark: int) -> None:
        """One call, counted in the client's minute with the client's duration (the server's when the caller is
        the virtual ``user``); an error on either side makes it an error. Its earliest half is ``first_offset``."""
        window = self._window(offset, event_ms)
        window.add_call(caller, environment, callee, duration_ms, error, first_offset, first_watermark)
        window.last_offset = offset

    def _wait(self, store: OrderedDict[str, Half], key: str, half: Half, offset: int) -> None:
        store[key] = half
        if half.deadline < self.due:
            self.due = half.deadline
        if len(store) > self.waiting_max:
            self.tally.evicted += 1
            self._give_up(store, store.popitem(last=False)[1], offset)

    def _expire(self, offset: int) -> None:
        """Halves whose other half did not come while the watermark moved SERVICE_MAP_WAIT_MS on: late spans wait
        as long as timely ones. Judged by the watermark before this record, so a replay gives up at the same
        record; deadlines grow in arrival order, so only the oldest halves need a look (and only once the
        oldest is ``due``)."""
        watermark = self.watermark
        due = 2**63
        for store in (self.clients, self.servers):
            while store:
                half = next(iter(store.values()))
                if half.deadline > watermark:
                    due = min(due, half.deadline)
                    break
                store.popitem(last=False)
                self._give_up(store, half, offset)
        self.due = due

    def _give_up(self, store: OrderedDict[str, Half], half: Half, offset: int) -> None:
        """A client without its server is a call to the node its labels name, or unpaired (callee ""); a server
        without its client (its parent was not a CLIENT span, or came too late) is no call."""
        if store is self.clients:
            peer = half.peer
            if not peer:
                self.tally.unpaired += 1
            self._call(offset, half.service, half.environment, peer, half.event_ms, half.duration_ms, half.error,
                       half.offset, half.watermark)

    def _window(self, offset: int, event_ms: int) -> Window:
        minute = event_ms - event_ms % MINUTE_MS
        wm_minute = self.watermark // MINUTE_MS
        if minute > self.horizon():
            window = self.on_time.get(minute)
            if window is None:
                window = self.on_time[minute] = Window(minute, offset, self.watermark, wm_minute, False)
            return window
        window = self.late.get(minute)
        if window is None or window.open_wm_minute != wm_minute:
            if window is not None:
                self.closing.append(window)
            window = self.late[minute] = Window(minute, offset, self.watermark, wm_minute, True)
        return window

    def seal(self, everything: bool = False) -> None:
        """Move windows that can accept no more records to ``closing``."""
        horizon, wm_minute = self.horizon(), self.watermark // MINUTE_MS
        for minute in [m for m in self.on_time if everything or m <= horizon]:
            self.closing.append(self.on_time.pop(minute))
        for minute in [m for m, w in self.late.items() if everything or w.open_wm_minute != wm_minute]:
            self.closing.append(self.late.pop(minute))

    def windows(self) -> list[Window]:
        return [*self.on_time.values(), *self.late.values(), *self.closing]

    def position(self, safe: int, safe_watermark: int) -> tuple[int, int]:
        """The offset the commit may take (at most ``safe``) and the watermark as of that offset.

        No window may straddle the commit: one that is open, or whose final write is not stored, must
        lie wholly after it; a stored one wholly before or wholly after it. Then a replay from the commit
        rebuilds exactly the windows that lie after it.
        A half of a call still waiting holds the commit at its record, and a window holds it at the earliest
        record of its calls (``hold_offset``): a replay must see both halves of every call it counts.
        """
        position, watermark = safe, safe_watermark
        windows = self.windows()
        moved = True
        while moved:
            moved = False
            for store in (self.clients, self.servers):
                if store:
                    half = next(iter(store.values()))  # the earliest: halves wait in offset order
                    if half.offset < position:
                        position, watermark, moved = half.offset, half.watermark, True
            for w in windows:
                if w.hold_offset < position and (not w.stored or position <= w.last_offset):
                    position, watermark, moved = w.hold_offset, w.hold_watermark, True
        self.closing = [w for w in self.closing if not (w.stored and w.last_offset < position)]
        return position, watermark

    def release(self, done_seq: int) -> None:
        for window in self.closing:
            if window.release_seq and window.release_seq <= done_seq:
                window.stored = True


@dataclass
class RollupWrite:
    """One rollup document to put in a bulk batch; ``final`` when its window accepts nothing more."""

    window: Window
    final: bool
    index: str
    action: bytes
    doc: bytes

    @property
    def line(self) -> bytes:
        return self.action + self.doc + b"\n"


class RollupStage:
    """All partitions of the span topic that this worker owns."""

    def __init__(self, names: IndexNames, grace_ms: int, encode: Callable[[object], bytes],
                 call_wait_ms: int = 60_000, waiting_max: int = 100_000, calls: bool = True) -> None:
        self.names = names
        self.grace_ms = grace_ms
        self.call_wait_ms = call_wait_ms
        self.waiting_max = waiting_max
        self.calls = calls
        self.tally = CallTally()
        self.partitions: dict[tuple[str, int], PartitionRollups] = {}
        self._encode = encode

    def assign(self, topic: str, partition: int, metadata: str | None) -> None:
        state = self._new(f"{topic}:{partition}")
        state.watermark = parse_metadata(metadata)
        self.partitions[(topic, partition)] = state

    def _new(self, name: str) -> PartitionRollups:
        return PartitionRollups(name, self.grace_ms, self.call_wait_ms, self.waiting_max, self.calls,
                                tally=self.tally)

    def forget(self, tp: tuple[str, int]) -> None:
        self.partitions.pop(tp, None)

    def waiting(self) -> int:
        """Halves of calls waiting for their other half, in every partition."""
        return sum(len(p.clients) + len(p.servers) for p in self.partitions.values())

    def get(self, tp: tuple[str, int]) -> PartitionRollups:
        state = self.partitions.get(tp)
        if state is None:
            state = self.partitions[tp] = self._new(f"{tp[0]}:{tp[1]}")
        return state

    def position(self, tp: tuple[str, int], safe: int, safe_watermark: int | None) -> tuple[int, str | None]:
        """Where the commit of a partition may go, with its metadata (see PartitionRollups.position)."""
        state = self.partitions.get(tp)
        if state is None:
            return safe, None if safe_watermark is None else format_metadata(safe_watermark)
        position, watermark = state.position(safe, state.watermark if safe_watermark is None else safe_watermark)
        return position, format_metadata(watermark)

    def writes(self, now_ms: int, final_for: set[tuple[str, int]] | None = None) -> list[RollupWrite]:
        """Documents to write now: every changed window; sealed ones (and all of ``final_for``) for the last time."""
        out = []
        for tp, state in self.partitions.items():
            state.seal(everything=final_for is not None and tp in final_for)
            closing = set(map(id, state.closing))
            for window in state.windows():
                final = id(window) in closing
                if window.release_seq or (window.count == window.written and not final):
                    continue
                out.extend(self._documents(state, window, final, now_ms))
        return out

    def release(self, done_seq: int) -> None:
        for state in self.partitions.values():
            state.release(done_seq)

    def _documents(self, state: PartitionRollups, window: Window, final: bool, now_ms: int) -> list[RollupWrite]:
        index = self.names.daily(METRICS_1M, window.minute_ms)
        out = []
        for (scope, service, environment, endpoint), cell in window.cells.items():
            key = RollupKey(TIER_1M, window.minute_ms, service, environment, scope, endpoint, state.name,
                            str(window.first_offset))
            doc_id = key.doc_id()
            action = (b'{"index":{"_index":"%s","_id":"%s","version":%d,"version_type":"external"}}\n'
                      % (index.encode(), doc_id.encode(), window.count))
            out.append(RollupWrite(window, final, index, action, self._encode(cell.to_doc(key, now_ms))))
        window.written = window.count
        return out


def format_metadata(watermark: int) -> str:
    return f"wm={watermark}"


def parse_metadata(metadata: str | None) -> int:
    if not metadata:
        return 0
    for part in metadata.split(";"):
        name, _, value = part.partition("=")
        if name.strip() == "wm" and value.strip().lstrip("-").isdigit():
            return int(value)
    return 0
