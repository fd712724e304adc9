"""Where per-qubit readout errors come from: published calibration, or two measured circuits.

Measured calibrations are cached as JSON per backend and calibration epoch
(``$QUBELET_CACHE_DIR`` or ``~/.cache/qubelet``/``readout``), so a run pays for them once per
calibration, not once per batch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.mitigation.readout import ReadoutError

#: Shots per calibration circuit: the calibration's own shot noise (~sqrt(p/shots) ≈ 0.002 at
#: p = 3 %) stays well below the statistical error of a subexperiment.
CALIBRATION_SHOTS = 8192


def published_readout_errors(backend: Any) -> dict[int, ReadoutError]:
    """Readout errors the backend publishes with its calibration (IQM fakes: their noise model)."""
    noise_model = getattr(backend, "noise_model", None)
    errors: dict[int, ReadoutError] = {}
    for qubits, error in getattr(noise_model, "_local_readout_errors", {}).items():
        matrix = np.asarray(error.probabilities, dtype=float)  # [true][recorded]
        errors[int(qubits[0])] = ReadoutError(float(matrix[0][1]), float(matrix[1][0]))
    return errors


def calibration_epoch(backend: Any) -> str:
    """An id that changes when the device is recalibrated (IQM's calibration set), else the day."""
    for attribute in ("calibration_set_id", "_calibration_set_id"):
        value = getattr(backend, attribute, None)
        if value:
            return str(value)
    return time.strftime("%Y-%m-%d")


def _cache_path(name: str, epoch: str) -> Path:
    root = Path(os.environ.get("QUBELET_CACHE_DIR") or Path.home() / ".cache" / "qubelet")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{name}-{epoch}")
    return root / "readout" / f"{safe}.json"


def errors_from_counts(
    zeros: dict[str, int], ones: dict[str, int], num_qubits: int
) -> dict[int, ReadoutError]:
    """Per qubit, ``P(1|0)`` from the all-zeros circuit and ``P(0|1)`` from the all-ones one."""
    out: dict[int, ReadoutError] = {}
    for q in range(num_qubits):
        n0 = sum(zeros.values())
        n1 = sum(ones.values())
        flips0 = sum(n for bits, n in zeros.items() if bits.replace(" ", "")[::-1][q] == "1")
        flips1 = sum(n for bits, n in ones.items() if bits.replace(" ", "")[::-1][q] == "0")
        out[q] = ReadoutError(flips0 / n0, flips1 / n1)
    return out


def measured_readout_errors(
    backend: Any, name: str, shots: int = CALIBRATION_SHOTS
) -> dict[int, ReadoutError]:
    """Run (or read from the cache) the two calibration circuits on every qubit of ``backend``."""
    from qiskit import QuantumCircuit

    path = _cache_path(name, calibration_epoch(backend))
    try:
        cached = json.loads(path.read_text())
        return {int(q): ReadoutError(float(e[0]), float(e[1])) for q, e in cached["errors"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    n = int(backend.num_qubits)
    zeros = QuantumCircuit(n, n, name="readout_cal_0")
    zeros.measure(range(n), range(n))
    ones = QuantumCircuit(n, n, name="readout_cal_1")
    ones.x(range(n))
    ones.measure(range(n), range(n))
    from qiskit import transpile

    compiled = transpile([zeros, ones], backend=backend, optimization_level=0, initial_layout=list(range(n)))
    result = backend.run(compiled, shots=shots).result()
    errors = errors_from_counts(result.get_counts(0), result.get_counts(1), n)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {"errors": {q: [e.p1_given_0, e.p0_given_1] for q, e in errors.items()}, "shots": shots}
            )
        )
    except OSError:
        pass  # a read-only home only costs a re-measurement next time
    return errors
