"""The ``qpu`` backend: an IQM quantum computer through iqm-client, or its noisy fake twin.

Which QPU is used follows the same contract the device plugin and DRA driver inject into a
container: ``QUBELET_QPU_BACKEND`` (``fake:<IQMFake class>`` or ``iqm``), ``IQM_SERVER_URL`` and
``IQM_TOKENS_FILE`` (a path; the token itself is never read into logs or messages). On a laptop
nothing is set and the embedded default, a fake IQM backend with its calibrated noise model,
stands in for the cloud QPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qiskit import QuantumCircuit, transpile

from pipeline.backends.base import Counts
from pipeline.backends.health import HEALTHY, CachedHealthCheck, Health
from pipeline.errors import PipelineError
from pipeline.mitigation.levels import MitigationConfig
from pipeline.mitigation.readout import ReadoutError, apply_confusion
from pipeline.mitigation.zne import fold_two_qubit_gates

if TYPE_CHECKING:
    from pipeline.backends.iqm_remote import RemoteIQM
from policy.interface import BackendKind, BackendState
from qubelet.inventory.aliases import local_qpu_name
from qubelet.inventory.names import ENV_IQM_SERVER_URL, ENV_IQM_TOKENS_FILE, ENV_QPU_BACKEND, ENV_QPU_NAME

FAKE_PREFIX = "fake:"
KNOWN_FAKES = ("IQMFakeAdonis", "IQMFakeDeneb", "IQMFakeApollo", "IQMFakeAphrodite")


@dataclass(frozen=True)
class QPUTarget:
    """Where QPU work goes, resolved from flags and the injected environment."""

    name: str
    spec: str  #: "fake:<IQMFake class>" or "iqm"
    server_url: str | None = None
    tokens_file: Path | None = None

    @property
    def is_fake(self) -> bool:
        """Whether the target is an embedded fake backend (no server, no token)."""
        return self.spec.startswith(FAKE_PREFIX)


def resolve_qpu_target(default_spec: str, env: Mapping[str, str] | None = None) -> QPUTarget:
    """Pick the QPU from the environment (as injected by the device plugin / DRA) or the default."""
    env = os.environ if env is None else env
    spec = env.get(ENV_QPU_BACKEND) or default_spec
    server_url = env.get(ENV_IQM_SERVER_URL) or None
    tokens = env.get(ENV_IQM_TOKENS_FILE) or None
    if ENV_QPU_BACKEND not in env and server_url:
        spec = "iqm"
    if spec.startswith(FAKE_PREFIX):
        model = spec[len(FAKE_PREFIX) :]
        if model not in KNOWN_FAKES:
            raise PipelineError(
                f"unknown QPU backend {spec!r}: use one of "
                + ", ".join(FAKE_PREFIX + f for f in KNOWN_FAKES)
                + " or 'iqm'"
            )
        default_name = local_qpu_name(spec)
    elif spec == "iqm":
        if not server_url:
            raise PipelineError("QPU backend 'iqm' needs IQM_SERVER_URL to be set")
        # iqm-client takes the token from IQM_TOKEN or from the file IQM_TOKENS_FILE names
        if not env.get("IQM_TOKEN") and (not tokens or not Path(tokens).is_file()):
            raise PipelineError(
                f"IQM_TOKENS_FILE={tokens or '(unset)'}: no such token file (and IQM_TOKEN is not set)"
            )
        default_name = "iqm"
    else:
        raise PipelineError(f"unknown QPU backend {spec!r}: use fake:<IQMFake class> or 'iqm'")
    name = env.get(ENV_QPU_NAME) or default_name
    return QPUTarget(
        name=name, spec=spec, server_url=server_url, tokens_file=Path(tokens) if tokens else None
    )


def backend_name(target: QPUTarget) -> str:
    """The backend's name in plans, telemetry and metrics: ``qpu:<inventory name>``."""
    return f"qpu:{target.name}"


def model_name(target: QPUTarget) -> str:
    """The model as the QPU inventory (manifests/examples/qpus.yaml) spells it.

    "Apollo", not "IQMFakeApollo", so telemetry from laptops and clusters pools per model.
    """
    return target.spec[len(FAKE_PREFIX) :].removeprefix("IQMFake") if target.is_fake else "iqm"


#: Seconds of fixed cost per submitted job: a local transpile for a fake, a cloud round trip for
#: a real QPU (what the policy weighs against batching more work onto it).
FAKE_JOB_OVERHEAD_SECONDS = 0.5
REMOTE_JOB_OVERHEAD_SECONDS = 5.0


def _fake_backend(model: str) -> Any:
    from iqm.qiskit_iqm import fake_backends

    return getattr(fake_backends, model)()


def calibration_of(backend: Any) -> tuple[float | None, float | None]:
    """Mean two-qubit gate fidelity and readout fidelity from an IQM fake's error profile."""
    profile = getattr(backend, "error_profile", None)
    if profile is None:
        return None, None
    two_qubit = [
        1.0 - float(p)
        for per_gate in profile.two_qubit_gate_depolarizing_error_parameters.values()
        for p in per_gate.values()
    ]
    readout = [1.0 - (float(e["0"]) + float(e["1"])) / 2 for e in profile.readout_errors.values()]
    return (
        float(np.mean(two_qubit)) if two_qubit else None,
        float(np.mean(readout)) if readout else None,
    )


class IQMBackend:
    """Runs batches on an IQM QPU (real, via iqm-client) or on its noisy fake simulator."""

    kind: BackendKind = "qpu"

    def __init__(
        self,
        target: QPUTarget,
        optimization_level: int = 1,
        mitigation: MitigationConfig | None = None,
    ) -> None:
        self.target = target
        self.name = backend_name(target)
        self._optimization_level = optimization_level
        #: ZNE runs folded copies here; readout errors are recorded whatever the level, so the
        #: reconstruct step can show raw and mitigated values side by side.
        self.mitigation = mitigation or MitigationConfig()
        self._readout_calibration: dict[int, ReadoutError] | None = None
        self._remote: RemoteIQM | None = None
        #: a server QPU's own word on its health (cached, time-bounded); a fake is always up
        self._health: CachedHealthCheck | None = None
        if target.is_fake:
            self._backend = _fake_backend(target.spec[len(FAKE_PREFIX) :])
        else:
            from pipeline.backends.iqm_remote import RemoteIQM

            # One line naming the server and the reason on failure, never the token.
            self._remote = RemoteIQM(str(target.server_url), target.tokens_file)
            self._backend = self._remote.backend
            self._health = CachedHealthCheck(
                self.name,
                self._remote.health_check,
                source=f"IQM server {self._remote.server}",
                ttl=self._remote.health_ttl,
                timeout=self._remote.health_timeout,
            )
        self.model = model_name(target)
        if self._remote is not None:  # the server's published quality metrics
            self.fidelity_2q, self.readout_fidelity = self._remote.fidelity_2q, self._remote.readout_fidelity
        else:
            self.fidelity_2q, self.readout_fidelity = calibration_of(self._backend)
        # the calibration's epoch: a fake QPU has one calibration forever; a server's is the one
        # read now
        self.calibration_time = FAKE_CALIBRATION_EPOCH if target.is_fake else time.time()

    def health(self) -> Health:
        """Whether the QPU can take work now, by its own word (a server QPU asks its server)."""
        return self._health.current() if self._health is not None else HEALTHY

    def state(self) -> BackendState:
        """Width, calibration, mitigation and health as the selection policy sees them."""
        return qpu_state(
            self.target,
            int(self._backend.num_qubits),
            self.fidelity_2q,
            self.readout_fidelity,
            self.mitigation,
            self.calibration_time,
            health=self.health(),
        )

    def run_batch(self, circuits: Sequence[QuantumCircuit], shots: int, seeds: Sequence[int]) -> list[Counts]:
        """Transpile and run ``circuits`` as one job; counts per circuit, in order."""
        return self.run_batch_probed(circuits, shots, seeds, None)[0]

    def run_batch_probed(
        self,
        circuits: Sequence[QuantumCircuit],
        shots: int,
        seeds: Sequence[int],
        probe: QuantumCircuit | None,
    ) -> tuple[list[Counts], Counts | None]:
        """:meth:`run_batch` with a probe circuit appended to the same job (its raw counts apart).

        The probe (the mirror circuit, :mod:`pipeline.mitigation.mirror`) is transpiled with the
        batch, runs at the job's shots and is never folded for ZNE: it measures the device.
        """
        too_wide = [c.num_qubits for c in circuits if c.num_qubits > self._backend.num_qubits]
        if too_wide:
            raise PipelineError(
                f"{self.name}: circuit of {max(too_wide)} qubits exceeds the QPU's "
                f"{self._backend.num_qubits} qubits"
            )
        seed = int(seeds[0]) if seeds else 0
        compiled = transpile(
            [*circuits, *([probe] if probe is not None else [])],
            backend=self._backend,
            optimization_level=self._optimization_level,
            seed_transpiler=seed,
        )
        compiled_probe = compiled.pop() if probe is not None else None
        scales = self.mitigation.zne_scales if self.mitigation.zne else (1,)
        jobs = [fold_two_qubit_gates(c, scale, self.mitigation.fold) for scale in scales for c in compiled]
        job_seeds = [folded_seed(int(s), scale) for scale in scales for s in seeds]
        if compiled_probe is not None:
            jobs.append(compiled_probe)
            job_seeds.append(probe_seed(seed))
        if self.target.is_fake:
            raw = run_noisy_exact(jobs, self._backend.noise_model, shots, job_seeds)
        else:
            from pipeline.backends.iqm_remote import submission_fingerprint

            assert self._remote is not None
            extra = f"seeds={list(map(int, seeds))}|scales={list(scales)}|fold={self.mitigation.fold}"
            submitted = list(circuits)
            if probe is not None:  # a retry with the probe re-attaches only to a job with it
                extra += "|probe"
                submitted.append(probe)
            raw = self._remote.run(jobs, shots, submission_fingerprint(submitted, shots, extra))
        probe_counts = raw.pop() if compiled_probe is not None else None
        calibration = self.readout_calibration()
        n = len(compiled)
        out = []
        for i, circuit in enumerate(compiled):
            measured = _measured_physical_qubits(circuit)
            readout = [calibration.get(measured.get(b, -1)) for b in range(circuit.num_clbits)]
            folded = [(scale, raw[k * n + i]) for k, scale in enumerate(scales) if scale != 1]
            out.append(raw[i].with_mitigation_data(readout, folded))
        return out, probe_counts

    def readout_calibration(self) -> dict[int, ReadoutError]:
        """Per physical qubit, its readout error: the backend's calibration data, else measured.

        IQM publishes per-qubit readout errors with each calibration; the fake backends carry
        them in their error profile. Where none are published, two calibration circuits (all
        qubits in 0, all in 1) measure them once per backend and calibration (cached).
        """
        if self._readout_calibration is None:
            from pipeline.mitigation.calibration import measured_readout_errors, published_readout_errors

            published = (
                self._remote.readout_errors()
                if self._remote is not None
                else published_readout_errors(self._backend)
            )
            self._readout_calibration = published or measured_readout_errors(self._backend, self.name)
        return self._readout_calibration

    def use_job_journal(self, directory: Path) -> None:
        """Record submitted server jobs in ``directory``, so a killed run re-attaches on resume."""
        if self._remote is not None:
            self._remote.journal_dir = directory

    def cancel_in_flight(self) -> list[str]:
        """Cancel the server jobs this backend is waiting for (a run stopped by SIGTERM)."""
        if self._remote is None:
            return []
        return [f"job {job} on IQM server {self._remote.server}" for job in self._remote.cancel_in_flight()]


def _readout_matrices(noise_model: Any) -> dict[int, np.ndarray]:
    """Per physical qubit, P[true][recorded] of the noise model's readout errors."""
    matrices: dict[int, np.ndarray] = {}
    for qubits, error in getattr(noise_model, "_local_readout_errors", {}).items():
        matrices[int(qubits[0])] = np.asarray(error.probabilities, dtype=float)
    return matrices


def run_noisy_exact(
    compiled: Sequence[QuantumCircuit], noise_model: Any, shots: int, seeds: Sequence[int]
) -> list[Counts]:
    """Sample the fake QPU's exact noisy outcome distribution of device-transpiled circuits.

    The IQM fake noise models put quantum errors on ``r`` and ``cz`` and only classical readout
    errors on ``measure``. So deferring the measurements (virtual, noise-free ancillas), evolving
    the density matrix under the gate noise, then applying each clbit's readout confusion matrix
    gives exactly the distribution the shot-by-shot noisy simulator samples from, in one pass.
    """
    from qiskit_aer import AerSimulator

    from pipeline.backends.deferred import (
        NotDeferrableError,
        add_save_probabilities,
        defer_measurements,
    )
    from pipeline.backends.simulators import scatter_outcomes

    readout = _readout_matrices(noise_model)
    simulator = AerSimulator(method="density_matrix", noise_model=noise_model)
    prepared: list[QuantumCircuit] = []
    layouts: list[tuple[list[int], list[np.ndarray | None]]] = []
    for circuit in compiled:
        try:
            flat, sources = defer_measurements(circuit)
        except NotDeferrableError:
            raise PipelineError(f"circuit {circuit.name!r} cannot run on the fake QPU") from None
        written = [clbit for clbit, qubit in enumerate(sources) if qubit >= 0]
        # Readout error belongs to the physical qubit that was measured into the clbit.
        measured_on = _measured_physical_qubits(circuit)
        add_save_probabilities(flat, [sources[c] for c in written])
        prepared.append(flat)
        layouts.append((written, [readout.get(measured_on.get(c, -1)) for c in written]))
    result = simulator.run(prepared, shots=1).result()
    out: list[Counts] = []
    for index, (circuit, (written, matrices)) in enumerate(zip(compiled, layouts, strict=True)):
        probabilities = np.asarray(result.data(index)["probabilities"], dtype=float)
        probabilities = apply_confusion(np.clip(probabilities, 0.0, None), matrices)
        probabilities /= probabilities.sum()
        sampled = np.random.default_rng(seeds[index]).multinomial(shots, probabilities)
        histogram = np.zeros(1 << circuit.num_clbits, dtype=np.int64)
        np.add.at(histogram, scatter_outcomes(len(written), written), sampled)
        out.append(Counts.from_samples(histogram, circuit.num_clbits))
    return out


#: calibration epoch of every fake QPU: its error profile never changes, so errors the policy
#: learns on it carry across runs (a server QPU's epoch is when its calibration was read)
FAKE_CALIBRATION_EPOCH = 0.0


def qpu_state(
    target: QPUTarget,
    num_qubits: int,
    fidelity_2q: float | None,
    readout_fidelity: float | None,
    mitigation: MitigationConfig | None,
    calibration_time: float | None = None,
    *,
    health: Health = HEALTHY,
) -> BackendState:
    """The state a QPU reports, built or not yet built (:mod:`pipeline.backends.lazy_qpu`).

    ``calibration_time`` identifies the calibration ``fidelity_2q``/``readout_fidelity`` come
    from (the time they were read): the policy learns error corrections per calibration epoch.
    ``health`` is the QPU's own word (:meth:`IQMBackend.health`); the cluster's comes on top
    (``policy.live``, ``policy.cluster_health``).
    """
    mitigation = mitigation or MitigationConfig()
    return BackendState(
        name=backend_name(target),
        kind="qpu",
        workers=1,
        healthy=health.healthy,
        unhealthy_reason="" if health.healthy else health.reason,
        max_qubits=num_qubits,
        model=model_name(target),
        fidelity_2q=fidelity_2q,
        readout_fidelity=readout_fidelity,
        job_overhead_seconds=FAKE_JOB_OVERHEAD_SECONDS if target.is_fake else REMOTE_JOB_OVERHEAD_SECONDS,
        mitigation=mitigation.level,
        mitigation_work=mitigation.relative_qpu_work,
        calibration_time=calibration_time,
    )


def inventory_states(qpus: Sequence[Any], mitigation: MitigationConfig | None) -> list[BackendState]:
    """One state per QPU of a cluster's inventory (``QPUConfig``s), named as the cluster names them.

    What ``qubelet render --inventory`` and the generate step plan for: the cluster's QPUs, each
    with its inventory width and calibration, instead of the one embedded fake.
    """
    states = []
    for qpu in qpus:
        target = QPUTarget(name=qpu.name, spec=qpu.backend, server_url=qpu.endpoint)
        state = qpu_state(target, qpu.qubits, qpu.fidelity_2q, qpu.readout_fidelity, mitigation)
        states.append(replace(state, model=qpu.model, calibration_time=qpu.calibration_time))
    return states


def probe_seed(seed: int) -> int:
    """Sampling seed of a batch's probe circuit: independent of its subexperiments' seeds."""
    return (seed * 1_000_003 + 104_729) & ((1 << 63) - 1)


def folded_seed(seed: int, scale: int) -> int:
    """Sampling seed of a folded copy: the circuit's own at scale 1, independent otherwise."""
    if scale == 1:
        return seed
    return (seed * 1_000_003 + scale * 7919) & ((1 << 63) - 1)


def _measured_physical_qubits(circuit: QuantumCircuit) -> dict[int, int]:
    """Map each clbit index to the qubit last measured into it."""
    mapping: dict[int, int] = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            mapping[circuit.find_bit(inst.clbits[0]).index] = circuit.find_bit(inst.qubits[0]).index
    return mapping
