"""What a run shows a person: the results table and the per-backend timeline (Gantt chart)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.mitigation.systematic import combined
from pipeline.timing import StageClock


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def results_table(summary: dict[str, Any]) -> str:
    """Observable, reconstructed value ± stderr, exact value, error and error in uncertainties.

    When QPU results were mitigated, the raw (unmitigated) value and error stand beside the
    mitigated ones, so the effect of mitigation is read off one table. When values were
    extrapolated to zero noise, a ``systematic`` column gives the extrapolation's model spread
    (:mod:`pipeline.mitigation.systematic`) and errors are measured in the combined uncertainty
    ``sqrt(stderr² + systematic²)``: the standard error alone does not cover a model's bias.
    """
    observables = summary["observables"]
    mitigated = any("raw" in obs for obs in observables)
    extrapolated = any(obs.get("systematic") for obs in observables)
    header: tuple[str, ...] = ("observable", "reconstructed", "stderr")
    if extrapolated:
        header = (*header, "systematic")
    header = (*header, "exact", "error", "|error|/uncertainty" if extrapolated else "|error|/stderr")
    if mitigated:
        header = (*header, "raw", "raw error", "raw |error|/stderr")
    rows = []
    for obs in observables:
        systematic = float(obs.get("systematic") or 0.0)
        row = [obs["name"], _fmt(obs["value"]), f"{obs['stderr']:.4f}"]
        if extrapolated:
            row.append(f"{systematic:.4f}")
        row += [
            _fmt(obs["exact"]),
            _fmt(obs["error"]),
            _sigmas(obs["error"], combined(obs["stderr"], systematic)),
        ]
        if mitigated:
            raw = obs.get("raw") or {"value": obs["value"], "error": obs["error"], "stderr": obs["stderr"]}
            row += [_fmt(raw["value"]), _fmt(raw["error"]), _sigmas(raw["error"], raw["stderr"])]
        rows.append(tuple(row))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(lines)


def _sigmas(error: float | None, uncertainty: float) -> str:
    return "—" if error is None or uncertainty <= 0 else f"{abs(error) / uncertainty:.2f}"


def mitigation_line(summary: dict[str, Any]) -> str | None:
    """One line per mitigated backend: level and the extra circuits and shots it cost.

    Readout mitigation leaves the gate noise in, and its standard errors do not cover it (only
    ZNE's systematic term estimates it): the line says so, because without an exact value in
    the table nothing else would.
    """
    usage = summary.get("mitigation", {}).get("backends", {})
    parts = [
        f"{name}: {u['level']} (+{u['extra_circuits']} circuits, +{u['extra_shots']} shots)"
        for name, u in usage.items()
        if u["level"] != "none"
    ]
    if not parts:
        return None
    caveat = (
        "; gate noise is not in the readout-mitigated error bars (--mitigation zne estimates it)"
        if any(u["level"] == "readout" for u in usage.values())
        else ""
    )
    return "mitigation: " + "; ".join(parts) + caveat


def backends_table(summary: dict[str, Any]) -> str:
    """The per-backend table of a summary: tasks and seconds, and why a backend was unavailable."""
    lines = ["backend  tasks  seconds"]
    for kind, usage in summary["backends"].items():
        lines.append(f"{kind:<8} {usage['tasks']:>5}  {usage['seconds']:.3f}")
    for kind, reason in summary.get("unavailable_backends", {}).items():
        loud = "WARNING " if configured_but_failing(reason) else ""
        lines.append(f"{kind:<8}     -  {loud}unavailable: {reason}")
    return "\n".join(lines)


def configured_but_failing(reason: str) -> bool:
    """Whether an unavailable backend was set up to run and failed, not merely absent here.

    A real QPU's server refused the token or did not answer (loud); no GPU on a laptop (quiet).
    """
    return reason.startswith("IQM server ")


def backend_warnings(summary: dict[str, Any]) -> list[str]:
    """A line for stderr per configured backend that failed, so a fallback is never silent."""
    return [
        f"QPU {kind} unavailable, the run used the other backends: {reason}"
        for kind, reason in summary.get("unavailable_backends", {}).items()
        if configured_but_failing(reason)
    ]


#: Colours of the stage lane (execute takes its backends' colours below it).
STAGE_COLOURS = {
    "startup": "#9A9A9A",
    "cut": "#DD8452",
    "backends": "#DA8BC3",
    "store": "#CCB974",
    "plan": "#937860",
    "execute": "#4C72B0",
    "reconstruct": "#C44E52",
    "report": "#6B6B6B",
}
BACKEND_COLOURS = {"cpu": "#4C72B0", "gpu": "#55A868", "qpu": "#8172B2"}
FAILED_COLOUR = "#DD4444"
#: A backend's one-off build (the fake QPU's import and construction) before its first batch:
#: the ``batch`` of its timeline event, and its colour.
BUILD_EVENT = "build"
BUILD_COLOUR = "#B9B9D6"

# Geometry of the chart, in pixels.
_WIDTH = 1200
_LEFT, _RIGHT, _TOP, _BOTTOM = 120, 24, 48, 72
_LANE, _BAR = 38, 26


def _kind_of(backend: str) -> str:
    return backend.split(":", 1)[0]


def _tick_step(span: float, target_ticks: int = 8) -> float:
    """A 1-2-5 step giving about ``target_ticks`` ticks over ``span`` seconds."""
    raw = max(span, 1e-6) / target_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def plot_timeline(
    events: Sequence[dict[str, Any]],
    path: Path,
    title: str = "",
    timing: StageClock | None = None,
    backends: Sequence[str] = (),
) -> Path:
    """A Gantt chart (PNG) of where the run's time went.

    The top lane shows every stage (start-up, cut, backends, store, plan, execute, reconstruct,
    report) with its seconds; below it one lane per backend, one labelled bar per batch attempt
    (failed ones red and hatched) and a backend's one-off build; a legend names the colours. A
    backend the run had but gave no work is an empty lane marked idle, so "why
    is the QPU not used" is visible too. Drawn with Pillow: matplotlib's import alone took longer
    than a small run's execution.
    """
    from PIL import Image, ImageDraw, ImageFont

    lanes = sorted({*backends, *(e["backend"] for e in events)})
    stages = timing.intervals if timing is not None else []
    t0 = timing.origin if timing is not None else min((e["start"] for e in events), default=0.0)
    t_end = max([end for _, _, end in stages] + [e["end"] for e in events] + [t0 + 1e-3])
    span = (t_end - t0) * 1.01
    labels = (["stages"] if stages else []) + lanes or ["(none)"]
    height = _TOP + _BOTTOM + _LANE * len(labels)
    image = Image.new("RGB", (_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=10)
    plot_width = _WIDTH - _LEFT - _RIGHT

    def x_of(t: float) -> float:
        return _LEFT + (t - t0) / span * plot_width

    # Grid and time axis.
    step = _tick_step(span)
    axis_y = _TOP + _LANE * len(labels)
    tick = 0.0
    while tick <= span:
        x = x_of(t0 + tick)
        draw.line([(x, _TOP), (x, axis_y)], fill="#E4E4E4")
        draw.text((x, axis_y + 4), f"{tick:g}", font=small, fill="black", anchor="mt")
        tick += step
    draw.line([(_LEFT, axis_y), (_WIDTH - _RIGHT, axis_y)], fill="black")
    draw.line([(_LEFT, _TOP), (_LEFT, axis_y)], fill="black")
    axis_label = "seconds since the process started" if timing is not None else "seconds since start"
    draw.text((_LEFT + plot_width / 2, axis_y + 30), axis_label, font=font, fill="black", anchor="mt")
    # Legend: what each colour is (stages present, then the lanes' kinds, build and failures).
    entries = [(name, STAGE_COLOURS[name]) for name in STAGE_COLOURS if any(s[0] == name for s in stages)]
    kinds = sorted({e.get("kind", _kind_of(e["backend"])) for e in events} | {_kind_of(b) for b in lanes})
    entries += [(f"{kind} batch", BACKEND_COLOURS.get(kind, "#999999")) for kind in kinds]
    if any(e["batch"] == BUILD_EVENT for e in events):
        entries.append(("backend build", BUILD_COLOUR))
    if any(not e["success"] for e in events):
        entries.append(("failed attempt", FAILED_COLOUR))
    x = float(_LEFT)
    for name, colour in entries:
        draw.rectangle([x, height - 18, x + 12, height - 6], fill=colour, outline="black")
        draw.text((x + 16, height - 12), name, font=small, fill="black", anchor="lm")
        x += 16 + small.getlength(name) + 14
    wall = f"wall time {t_end - t0:.2f} s" if timing is not None else ""
    heading = " - ".join(t for t in (title or "subexperiment batches per backend", wall) if t)
    draw.text((_WIDTH / 2, 14), heading, font=font, fill="black", anchor="mm")
    if timing is not None:  # every stage's seconds, also those too short to label in their bar
        breakdown = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timing.seconds().items())
        draw.text((_WIDTH / 2, 32), breakdown, font=small, fill="#333333", anchor="mm")

    def bar(row: int, start: float, end: float, colour: str, text: str, failed: bool = False) -> None:
        x0, x1 = x_of(start), max(x_of(end), x_of(start) + 1.0)
        y_mid = _TOP + _LANE * row + _LANE / 2
        y0, y1 = y_mid - _BAR / 2, y_mid + _BAR / 2
        draw.rectangle([x0, y0, x1, y1], fill=FAILED_COLOUR if failed else colour, outline="black")
        if failed:
            for offset in range(0, int(x1 - x0) + _BAR, 6):
                draw.line([(x0 + offset - _BAR, y1), (x0 + offset, y0)], fill="white")
            draw.rectangle([x0, y0, x1, y1], outline="black")
        if text and font.getlength(text) + 4 <= x1 - x0:
            draw.text(((x0 + x1) / 2, y_mid), text, font=font, fill="white", anchor="mm")

    for row, label in enumerate(labels):
        y_mid = _TOP + _LANE * row + _LANE / 2
        draw.text((_LEFT - 8, y_mid), label, font=font, fill="black", anchor="rm")
    for name, start, end in stages:
        bar(0, start, end, STAGE_COLOURS.get(name, "#999999"), f"{name} {end - start:.2f}s")
    first_lane = 1 if stages else 0
    for offset, backend in enumerate(lanes):
        row = first_lane + offset
        lane_events = [e for e in events if e["backend"] == backend]
        for event in lane_events:
            if event["batch"] == BUILD_EVENT:
                seconds = event["end"] - event["start"]
                bar(row, event["start"], event["end"], BUILD_COLOUR, f"build {seconds:.1f}s")
                continue
            bar(
                row,
                event["start"],
                event["end"],
                BACKEND_COLOURS.get(event.get("kind", _kind_of(backend)), "#999999"),
                str(event["batch"]).removeprefix(backend.replace(":", "-") + "-"),
                failed=not event["success"],
            )
        if not [e for e in lane_events if e["batch"] != BUILD_EVENT]:
            y_mid = _TOP + _LANE * row + _LANE / 2
            draw.text(
                (_LEFT + 8, y_mid), "idle: the policy gave it no work", font=font, fill="#555555", anchor="lm"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def load_events(run_dir: Path) -> list[dict[str, Any]]:
    """The batch events a run recorded (``timeline.json``), empty if none; for the Gantt chart."""
    path = run_dir / "timeline.json"
    return json.loads(path.read_text()) if path.exists() else []
