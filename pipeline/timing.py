"""Where a run's wall time went: start-up, cut, backends, store, plan, execute, reconstruct, report.

A user waits for the whole command, not for its inner loop, so a run's wall time is counted
from the process's start (:mod:`qubelet.proctime`) when the CLI runs it. The stages are recorded
as intervals of unix time: the summary carries their durations, the timeline draws them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: Every stage of a local run, in order, each once: "startup" is interpreter start-up and
#: imports, "cut" choosing the cuts and expanding the QPD, "backends" probing the backends
#: this machine has, "store" writing the subexperiments (and the exact reference), "plan" the
#: policy placing them.
STAGES = ("startup", "cut", "backends", "store", "plan", "execute", "reconstruct", "report")


@dataclass
class StageClock:
    """Start and end (unix time) of each stage of one run."""

    #: when the run began: the process start for a CLI run, the call for an in-process one
    origin: float = field(default_factory=time.time)
    intervals: list[tuple[str, float, float]] = field(default_factory=list)

    def add(self, name: str, start: float, end: float) -> None:
        """Record a stage that ran from ``start`` to ``end``."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}: one of {', '.join(STAGES)}")
        self.intervals.append((name, start, max(start, end)))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body as stage ``name`` (recorded even when it raises)."""
        start = time.time()
        try:
            yield
        finally:
            self.add(name, start, time.time())

    def seconds(self) -> dict[str, float]:
        """Seconds per stage, in :data:`STAGES` order (stages that did not run are left out)."""
        totals: dict[str, float] = {}
        for name, start, end in self.intervals:
            totals[name] = totals.get(name, 0.0) + (end - start)
        return {name: round(totals[name], 4) for name in STAGES if name in totals}

    def wall_seconds(self, now: float | None = None) -> float:
        """Seconds from the origin to ``now``."""
        return (time.time() if now is None else now) - self.origin

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """The ``timing`` block of summary.json."""
        return {
            "origin": self.origin,
            "wall_seconds": round(self.wall_seconds(now), 4),
            "stages": self.seconds(),
            "intervals": [[name, start, end] for name, start, end in self.intervals],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageClock:
        """Read back a ``timing`` block."""
        clock = cls(origin=float(data["origin"]))
        for name, start, end in data.get("intervals", []):
            clock.add(str(name), float(start), float(end))
        return clock


def format_breakdown(stages: dict[str, float], wall_seconds: float) -> str:
    """``startup 1.20 s, cut 0.61 s, …`` for the one line a run prints."""
    parts = [f"{name} {seconds:.2f} s" for name, seconds in stages.items()]
    return f"wall time {wall_seconds:.2f} s ({', '.join(parts)})"
