"""Feature vectors for (subexperiment, backend) pairs.

The run-time model is fitted per backend (and pooled per backend model and class as fallbacks),
so the regression features are the circuit's: width, log depth, log two-qubit gates, log shots,
log measured bits. Logs because run time is multiplicative in them (shots × layers × amplitudes);
width stays linear because a statevector's cost is exponential in it, i.e. linear in log time.
The backend side (queue, latency, calibration) is reported by :func:`backend_features` for
``explain`` and enters the decision through the queue-wait and error terms, not the regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from policy.interface import BackendState, CircuitFeatures, TelemetryRow

FEATURE_NAMES: tuple[str, ...] = ("num_qubits", "log_depth", "log_2q_gates", "log_shots", "log_clbits")


def circuit_vector(task: CircuitFeatures) -> list[float]:
    """The regression features of one subexperiment, in :data:`FEATURE_NAMES` order."""
    return [
        float(task.num_qubits),
        math.log1p(max(task.depth, 0)),
        math.log1p(max(task.num_2q_gates, 0)),
        math.log1p(max(task.shots, 0)),
        math.log1p(max(task.num_clbits, 0)),
    ]


def circuit_matrix(tasks: Sequence[CircuitFeatures]) -> np.ndarray:
    """Stack :func:`circuit_vector` for many tasks (shape ``(len(tasks), len(FEATURE_NAMES))``)."""
    if not tasks:
        return np.zeros((0, len(FEATURE_NAMES)))
    n = len(tasks)
    columns = [
        np.fromiter((t.num_qubits for t in tasks), dtype=float, count=n),
        np.fromiter((t.depth for t in tasks), dtype=float, count=n),
        np.fromiter((t.num_2q_gates for t in tasks), dtype=float, count=n),
        np.fromiter((t.shots for t in tasks), dtype=float, count=n),
        np.fromiter((t.num_clbits for t in tasks), dtype=float, count=n),
    ]
    out = np.log1p(np.maximum(np.column_stack(columns), 0.0))
    out[:, 0] = columns[0]  # width stays linear
    return out


def task_from_row(row: TelemetryRow) -> CircuitFeatures:
    """The :class:`CircuitFeatures` a telemetry row describes (what was known before it ran)."""
    return CircuitFeatures(
        key=str(row.get("key", "")),
        num_qubits=int(row["num_qubits"]),
        depth=int(row["depth"]),
        num_2q_gates=int(row["num_2q_gates"]),
        num_clbits=int(row.get("num_clbits", row["num_qubits"]) or 0),
        shots=int(row["shots"]),
        partition=str(row.get("partition", "")),
    )


def backend_features(state: BackendState) -> dict[str, float | str | None]:
    """The backend side of the picture, as ``explain`` shows it."""
    return {
        "kind": state.kind,
        "model": state.model,
        "workers": float(state.workers),
        "healthy": float(state.healthy),
        "max_qubits": None if state.max_qubits is None else float(state.max_qubits),
        "queue_depth": float(state.queue_depth),
        "queue_wait_seconds": state.queue_wait_seconds,
        "fidelity_2q": state.fidelity_2q,
        "readout_fidelity": state.readout_fidelity,
    }
