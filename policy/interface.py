"""The contract between the pipeline and any backend-selection policy.

A policy gets one :class:`CircuitFeatures` per subexperiment and the current
:class:`BackendState` of every backend the run may use, and returns one :class:`Decision` per
subexperiment. Keeping these plain frozen dataclasses (no qiskit objects) lets the policy run
in a scheduler, a simulator or a test without the pipeline's dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, TypedDict

from qubelet.errors import QubeletError

BackendKind = Literal["cpu", "gpu", "qpu"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("cpu", "gpu", "qpu")
#: Widest subexperiment (qubits + clbits) whose error the pipeline measures (its probe simulates
#: it exactly: ``pipeline.mitigation.observed.MAX_PROBE_QUBITS``, checked equal by a test); the
#: simulator measures no wider one.
OBSERVED_ERROR_MAX_WIDTH = 20
#: ``TelemetryRow.probe``: which probe measured a row's ``observed_error``: ``exact`` (ideal
#: values simulated, batches with a subexperiment within OBSERVED_ERROR_MAX_WIDTH) or ``mirror``
#: (a mirror circuit run in the batch's job, :mod:`policy.probe`)
EXACT_PROBE = "exact"
MIRROR_PROBE = "mirror"
PROBES = (EXACT_PROBE, MIRROR_PROBE)


@dataclass(frozen=True)
class CircuitFeatures:
    """What a policy may know about one subexperiment before running it."""

    key: str  #: content address of the subexperiment (sha256 of its QPY)
    num_qubits: int
    depth: int
    num_2q_gates: int
    num_clbits: int
    shots: int
    partition: str = ""
    #: identical subexperiments merged under this key (they run once, results are shared)
    multiplicity: int = 1


@dataclass(frozen=True)
class BackendState:
    """A backend as seen at decision time: capacity, health, calibration and queue."""

    name: str  #: "cpu", "gpu", or "qpu:<inventory name>"
    kind: BackendKind
    workers: int = 1
    healthy: bool = True
    #: why it is not healthy, for people (plan.json's ``lost_because``): which signal said so;
    #: empty while healthy
    unhealthy_reason: str = ""
    max_qubits: int | None = None
    model: str = ""
    fidelity_2q: float | None = None
    readout_fidelity: float | None = None
    queue_depth: int = 0  #: our own jobs queued ahead (the submitter knows them)
    #: other tenants' jobs queued ahead, from the backend's queue metric (may lag)
    external_queue_depth: int = 0
    queue_wait_seconds: float = 0.0
    #: unix time of the calibration ``fidelity_2q``/``readout_fidelity`` come from (an epoch id)
    calibration_time: float | None = None
    #: seconds of fixed overhead per submitted job (transpile, upload, cloud round trip)
    job_overhead_seconds: float = 0.0
    #: error mitigation its results get (``none``, ``readout``, ``zne``): what error to predict
    mitigation: str = "none"
    #: device work per subexperiment relative to none (ZNE runs every circuit at each scale
    #: factor: the sum of the scale factors); predicted run times are multiplied by it
    mitigation_work: float = 1.0

    def marked_unhealthy(self, reason: str) -> BackendState:
        """This state offered as unhealthy, ``reason`` added to any reason it already had."""
        reasons = [r for r in (self.unhealthy_reason, reason) if r]
        return replace(self, healthy=False, unhealthy_reason="; ".join(reasons))


@dataclass(frozen=True)
class Decision:
    """Where one subexperiment runs and, for a QPU, what its ResourceClaim must demand."""

    key: str
    backend: str  #: a :attr:`BackendState.name`
    kind: BackendKind
    min_qubits: int | None = None
    min_fidelity_2q: float | None = None
    predicted_seconds: float | None = None
    predicted_error: float | None = None
    reason: str = ""
    alternatives: dict[str, dict[str, float]] = field(default_factory=dict)


class SelectionPolicy(Protocol):
    """Anything that assigns subexperiments to backends."""

    name: str

    def select(self, tasks: Sequence[CircuitFeatures], backends: Sequence[BackendState]) -> list[Decision]:
        """One decision per task, in the order of ``tasks``."""
        ...


class TelemetryRow(TypedDict, total=False):
    """One line of ``telemetry.jsonl``: one executed task (a batch member) on one backend.

    Written by the pipeline after every task attempt and read by ``qubelet policy fit``.
    """

    ts: float  #: unix time the task started running
    run_id: str
    task_id: str
    key: str
    partition: str
    backend: str  #: BackendState.name
    backend_kind: BackendKind
    model: str
    num_qubits: int
    depth: int
    num_2q_gates: int
    num_clbits: int
    shots: int
    batch_size: int
    queue_wait_seconds: float  #: submission to start, as the submitter saw it
    #: our own jobs queued ahead of this one when it was submitted
    queue_depth: int
    #: other tenants' jobs queued ahead when it was submitted (the queue metric's value)
    external_queue_depth: int
    run_seconds: float
    success: bool
    error: str | None
    attempt: int
    fidelity_2q: float | None
    readout_fidelity: float | None
    calibration_time: float | None  #: which calibration the two fidelities come from
    #: optional: the measured error of a QPU batch, on ONE of its rows (one measurement per
    #: probe): the exact probe's shot-noise-corrected deviation from ideal values, or the mirror
    #: probe's estimate for this row's subexperiment; corrects the analytic error prior
    #: (``policy.models.PolicyModel.error_factor``)
    observed_error: float | None
    #: optional, on rows that carry ``observed_error``: the probe that measured it (``PROBES``)
    probe: str
    #: optional: the row of a probe-only job (no subexperiment ran: only the mirror circuit of
    #: the row's subexperiment, whose time ``run_seconds`` is); kept out of run-time fits
    probe_only: bool
    #: optional: the mitigation the task's result got and its relative device work (see
    #: :class:`BackendState`); rows without them are unmitigated
    mitigation: str
    mitigation_work: float
    #: optional: seconds the backend spent starting up (loading iqm-client) before this batch;
    #: counted neither as queue wait nor as run time
    startup_seconds: float


class NoUsableBackendError(QubeletError, ValueError):
    """No healthy backend can run a subexperiment (e.g. it is wider than every QPU)."""
