"""What a run shows a person: the results table and the per-backend timeline (Gantt chart)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def results_table(summary: dict[str, Any]) -> str:
    """Observable, reconstructed value ± stderr, exact value, error and error in standard errors."""
    header = ("observable", "reconstructed", "stderr", "exact", "error", "|error|/stderr")
    rows = []
    for obs in summary["observables"]:
        sigma = abs(obs["error"]) / obs["stderr"] if obs["error"] is not None and obs["stderr"] > 0 else None
        rows.append(
            (
                obs["name"],
                _fmt(obs["value"]),
                f"{obs['stderr']:.4f}",
                _fmt(obs["exact"]),
                _fmt(obs["error"]),
                "—" if sigma is None else f"{sigma:.2f}",
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(lines)


def backends_table(summary: dict[str, Any]) -> str:
    lines = ["backend  tasks  seconds"]
    for kind, usage in summary["backends"].items():
        lines.append(f"{kind:<8} {usage['tasks']:>5}  {usage['seconds']:.3f}")
    for kind, reason in summary.get("unavailable_backends", {}).items():
        lines.append(f"{kind:<8}     -  unavailable: {reason}")
    return "\n".join(lines)


def plot_timeline(events: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """A Gantt chart: one row per backend, one bar per batch attempt (failed ones hatched red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"cpu": "#4C72B0", "gpu": "#55A868", "qpu": "#8172B2"}
    backends = sorted({e["backend"] for e in events}) or ["(none)"]
    t0 = min((e["start"] for e in events), default=0.0)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.6 * len(backends)))
    for row, backend in enumerate(backends):
        for event in (e for e in events if e["backend"] == backend):
            width = max(event["end"] - event["start"], 1e-3)
            ax.barh(
                row,
                width,
                left=event["start"] - t0,
                height=0.6,
                color=colours.get(event["kind"], "#999999") if event["success"] else "#DD4444",
                edgecolor="black",
                linewidth=0.4,
                hatch=None if event["success"] else "//",
            )
    ax.set_yticks(range(len(backends)), backends)
    ax.set_xlabel("seconds since start")
    ax.set_title(title or "subexperiment batches per backend")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "timeline.json"
    return json.loads(path.read_text()) if path.exists() else []
