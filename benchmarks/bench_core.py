"""Per-core cost of decode + normalize + NDJSON encode: the engine's code, compiled and as Python, against the
naive way.

The pipelines run on the same loadgen record values, in alternating rounds, timed with the thread's CPU clock
(the machine is shared: wall time would measure the neighbours). The engine side is
``engine.decode.EventDecoder.decode`` appending each entry's action and document lines to a reused buffer (what
``Batch.append`` does into a shared-memory block): once in this process, with the build that is installed (the
hot modules compiled by mypyc, ``setup.py``), and once in a child process started with PANOPTICON_PURE_PYTHON=1
(the same modules run from their sources), on the same records. The naive side is ``benchmarks.naive``:
``json.loads``, dicts, the same rules, ``json.dumps`` of action and document. A last pass, the msgspec floor,
only decodes and re-encodes each event: no rule, no id, no index. It is the ceiling of any pipeline built on
msgspec in CPython, so it says how far a per-core target can be met.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from benchmarks.naive import NaiveRefiner
from benchmarks.report import Report, Target
from panopticon import _compiled
from panopticon.common.indices import IndexNames
from panopticon.common.wire import StoredLog, StoredSpan
from panopticon.devtools.traffic import generate
from panopticon.engine.decode import EventDecoder

LOG_TOPIC, SPAN_TOPIC = "apm.logs", "apm.spans"
FLUSH_AT = 8 * 1024 * 1024  # a bulk block's worth: the buffer is emptied as a sealed batch would be

Records = list[tuple[str, int, bytes]]  # (topic, offset, value)


def records(count: int, seed: int, base: int) -> tuple[Records, int]:
    out: Records = []
    events = 0
    for i, r in enumerate(generate(seed=seed, count=count, base_time_ms=base)):
        out.append((SPAN_TOPIC if r.kind == "span" else LOG_TOPIC, i, r.value))
        events += r.n_events
    return out, events


def engine_pass(batch: Records) -> int:
    decoder = EventDecoder(IndexNames(""), LOG_TOPIC, SPAN_TOPIC, 1_048_576)
    decode = decoder.decode
    buf = bytearray()
    now = int(time.time() * 1000)
    n = 0
    for topic, offset, value in batch:
        for entry in decode(topic, 0, offset, value, now, now).entries:
            buf += entry.line
            n += 1
        if len(buf) > FLUSH_AT:
            buf.clear()
    return n


def floor_pass(batch: Records) -> int:
    """msgspec alone: decode each record (typed, as the engine does, else generic), encode each event back
    behind a constant action line. No normalization, no ids: what any msgspec-based pipeline spends at least."""
    typed = {LOG_TOPIC: msgspec.json.Decoder(StoredLog | list[StoredLog]).decode,
             SPAN_TOPIC: msgspec.json.Decoder(StoredSpan | list[StoredSpan]).decode}
    generic = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
    action = b'{"create":{"_index":"i","_id":"0"}}\n'
    buf = bytearray()
    n = 0
    for topic, _offset, value in batch:
        try:
            decoded: Any = typed[topic](value)
        except msgspec.ValidationError:
            decoded = generic(value)
        for event in decoded if isinstance(decoded, list) else (decoded,):
            buf += action
            buf += encode(event)
            buf += b"\n"
            n += 1
        if len(buf) > FLUSH_AT:
            buf.clear()
    return n


def naive_pass(batch: Records) -> int:
    refiner = NaiveRefiner(LOG_TOPIC, SPAN_TOPIC)
    now = int(time.time() * 1000)
    out: list[str] = []
    size = n = 0
    for topic, offset, value in batch:
        for action, doc in refiner.entries(topic, 0, offset, value, now):
            a, d = json_dumps(action), json_dumps(doc)
            out.append(a)
            out.append(d)
            size += len(a) + len(d) + 2
            n += 1
        if size > FLUSH_AT:
            "\n".join(out).encode()
            out.clear()
            size = 0
    return n


def json_dumps(value: object) -> str:
    import json

    return json.dumps(value)


def timed(run: Callable[[Records], int], batch: Records) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    n = run(batch)
    return n, time.thread_time() - cpu, time.perf_counter() - wall


class PureEngine:
    """The engine pass in a child process that runs the hot modules from their sources, on the same records."""

    def __init__(self, count: int, base: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_core", "--serve", "--records", str(count), "--base", str(base)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, _compiled.PURE_ENV: "1"})
        self.build = self._read()["build"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the pure-Python child exited ({self.proc.wait()})")
        return dict(json.loads(line))

    def timed(self) -> tuple[int, float, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("pass\n")
        self.proc.stdin.flush()
        out = self._read()
        return out["n"], out["cpu"], out["wall"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def serve(count: int, base: int) -> int:
    """The child's side: one engine pass per line read, its figures written back as a JSON line."""
    batch, _ = records(count, seed=7, base=base)
    print(json.dumps({"build": _compiled.build()}), flush=True)
    for _line in sys.stdin:
        n, cpu, wall = timed(engine_pass, batch)
        print(json.dumps({"n": n, "cpu": cpu, "wall": wall}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_core", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="30k records, 3 rounds")
    parser.add_argument("--records", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the pure-Python child
    parser.add_argument("--base", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    count = args.records or (30_000 if args.quick else 100_000)
    base = args.base or int(time.time() * 1000) - 3_600_000
    if args.serve:
        return serve(count, base)
    rounds = args.rounds or (3 if args.quick else 4)
    batch, events = records(count, seed=7, base=base)
    build = _compiled.build()
    pure = PureEngine(count, base)
    print(f"core: {count:,} loadgen records ({events:,} events, {sum(len(v) for *_, v in batch) / count:.0f} B "
          f"average), {rounds} alternating rounds per pipeline; this process: {build}; child: {pure.build}")
    rates: dict[str, list[float]] = {"engine": [], "pure": [], "naive": [], "floor": []}
    engine_wall: list[float] = []
    try:
        for _ in range(rounds):
            n, cpu, wall = timed(engine_pass, batch)
            rates["engine"].append(n / cpu)
            engine_wall.append(n / wall)
            n, cpu, _wall = pure.timed()
            rates["pure"].append(n / cpu)
            n, cpu, _wall = timed(naive_pass, batch)
            rates["naive"].append(n / cpu)
            n, cpu, _wall = timed(floor_pass, batch)
            rates["floor"].append(n / cpu)
    finally:
        pure.close()
    engine, pure_rate, naive, floor = (statistics.median(rates[k]) for k in ("engine", "pure", "naive", "floor"))
    report = Report("core", {"records": count, "events": events, "rounds": rounds, "clock": "thread CPU time",
                             "build": build, "child_build": pure.build})
    report.add("engine_events_per_cpu_s", engine, "events/s", Target(">=", 150_000))
    report.add("pure_events_per_cpu_s", pure_rate, "events/s")
    report.add("naive_events_per_cpu_s", naive, "events/s")
    report.add("engine_vs_naive", engine / naive, "x", Target(">=", 10))
    report.add("pure_vs_naive", pure_rate / naive, "x")
    report.add("engine_vs_pure", engine / pure_rate, "x")
    report.add("engine_events_per_wall_s", statistics.median(engine_wall), "events/s")
    report.add("msgspec_floor_events_per_cpu_s", floor, "events/s")
    report.add("engine_share_of_floor", engine / floor, "x")
    report.add("engine_us_per_event", 1e6 / engine, "us")
    report.add("pure_us_per_event", 1e6 / pure_rate, "us")
    report.add("naive_us_per_event", 1e6 / naive, "us")
    for name, title in (("engine", f"engine ({build})"), ("pure", f"engine ({pure.build})"), ("naive", "naive"),
                        ("floor", "msgspec floor")):
        report.note(f"{title} rounds (events per CPU-s): {', '.join(f'{r:,.0f}' for r in rates[name])}")
    report.note("msgspec floor: decode + encode only, no normalization - the most any msgspec pipeline reaches")
    report.publish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
