"""Figures: printed as a table and appended as JSON lines to benchmarks/results/latest.jsonl.

A figure is ``{"name", "value", "unit", "conditions": {...}}``. Benchmarks measure; targets are only
compared and printed as "met" / "not met", never asserted.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "latest.jsonl"


def py_loop_ns() -> float:
    """CPU nanoseconds per iteration of a plain Python loop: how fast a core is right now.

    About 25-35 ns on an idle recent x86 core with Python 3.11; a shared, loaded core reads higher, and
    every CPU-time figure of the same run is inflated by about the same factor.
    """
    best = float("inf")
    for _ in range(3):
        started = time.thread_time_ns()
        total = 0
        for i in range(300_000):
            total += i
        best = min(best, (time.thread_time_ns() - started) / 300_000)
    return round(best, 1)


def machine() -> dict[str, Any]:
    """Conditions every figure carries: the machine is shared, so its load is part of the result."""
    load1, load5, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "load1": round(load1, 2), "load5": round(load5, 2), "py_loop_ns": py_loop_ns(),
            "python": platform.python_version(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


@dataclass(frozen=True)
class Target:
    """``value`` compared with ``bound`` by ``op`` ('>=' or '<=')."""

    op: str
    bound: float

    def check(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def text(self, unit: str) -> str:
        return f"{self.op} {self.bound:,.6g} {unit}".rstrip()


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    conditions: dict[str, Any] = field(default_factory=dict)
    target: Target | None = None

    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "met" if self.target.check(self.value) else "NOT MET"


class Report:
    """Collects one benchmark's figures; ``publish`` prints the table and appends the JSON lines."""

    def __init__(self, benchmark: str, conditions: dict[str, Any] | None = None) -> None:
        self.benchmark = benchmark
        self.conditions = {**machine(), **(conditions or {})}
        self.figures: list[Figure] = []
        self.notes: list[str] = []

    def add(self, name: str, value: float, unit: str, target: Target | None = None, **conditions: Any) -> Figure:
        figure = Figure(f"{self.benchmark}.{name}", float(value), unit, {**self.conditions, **conditions}, target)
        self.figures.append(figure)
        return figure

    def note(self, text: str) -> None:
        self.notes.append(text)

    def publish(self, out: Callable[[str], None] = print) -> None:
        out("")
        out(f"== {self.benchmark} ==  (cpus={self.conditions['cpus']}, load1={self.conditions['load1']}, "
            f"load5={self.conditions['load5']}, py_loop_ns={self.conditions['py_loop_ns']})")
        width = max([len(f.name) for f in self.figures] + [10])
        out(f"{'figure':<{width}} {'value':>14} {'unit':<14} {'target':<22} verdict")
        for f in self.figures:
            target = f.target.text(f.unit) if f.target else ""
            out(f"{f.name:<{width}} {fmt(f.value):>14} {f.unit:<14} {target:<22} {f.verdict()}")
        for text in self.notes:
            out(f"  note: {text}")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as sink:
            for f in self.figures:
                value = round(f.value, 4) if math.isfinite(f.value) else None  # not measured / unbounded
                line: dict[str, Any] = {"name": f.name, "value": value, "unit": f.unit, "conditions": f.conditions}
                if f.target is not None:
                    line["target"] = f.target.text(f.unit)
                    line["verdict"] = f.verdict()
                sink.write(json.dumps(line) + "\n")


def fmt(value: float) -> str:
    if not math.isfinite(value):  # NaN: not measured; inf: above the last histogram bucket
        return "n/a" if value != value else "> last bucket"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"
