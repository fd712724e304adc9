"""The embedded fake QPU, paid for only when the policy gives it work.

Building an IQM fake backend imports ``iqm.qiskit_iqm``, whose fake backends assemble their
noise models at import time: over ten seconds on a small machine. Most runs never send the QPU a
single subexperiment (the telemetry policy keeps 5-qubit work on the simulators when the QPU's
predicted error is over budget), so that cost bought nothing. What the policy needs up front,
the QPU's width and calibration, is small and fixed per fake model: it is read from
``fake_qpu_properties.json`` (the same numbers :func:`pipeline.backends.qpu.calibration_of`
derives from each fake's error profile; tests/test_pipeline_startup.py checks them against
iqm-client, and :func:`write_properties_file` rewrites the file after an iqm-client upgrade).
The real backend is built on the first batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from qiskit import QuantumCircuit

from pipeline.backends.base import Counts
from pipeline.backends.qpu import (
    FAKE_CALIBRATION_EPOCH,
    FAKE_PREFIX,
    KNOWN_FAKES,
    IQMBackend,
    QPUTarget,
    _fake_backend,
    backend_name,
    calibration_of,
    qpu_state,
)
from pipeline.errors import PipelineError
from pipeline.mitigation.levels import MitigationConfig
from policy.interface import BackendKind, BackendState

PROPERTIES_FILE = Path(__file__).with_name("fake_qpu_properties.json")

#: Seconds before a fake QPU that is not built yet can start on work: importing iqm-client, whose
#: fake backends build their noise models on import, took 13–17 s on the 2-core development
#: machine. Reported as the backend's queue wait, so the telemetry policy weighs it like any
#: other wait (and does not explore the QPU for one subexperiment at that price).
BUILD_SECONDS = 10.0


@dataclass(frozen=True)
class QPUProperties:
    """What a policy needs to know about a QPU before sending it work."""

    num_qubits: int
    fidelity_2q: float | None
    readout_fidelity: float | None


@cache
def fake_properties() -> dict[str, QPUProperties]:
    """Width and calibration of every IQM fake model, keyed by class name (``IQMFakeApollo``)."""
    try:
        raw = json.loads(PROPERTIES_FILE.read_text())
        return {model: QPUProperties(**values) for model, values in raw["models"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{PROPERTIES_FILE}: unreadable fake QPU properties ({exc})") from None


def measured_fake_properties() -> dict[str, QPUProperties]:
    """Build every known fake (slow: imports iqm-client) and read its width and calibration."""
    measured = {}
    for model in KNOWN_FAKES:
        backend = _fake_backend(model)
        fidelity_2q, readout_fidelity = calibration_of(backend)
        measured[model] = QPUProperties(int(backend.num_qubits), fidelity_2q, readout_fidelity)
    return measured


def write_properties_file(path: Path = PROPERTIES_FILE) -> None:
    """Regenerate the cached properties from the installed iqm-client."""
    models = {model: props.__dict__ for model, props in measured_fake_properties().items()}
    text = json.dumps({"source": "iqm-client fake backends", "models": models}, indent=1, sort_keys=True)
    path.write_text(text + "\n")


class LazyFakeQPUBackend:
    """An IQM fake QPU whose state is known at once and whose simulator is built on first use."""

    kind: BackendKind = "qpu"

    def __init__(self, target: QPUTarget, mitigation: MitigationConfig | None = None) -> None:
        if not target.is_fake:
            raise ValueError(f"{target.spec}: only fake QPUs have cached properties")
        model = target.spec[len(FAKE_PREFIX) :]
        properties = fake_properties().get(model)
        if properties is None:
            raise PipelineError(f"{PROPERTIES_FILE}: no properties for fake QPU {model!r}")
        self.target = target
        self.name = backend_name(target)
        self.properties = properties
        self.mitigation = mitigation
        self.calibration_time = FAKE_CALIBRATION_EPOCH  # a fake QPU's one calibration
        self._backend: IQMBackend | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the fake backend (and iqm-client with it) has been loaded."""
        return self._backend is not None

    def state(self) -> BackendState:
        """The state :class:`IQMBackend` reports, from the cached properties.

        Until the backend is built, its build time is the wait before it can start on work.
        """
        state = qpu_state(
            self.target,
            self.properties.num_qubits,
            self.properties.fidelity_2q,
            self.properties.readout_fidelity,
            self.mitigation,
            self.calibration_time,
        )
        if self._backend is None:
            state = replace(state, queue_wait_seconds=max(state.queue_wait_seconds, BUILD_SECONDS))
        return state

    def load(self) -> None:
        """Build the fake backend now (the executor does, before timing a batch)."""
        self._loaded()

    def _loaded(self) -> IQMBackend:
        with self._lock:
            if self._backend is None:
                self._backend = IQMBackend(self.target, mitigation=self.mitigation)
            return self._backend

    def run_batch(self, circuits: Sequence[QuantumCircuit], shots: int, seeds: Sequence[int]) -> list[Counts]:
        """Build the fake backend if this is its first batch, then run the batch on it."""
        return self._loaded().run_batch(circuits, shots, seeds)

    def run_batch_probed(
        self,
        circuits: Sequence[QuantumCircuit],
        shots: int,
        seeds: Sequence[int],
        probe: QuantumCircuit | None,
    ) -> tuple[list[Counts], Counts | None]:
        """:meth:`IQMBackend.run_batch_probed`, building the fake backend on first use."""
        return self._loaded().run_batch_probed(circuits, shots, seeds, probe)
