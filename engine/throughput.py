"""Throughput lines (the original's STREAM_THROUGHPUT_* behaviour), one per topic, counting records stored.

``throughput topic=apm.spans total=1,200,000 elapsed=1m05s avg=18,461/s recent=21,003/s eta(5,000,000)=3m01s``
Pure: it is given the totals and the time, and returns the lines to log.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass
class _TopicState:
    last_total: int = 0
    last_ms: int | None = None


@dataclass
class ThroughputLog:
    batch_size: int
    min_interval_ms: int
    target: int | None
    started_ms: int
    _topics: dict[str, _TopicState] = field(default_factory=dict)

    def lines(self, totals: dict[str, int], now_ms: int) -> list[str]:
        if self.batch_size <= 0:
            return []
        out = []
        for topic, total in totals.items():
            state = self._topics.setdefault(topic, _TopicState(last_ms=self.started_ms))
            assert state.last_ms is not None
            if total - state.last_total < self.batch_size or now_ms - state.last_ms < self.min_interval_ms:
                continue
            out.append(self._line(topic, total, state, now_ms))
            state.last_total, state.last_ms = total, now_ms
        return out

    def _line(self, topic: str, total: int, state: _TopicState, now_ms: int) -> str:
        assert state.last_ms is not None
        elapsed_s = max(0.001, (now_ms - self.started_ms) / 1000)
        recent_s = max(0.001, (now_ms - state.last_ms) / 1000)
        avg = total / elapsed_s
        recent = (total - state.last_total) / recent_s
        line = (f"throughput topic={topic} total={total:,} elapsed={duration(elapsed_s)} "
                f"avg={avg:,.0f}/s recent={recent:,.0f}/s")
        if self.target:
            remaining = max(0, self.target - total)
            eta = remaining / recent if recent > 0 else float("inf")
            line += f" eta({self.target:,})=" + (duration(eta) if eta != float("inf") else "unknown")
        return line
