"""Where the policy learns from: the pipeline's run history and a Prometheus server.

Both sit behind :class:`TelemetrySource`: ``rows()`` gives per-task :class:`TelemetryRow` records
(only the local history has those) and ``snapshots()`` gives a per-backend summary (recent
latency, failure rate, queue depth, up/down). Telemetry is advisory: a missing file, a dead
endpoint or bad JSON is logged as one clear line and the policy falls back to its priors, so a
broken monitoring stack can never stop a run. ``LocalHistory(strict=True)`` turns bad lines into a
``ValueError`` instead, for ``qubelet policy fit`` where the user asked for exactly that file.
Even then a *torn* line (a row cut short when the disk filled up, possibly with the next row
appended to it) is skipped and counted, not fatal: it is a known failure of appending writers,
not a malformed file, and refusing the whole history for it would lose every good row.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from policy.interface import BACKEND_KINDS, PROBES, TelemetryRow
from qubelet import klog
from qubelet.prometheus import PrometheusError, get_result, instant_values

log = klog.get_logger("qubelet.policy")

#: Fields a row must carry to be useful, with their types (bool is checked before int).
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "backend": str,
    "backend_kind": str,
    "num_qubits": int,
    "depth": int,
    "num_2q_gates": int,
    "shots": int,
    "run_seconds": (int, float),
}
_OPTIONAL_NUMBERS = (
    "queue_wait_seconds",
    "queue_depth",
    "external_queue_depth",
    "fidelity_2q",
    "readout_fidelity",
    "calibration_time",
    "observed_error",
    "mitigation_work",
    "ts",
)
#: Mitigation levels a row may name (``pipeline.mitigation``'s; absent means none).
MITIGATION_LEVELS = ("none", "readout", "zne")

#: Every PromQL expression the policy sends, in one place. ``{window}`` is a range like ``5m``.
PROMQL: dict[str, str] = {
    "mean_run_seconds": (
        "sum by (backend) (rate(qubelet_pipeline_task_duration_seconds_sum[{window}]))"
        " / sum by (backend) (rate(qubelet_pipeline_task_duration_seconds_count[{window}]))"
    ),
    "failure_ratio": (
        'sum by (backend) (rate(qubelet_pipeline_tasks_total{{state="failed"}}[{window}]))'
        " / sum by (backend) (rate(qubelet_pipeline_tasks_total[{window}]))"
    ),
    # Pushed groups (one per cluster step, see pipeline/push.py) add up to the backlog; groups
    # not pushed for a day (abandoned runs) or an hour (old failures) no longer count.
    "queue_depth": (
        "sum by (backend) (qubelet_pipeline_queue_depth"
        " unless on (run, task) (push_time_seconds < time() - 86400))"
    ),
    "backend_up": (
        "min by (backend) (qubelet_pipeline_backend_up"
        " unless on (run, task) (push_time_seconds < time() - 3600))"
    ),
    "unhealthy_devices": 'sum(qubelet_device_plugin_devices{health="Unhealthy"})',
    # The DRA driver's per-QPU health probe (label ``qpu``: the inventory name), kept only from
    # targets Prometheus scrapes now: the admission check's own expression
    # (admission_check.telemetry.PROMQL["device_healthy"], checked equal by a test).
    "qpu_healthy": "min by (qpu) (qubelet_dra_qpu_healthy and on (job, instance) (up == 1))",
    # Kueue's own count of workloads not admitted yet, per LocalQueue qubelet-<kind> (Kueue's
    # LocalQueueMetrics): the truth about the queue in front of each backend class on a cluster.
    "kueue_pending": 'sum by (name) (kueue_local_queue_pending_workloads{name=~"qubelet-.+"})',
}


@dataclass
class BackendSnapshot:
    """What telemetry says about one backend recently; ``None`` means unknown."""

    backend: str
    mean_run_seconds: float | None = None
    failure_ratio: float | None = None
    queue_depth: float | None = None
    up: bool | None = None
    samples: int = 0
    #: unix time the values were read (None in models fitted before snapshots were stamped:
    #: treated as expired, see ``policy.models.SNAPSHOT_TTL_SECONDS``)
    observed_at: float | None = None


class TelemetrySource(Protocol):
    """Anything the policy can learn from."""

    def rows(self) -> list[TelemetryRow]:
        """Per-task records (empty when the source only has aggregates)."""
        ...

    def snapshots(self) -> dict[str, BackendSnapshot]:
        """Per-backend summaries keyed by backend name."""
        ...


def validate_row(raw: Any) -> TelemetryRow:
    """Check one decoded JSON value is a usable row; raise ``ValueError`` saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    for name, kind in REQUIRED_FIELDS.items():
        if name not in raw:
            raise ValueError(f"missing field {name!r}")
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"field {name!r} has bad value {value!r}")
    if raw["backend_kind"] not in BACKEND_KINDS:
        raise ValueError(f"field 'backend_kind' must be one of {BACKEND_KINDS}, got {raw['backend_kind']!r}")
    if not math.isfinite(raw["run_seconds"]) or raw["run_seconds"] < 0:
        raise ValueError(f"field 'run_seconds' must be a finite number >= 0, got {raw['run_seconds']!r}")
    for name in _OPTIONAL_NUMBERS:
        value = raw.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"field {name!r} has bad value {value!r}")
    if raw.get("mitigation") is not None and raw["mitigation"] not in MITIGATION_LEVELS:
        raise ValueError(f"field 'mitigation' must be one of {MITIGATION_LEVELS}, got {raw['mitigation']!r}")
    if raw.get("mitigation_work") is not None and not raw["mitigation_work"] >= 1:
        raise ValueError(f"field 'mitigation_work' must be >= 1, got {raw['mitigation_work']!r}")
    if raw.get("probe_only") is not None and not isinstance(raw["probe_only"], bool):
        raise ValueError(f"field 'probe_only' must be true or false, got {raw['probe_only']!r}")
    if raw.get("probe") is not None and raw["probe"] not in PROBES:
        raise ValueError(f"field 'probe' must be one of {PROBES}, got {raw['probe']!r}")
    if raw.get("probe") is not None and raw.get("observed_error") is None:
        raise ValueError("field 'probe' names the probe of an observed_error the row does not carry")
    row: TelemetryRow = raw  # type: ignore[assignment]
    return row


def summarise(rows: Iterable[TelemetryRow]) -> dict[str, BackendSnapshot]:
    """Per-backend snapshot computed from rows (the local history's answer to ``snapshots()``)."""
    out: dict[str, BackendSnapshot] = {}
    sums: dict[str, list[float]] = {}
    for row in rows:
        name = row["backend"]
        snap = out.setdefault(name, BackendSnapshot(backend=name, observed_at=time.time()))
        acc = sums.setdefault(name, [0.0, 0.0])
        snap.samples += 1
        acc[0] += float(row["run_seconds"])
        acc[1] += 0.0 if row.get("success", True) else 1.0
    for name, snap in out.items():
        snap.mean_run_seconds = sums[name][0] / snap.samples
        snap.failure_ratio = sums[name][1] / snap.samples
    return out


class LocalHistory:
    """``telemetry.jsonl`` files written by earlier runs."""

    def __init__(self, paths: Sequence[Path | str], *, strict: bool = False) -> None:
        self.paths = [Path(p) for p in paths]
        self.strict = strict
        self._rows: list[TelemetryRow] | None = None
        #: lines skipped because a write was cut short (see :func:`split_torn`)
        self.torn_lines = 0
        #: lines holding NUL bytes (a crash left a file's length ahead of its data): the NULs
        #: are dropped; what remains is kept if it is a whole row, skipped otherwise
        self.nul_lines = 0

    def rows(self) -> list[TelemetryRow]:
        """Every valid telemetry row of the files, in file order."""
        if self._rows is None:
            self._rows = []
            for path in self.paths:
                self._rows.extend(self._read(path))
        return list(self._rows)

    def snapshots(self) -> dict[str, BackendSnapshot]:
        """Per-backend summaries computed from the files' rows."""
        return summarise(self.rows())

    def _read(self, path: Path) -> list[TelemetryRow]:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            message = f"cannot read telemetry file {path}: {exc.__class__.__name__}: {exc}"
            if self.strict:
                raise ValueError(message) from exc
            log.warning("telemetry file unreadable, skipped", path=str(path), err=str(exc))
            return []
        out: list[TelemetryRow] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if "\x00" in line:
                self.nul_lines += 1
                log.warning("NUL bytes in telemetry line dropped", where=f"{path}:{lineno}")
                line = line.replace("\x00", "")
                if line.strip() and not _parses(line):
                    continue
            if not line.strip():
                continue
            torn, rest = (False, None) if _parses(line) else split_torn(line)
            if torn:
                self.torn_lines += 1
                log.warning("torn telemetry line skipped", where=f"{path}:{lineno}")
                if rest is None:
                    continue
                line = rest  # the whole row appended after the torn one
            try:
                out.append(validate_row(json.loads(line)))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                message = f"{path}:{lineno}: bad telemetry row: {exc}"
                if self.strict:
                    raise ValueError(message) from exc
                log.warning("bad telemetry row skipped", where=f"{path}:{lineno}", err=str(exc))
        return out


def _parses(line: str) -> bool:
    """Cheap pre-check: a line that parses is never torn (the common case)."""
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _is_cut_short(text: str) -> bool:
    """Whether ``text`` is a JSON object cut off mid-way (a prefix of some valid object).

    The decoder's error then sits at the very end of the text (``{"a": 1``), inside a string it
    never saw close, or inside a number or literal the cut split (``{"a": 1.``, ``{"a": tr``).
    Anything else (``{truncated``) is a malformed row, not a torn one.
    """
    if not text.startswith("{"):
        return False
    try:
        json.loads(text)
        return False
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unterminated string"):
            return True
        rest = text[exc.pos :]
        return all(c in _NUMBER_CHARS for c in rest) or any(w.startswith(rest) for w in _LITERALS)


_NUMBER_CHARS = frozenset("0123456789.eE+-")
_LITERALS = ("true", "false", "null")


def split_torn(line: str) -> tuple[bool, str | None]:
    """Whether ``line`` holds a torn row, and the whole row appended after it, if any.

    A row cut short by a failed append never closes; the next successful append then continues
    on the same line. So a line is torn when it is an object cut short, or when it splits into
    an object cut short followed by a whole JSON object (returned, so that row is not lost).
    """
    stripped = line.strip()
    if _is_cut_short(stripped):
        return True, None
    start = stripped.find("{", 1)
    while start != -1:
        head, tail = stripped[:start], stripped[start:]
        if _is_cut_short(head):
            try:
                if isinstance(json.loads(tail), dict):
                    return True, tail
            except ValueError:
                pass
        start = stripped.find("{", start + 1)
    return False, None


class PrometheusSource:
    """A Prometheus server's HTTP API (``/api/v1/query`` and ``/api/v1/query_range``).

    Only aggregates exist there, so ``rows()`` is empty and ``snapshots()`` carries the signal.
    Any failure (connection refused, timeout, non-JSON, ``status != success``) is logged once
    per call and answered with what could be read, possibly nothing.
    """

    def __init__(
        self, url: str, *, timeout: float = 2.0, window: str = "5m", lookback_seconds: float = 3600.0
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.window = window
        self.lookback_seconds = lookback_seconds
        self.last_error: str | None = None

    def rows(self) -> list[TelemetryRow]:
        """No rows: Prometheus holds aggregates, not per-task records."""
        return []

    def snapshots(self) -> dict[str, BackendSnapshot]:
        """Per backend the recent queue wait, failure ratio and run time from Prometheus."""
        out: dict[str, BackendSnapshot] = {}

        end = time.time()

        def snap(name: str) -> BackendSnapshot:
            return out.setdefault(name, BackendSnapshot(backend=name, observed_at=end))

        for field_name in ("mean_run_seconds", "failure_ratio"):
            series = self._range(PROMQL[field_name].format(window=self.window), end)
            for backend, values in series.items():
                if values:
                    setattr(snap(backend), field_name, values[-1])
                    snap(backend).samples = max(snap(backend).samples, len(values))
        for backend, value in self._instant(PROMQL["queue_depth"]).items():
            snap(backend).queue_depth = value
        for backend, value in self._instant(PROMQL["backend_up"]).items():
            snap(backend).up = value >= 1.0
        return out

    def kueue_pending(self) -> dict[str, float]:
        """Workloads Kueue has not admitted yet, per backend kind (``cpu``, ``gpu``, ``qpu``).

        Read from Kueue's LocalQueue metrics (one LocalQueue ``qubelet-<kind>`` per backend
        class, see manifests/kueue); empty when Prometheus has none.
        """
        values = self._instant(PROMQL["kueue_pending"], label="name")
        return {name.removeprefix("qubelet-"): value for name, value in values.items()}

    def unhealthy_devices(self) -> int | None:
        """Count of devices the device plugin reports Unhealthy (``None`` when unknown)."""
        values = self._instant(PROMQL["unhealthy_devices"])
        return int(sum(values.values())) if values else None

    def series(
        self, query: str, start: float, end: float, step: float, label: str = "backend"
    ) -> dict[str, list[tuple[float, float]]]:
        """A range query's samples ``(unix time, value)`` per value of ``label`` (empty on failure)."""
        params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        out: dict[str, list[tuple[float, float]]] = {}
        for item in self._get("/api/v1/query_range", params) or []:
            if not isinstance(item, dict):
                continue
            samples = []
            for pair in item.get("values", []):
                try:
                    ts, value = float(pair[0]), float(pair[1])
                except (IndexError, TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    samples.append((ts, value))
            out[str(item.get("metric", {}).get(label, ""))] = samples
        return out

    def qpu_healthy(self) -> dict[str, bool]:
        """Per QPU (inventory name), whether the DRA driver's health probe passes (empty: unknown)."""
        return {
            name: value >= 1.0 for name, value in self._instant(PROMQL["qpu_healthy"], label="qpu").items()
        }

    # -- HTTP -----------------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]] | None:
        try:
            return get_result(self.url, path, params, self.timeout)
        except PrometheusError as exc:
            self.last_error = str(exc)
            log.warning("prometheus query failed, using priors", url=self.url + path, err=exc.cause)
            return None

    def _instant(self, query: str, label: str = "backend") -> dict[str, float]:
        result = self._get("/api/v1/query", {"query": query})
        return instant_values(result or [], lambda labels: str(labels.get(label, "")))

    def _range(self, query: str, end: float) -> dict[str, list[float]]:
        params = {
            "query": query,
            "start": f"{end - self.lookback_seconds:.3f}",
            "end": f"{end:.3f}",
            "step": "60",
        }
        result = self._get("/api/v1/query_range", params)
        out: dict[str, list[float]] = {}
        for item in result or []:
            values: list[float] = []
            for pair in item.get("values", []) if isinstance(item, dict) else []:
                try:
                    value = float(pair[1])
                except (IndexError, TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    values.append(value)
            out[str(item.get("metric", {}).get("backend", ""))] = values
        return out
