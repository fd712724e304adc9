"""The three stages of a run — generate, execute a batch, reconstruct — as plain functions.

The local executor calls them in-process; ``qubelet task generate|execute|reconstruct`` calls
them in the containers of the Argo workflow. Both read and write the same run directory
(:mod:`pipeline.store`), which is what makes a cluster run and a laptop run interchangeable and
every run resumable: a stage only ever adds files, and skips work whose result already exists.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit, qpy

from pipeline.backends.base import Backend, Counts
from pipeline.backends.factory import available_backends, make_backend
from pipeline.backends.qpu import inventory_states
from pipeline.circuits import (
    CutTarget,
    build_target,
    default_observables,
    exact_reference,
    hardware_efficient_ansatz,
    load_circuit_file,
    split_halves,
)
from pipeline.config import RunConfig
from pipeline.cutting import (
    CutProblem,
    CutResult,
    ParametricCutError,
    generate_subexperiments,
    locate_cuts,
    plan_cuts,
    store_subexperiments,
)
from pipeline.errors import PipelineError
from pipeline.estimate import RunEstimate, estimate_run
from pipeline.mitigation import MitigationConfig
from pipeline.mitigation.mirror import plan_mirror
from pipeline.mitigation.observed import BatchObservation, observe_batch
from pipeline.observable_summary import observable_estimates
from pipeline.planning import Batch, Plan, batch_decisions, decision_record, loop_settings_for
from pipeline.records import ExpectedRecord, problem_with
from pipeline.store import ArtifactStore, atomic_write, canonical_qpy, read_json, write_json
from pipeline.telemetry_log import backfill
from pipeline.validate import validate_circuit
from policy.interface import BackendState, CircuitFeatures, SelectionPolicy, TelemetryRow
from policy.registry import make_policy
from qubelet import klog

log = klog.get_logger("qubelet.pipeline")

MANIFEST_VERSION = 1
#: config fields that define *what* is computed; a run directory may be resumed only with equal ones
IDENTITY_FIELDS = (
    "qubits",
    "cuts",
    "shots",
    "seed",
    "observables",
    "circuit_file",
    "partition",
    "max_subcircuit_width",
    "num_samples",
    "mitigation",
    "zne_scales",
    "zne_extrapolation",
    "zne_fold",
)
#: the uncut circuit and its observables, saved in every run directory so any run can be
#: reproduced, or checked by another tool (observables.json reads back with --observables-file)
CIRCUIT_FILE = "circuit.qpy"
OBSERVABLES_FILE = "observables.json"


def subexperiment_seed(run_seed: int, key: str) -> int:
    """Per-subexperiment sampling seed: independent of batch composition and backend order."""
    digest = hashlib.sha256(f"{run_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def expected_record(manifest: Manifest, key: str) -> ExpectedRecord:
    """What the stored result of ``key`` must say to be reused by this run (see pipeline.records)."""
    config = manifest.config
    mitigation = config.mitigation_config()
    return ExpectedRecord(
        key=key,
        shots=config.shots,
        seed=subexperiment_seed(config.seed, key),
        num_clbits=manifest.features[key].num_clbits,
        qpu_backend=config.qpu_backend,
        mitigation=mitigation.level,
        folded_scales=tuple(s for s in mitigation.zne_scales if s != 1) if mitigation.zne else (),
        exact=config.exact,
    )


def results_to_compute(
    store: ArtifactStore, manifest: Manifest, keys: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """The keys among ``keys`` without a valid stored result, and why each invalid one is.

    Invalid results (truncated, edited, copied from another key, other shots or seed) are set
    aside as ``results/<key>.json.invalid`` and logged, so they are recomputed, never trusted.
    """
    todo: list[str] = []
    invalid: dict[str, str] = {}
    for key in keys:
        problem = store.result_problem(key, expected_record(manifest, key))
        if problem is None:
            continue
        todo.append(key)
        if problem != "missing":
            invalid[key] = problem
            aside = store.set_aside(key)
            log.warning(
                "invalid result set aside, recomputing", key=key[:12], reason=problem, kept=str(aside)
            )
    return todo, invalid


def user_default_observables(num_qubits: int, partition: str | None) -> tuple[str, ...]:
    """Defaults for a user circuit: Z on all qubits, the two ends, the boundary pair, sumZ."""
    names = ["Z" * num_qubits, f"Z0Z{num_qubits - 1}"]
    if partition is not None and len(partition) == num_qubits:
        boundary = next((i for i in range(1, num_qubits) if partition[i] != partition[i - 1]), None)
        if boundary is not None and boundary - 1 != 0 and boundary != num_qubits - 1:
            names.append(f"Z{boundary - 1}Z{boundary}")
    names.append("sumZ")
    return tuple(dict.fromkeys(names))


def build_cut_target(
    config: RunConfig, circuit: QuantumCircuit | None = None, *, allow_parameters: bool = False
) -> CutTarget:
    """The circuit and observables a config describes (built-in ansatz, the user's file or object).

    A user circuit is validated here, before anything is cut or run: an input problem must end
    as a one-line usage error, not as failed batches on every backend.
    """
    if circuit is None and config.circuit_file is not None:
        circuit = load_circuit_file(Path(config.circuit_file))
    if circuit is not None:
        validate_circuit(circuit, config.partition, allow_parameters=allow_parameters)
        partition = config.partition
        names = config.observables or user_default_observables(circuit.num_qubits, partition)
    else:
        circuit, partition = hardware_efficient_ansatz(config.qubits, config.cuts, config.seed)
        names = config.observables or default_observables(circuit.num_qubits, partition)
    return build_target(circuit, partition, names)


@dataclass
class CostEstimate:
    """What a run will cost, known before any subexperiment is generated."""

    subexperiments: int
    terms: int
    sampling_overhead: float
    gate_cuts: int
    wire_cuts: int
    widths: dict[str, int]
    num_samples: int | None

    def describe(self) -> str:
        """One line for the person about to wait for the run."""
        sampled = f" (QPD sampled: {self.num_samples} draws)" if self.num_samples else ""
        widths = ", ".join(f"{label}: {width}" for label, width in self.widths.items())
        return (
            f"cost: {self.gate_cuts} gate + {self.wire_cuts} wire cuts, {self.terms} coefficient terms, "
            f"{self.subexperiments} subexperiments{sampled}, sampling overhead {self.sampling_overhead:g}; "
            f"subcircuit widths {widths}"
        )


def estimate_cost(problem: CutProblem, num_samples: int | None) -> CostEstimate:
    """The cost of ``problem``: computed from the cut bases, before generating anything."""
    return CostEstimate(
        subexperiments=problem.subexperiments(num_samples),
        terms=problem.terms,
        sampling_overhead=problem.sampling_overhead,
        gate_cuts=problem.gate_cuts,
        wire_cuts=problem.wire_cuts,
        widths=problem.widths(),
        num_samples=num_samples,
    )


def check_cost(estimate: CostEstimate, limit: int) -> None:
    """Refuse, in one line, a run larger than ``limit`` subexperiments, and say what would fit."""
    if estimate.subexperiments <= limit:
        return
    drawn = min(estimate.terms, estimate.num_samples or estimate.terms)
    groups = max(1, estimate.subexperiments // max(1, drawn))
    suggestion = max(1, limit // groups)
    raise PipelineError(
        f"{estimate.subexperiments} subexperiments "
        f"({estimate.gate_cuts} gate + {estimate.wire_cuts} wire cuts, "
        f"{estimate.terms} coefficient terms, sampling overhead {estimate.sampling_overhead:g}) exceed "
        f"--max-subexperiments {limit}: sample the QPD with --num-samples {suggestion}, allow a wider "
        "--max-subcircuit-width, or raise --max-subexperiments"
    )


@dataclass
class CutTemplate:
    """A cut done once: the target, the library's problem and its (maybe parametrised) subexperiments.

    Why: a variational loop binds new parameter values every iteration; the cut, the cost check
    and the QPD expansion do not depend on them, so they are done once and each iteration only
    binds and stores the subexperiments (:func:`prepare`).
    """

    target: CutTarget
    problem: CutProblem
    subexperiments: dict[str, list[QuantumCircuit]]
    coefficients: list[tuple[float, str]]
    estimate: CostEstimate
    source: QuantumCircuit  #: the circuit as the user gave it (saved as circuit.qpy)
    seconds: float  #: time the cut took
    #: where to cut (markers and partition), when a cut gate has parameters: its QPD depends on
    #: their values, so each set re-expands it at these cut locations (``find_cuts`` is not rerun)
    per_set: CutTarget | None = None


def make_template(
    config: RunConfig,
    circuit: QuantumCircuit | None = None,
    *,
    allow_parameters: bool = False,
    announce: Callable[[CostEstimate], None] | None = None,
) -> CutTemplate:
    """Validate, choose the cuts, estimate and check the cost, then expand the QPD."""
    started = time.perf_counter()
    if circuit is None and config.circuit_file is not None:
        circuit = load_circuit_file(Path(config.circuit_file))
    target = build_cut_target(config, circuit, allow_parameters=allow_parameters)
    located = locate_cuts(target, max_width=config.max_subcircuit_width, seed=config.seed)
    per_set = None
    try:
        problem = plan_cuts(located)
    except ParametricCutError:
        # The cost does not depend on the values: estimate it with placeholders.
        per_set = located
        placeholder = {p.name: 0.1 + 0.01 * i for i, p in enumerate(located.circuit.parameters)}
        problem = plan_cuts(replace(located, circuit=_bind(located.circuit, placeholder)))
    estimate = estimate_cost(problem, config.num_samples)
    if announce is not None:
        announce(estimate)
    check_cost(estimate, config.max_subexperiments)
    # A parametrised circuit is expanded per set, from its bound subcircuits (see expand_for).
    expand_now = per_set is None and not target.circuit.parameters
    subexperiments, coefficients = (
        generate_subexperiments(problem, config.num_samples, config.seed) if expand_now else ({}, [])
    )
    return CutTemplate(
        target=target,
        problem=problem,
        subexperiments=subexperiments,
        coefficients=coefficients,
        estimate=estimate,
        source=circuit if circuit is not None else target.circuit,
        seconds=time.perf_counter() - started,
        per_set=per_set,
    )


def expand_for(
    template: CutTemplate, values: dict[str, float], num_samples: int | None, seed: int
) -> tuple[CutProblem, dict[str, list[QuantumCircuit]], list[tuple[float, str]]]:
    """The template's problem and subexperiments for one parameter set.

    A circuit without parameters reuses the template's subexperiments as they are. A parametrised
    one binds the few partitioned subcircuits and expands their QPD (the cut, the bases and the
    cost check stay the template's): the expansion is fast, binding every subexperiment is not.
    One whose cut gates carry parameters re-partitions at the same cut locations, because its
    QPD coefficients depend on the values.
    """
    if template.per_set is not None:
        problem = plan_cuts(replace(template.per_set, circuit=_bind(template.per_set.circuit, values)))
    elif not template.target.circuit.parameters:
        return template.problem, template.subexperiments, template.coefficients
    else:
        subcircuits = {label: _bind(c, values) for label, c in template.problem.subcircuits.items()}
        problem = replace(template.problem, subcircuits=subcircuits)
    subexperiments, coefficients = generate_subexperiments(problem, num_samples, seed)
    return problem, subexperiments, coefficients


def circuit_digest(circuit: QuantumCircuit) -> str:
    """What identifies a user's circuit across processes (names and register labels ignored)."""
    return hashlib.sha256(canonical_qpy(circuit)).hexdigest()


def _check_same_circuit(manifest: Manifest, config: RunConfig, source: QuantumCircuit | None) -> None:
    """A run directory resumes only the circuit it was cut from (same flags, other file: refused)."""
    if manifest.circuit_sha256 is None:
        return
    if source is None and config.circuit_file is not None:
        source = load_circuit_file(Path(config.circuit_file))
    if source is not None and circuit_digest(source) != manifest.circuit_sha256:
        raise PipelineError(
            f"{config.run_dir} holds a run of another circuit (its circuit.qpy differs); "
            "use another --run-dir"
        )


def _bind(circuit: QuantumCircuit, values: dict[str, float]) -> QuantumCircuit:
    if not circuit.parameters:
        return circuit
    return circuit.assign_parameters({p: values[p.name] for p in circuit.parameters})


def observables_json(target: CutTarget) -> list[dict[str, Any]]:
    """The target's observables in the ``--observables-file`` format (named, weighted)."""
    return [
        {
            "name": name,
            "terms": [
                [target.pauli_names[p], w]
                for p, w in zip(
                    target.observable_terms[name],
                    target.observable_weights.get(name, (1.0,) * len(target.observable_terms[name])),
                    strict=True,
                )
            ],
        }
        for name in target.observable_names
    ]


def save_inputs(store: ArtifactStore, circuit: QuantumCircuit, target: CutTarget) -> None:
    """Write circuit.qpy and observables.json (atomically, like every other artifact)."""
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    atomic_write(store.root / CIRCUIT_FILE, buffer.getvalue())
    write_json(store.root / OBSERVABLES_FILE, observables_json(target))


@dataclass
class Manifest:
    """``manifest.json``: what was cut, and everything reconstruction needs besides the counts."""

    run_id: str
    config: RunConfig
    cut: CutResult
    observable_names: list[str]
    pauli_names: list[str]
    observable_terms: dict[str, list[int]]
    exact: list[float] | None
    features: dict[str, CircuitFeatures] = field(default_factory=dict)
    #: per observable, the real weight of each of its Paulis (missing: all 1)
    observable_weights: dict[str, list[float]] = field(default_factory=dict)
    #: why ``exact`` is None (non-unitary circuit, too wide, unbound parameters)
    exact_reason: str | None = None
    #: width of the uncut circuit
    circuit_qubits: int | None = None
    #: parameter values bound into this run's circuit (a sweep point), by parameter name
    parameter_values: dict[str, float] | None = None
    #: seconds spent binding (or, for parametrised cut gates, re-expanding) and storing the cut
    expand_seconds: float = 0.0
    #: sha256 of the user's circuit (canonical QPY, parameters unbound): a resumed run must be of it
    circuit_sha256: str | None = None
    #: the run cuts a user's circuit (a file or an API object), not the built-in ansatz
    user_circuit: bool = False
    #: the subexperiments this process just cut, by key (not persisted): executing them from
    #: memory saves reading back every QPY file that was written a moment ago
    circuits: dict[str, QuantumCircuit] = field(default_factory=dict, repr=False, compare=False)

    def weights_of(self, name: str) -> list[float]:
        """The coefficient of each Pauli of observable ``name`` (1 for plain forms)."""
        return self.observable_weights.get(name) or [1.0] * len(self.observable_terms[name])

    def to_json(self) -> dict[str, Any]:
        """The manifest as stored in ``manifest.json``.

        For a user circuit, the config's ``qubits`` and ``cuts`` (the built-in ansatz's knobs,
        unused) are recorded as what the run is: the circuit's width and the cuts made.
        """
        config = self.config.to_json()
        if self.user_circuit:
            config["qubits"] = self.circuit_qubits
            config["cuts"] = self.cut.cuts
        return {
            "version": MANIFEST_VERSION,
            "run_id": self.run_id,
            "config": config,
            "cut": self.cut.to_json(),
            "observables": {
                "names": self.observable_names,
                "paulis": self.pauli_names,
                "terms": self.observable_terms,
                "weights": self.observable_weights,
            },
            "exact": self.exact,
            "exact_reason": self.exact_reason,
            "circuit_qubits": self.circuit_qubits,
            "parameter_values": self.parameter_values,
            "expand_seconds": self.expand_seconds,
            "circuit_sha256": self.circuit_sha256,
            "user_circuit": self.user_circuit,
            "features": {k: f.__dict__ for k, f in self.features.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path) -> Manifest:
        """Read ``manifest.json`` data; a malformed or foreign file is a one-line PipelineError."""
        if data.get("version") != MANIFEST_VERSION:
            raise PipelineError(f"{source}: manifest version {data.get('version')!r} is not supported")
        try:
            obs = data["observables"]
            return cls(
                run_id=data["run_id"],
                config=RunConfig.from_json(data["config"]),
                cut=CutResult.from_json(data["cut"]),
                observable_names=list(obs["names"]),
                pauli_names=list(obs["paulis"]),
                observable_terms={k: list(v) for k, v in obs["terms"].items()},
                exact=data.get("exact"),
                features={k: CircuitFeatures(**v) for k, v in data.get("features", {}).items()},
                observable_weights={k: [float(w) for w in v] for k, v in obs.get("weights", {}).items()},
                exact_reason=data.get("exact_reason"),
                circuit_qubits=data.get("circuit_qubits"),
                parameter_values=data.get("parameter_values"),
                expand_seconds=float(data.get("expand_seconds", 0.0)),
                circuit_sha256=data.get("circuit_sha256"),
                user_circuit=bool(data.get("user_circuit", False)),
            )
        except (KeyError, TypeError) as exc:
            raise PipelineError(f"{source}: malformed manifest ({exc})") from None


def load_manifest(run_dir: Path) -> Manifest:
    """The manifest of the run in ``run_dir``."""
    store = ArtifactStore(run_dir)
    return Manifest.from_json(read_json(store.manifest_path), store.manifest_path)


def load_config(run_dir: Path) -> RunConfig:
    """The RunConfig recorded in the run's manifest."""
    return load_manifest(run_dir).config


def load_plan(run_dir: Path) -> Plan:
    """The plan of the run in ``run_dir``."""
    store = ArtifactStore(run_dir)
    return Plan.from_json(read_json(store.plan_path))


def _identity(config: RunConfig, user_circuit: bool = False) -> dict[str, Any]:
    data = config.to_json()
    defaults = RunConfig().to_json()  # runs written before a field existed
    # A user circuit's width and cuts come from the circuit (checked by its digest), not the flags.
    derived = ("qubits", "cuts") if user_circuit or config.circuit_file is not None else ()
    return {key: data.get(key, defaults.get(key)) for key in IDENTITY_FIELDS if key not in derived}


def prepare(
    config: RunConfig,
    *,
    circuit: QuantumCircuit | None = None,
    template: CutTemplate | None = None,
    parameter_values: dict[str, float] | None = None,
    announce: Callable[[CostEstimate], None] | None = None,
) -> Manifest:
    """Cut the circuit into the run directory, or reuse the cut already there (resume).

    With a ``template`` the cut is not redone: its subexperiments are bound to
    ``parameter_values`` (a sweep point) and stored.
    """
    store = ArtifactStore(config.run_dir)
    if store.manifest_path.exists():
        manifest = load_manifest(config.run_dir)
        user = manifest.user_circuit or circuit is not None or config.circuit_file is not None
        if _identity(manifest.config, user) != _identity(config, user):
            before, now = _identity(manifest.config, user), _identity(config, user)
            differing = [k for k in IDENTITY_FIELDS if before.get(k) != now.get(k)]
            raise PipelineError(
                f"{config.run_dir} holds a different run ({', '.join(differing)} differ); "
                "use another --run-dir"
            )
        if parameter_values is not None and manifest.parameter_values != parameter_values:
            raise PipelineError(
                f"{config.run_dir} holds a run with other parameter values; use another --run-dir"
            )
        _check_same_circuit(manifest, config, template.source if template is not None else circuit)
        manifest.config = config
        return manifest
    if template is None:
        template = make_template(config, circuit, announce=announce)
    elif announce is not None:
        announce(template.estimate)
    values = parameter_values or {}
    missing = sorted({p.name for p in template.target.circuit.parameters} - set(values))
    if missing:
        raise PipelineError(f"no value for parameters {', '.join(missing[:4])}")
    target = replace(template.target, circuit=_bind(template.target.circuit, values))
    # The exact reference is one Aer statevector pass, which releases the GIL: it runs beside
    # the serialisation of the subexperiments (Python) instead of after it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="exact-reference") as pool:
        exact_future = pool.submit(exact_reference, target)
        expand_started = time.perf_counter()
        problem, bound, coefficients = expand_for(template, values, config.num_samples, config.seed)
        circuits: dict[str, QuantumCircuit] = {}
        cut, features = store_subexperiments(
            problem, bound, coefficients, store, config.num_samples, circuits=circuits
        )
        expand_seconds = time.perf_counter() - expand_started
        exact = exact_future.result()
    features = {k: CircuitFeatures(**{**f.__dict__, "shots": config.shots}) for k, f in features.items()}
    save_inputs(store, _bind(template.source, values), target)
    manifest = Manifest(
        run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        config=config,
        cut=cut,
        observable_names=list(target.observable_names),
        pauli_names=list(target.pauli_names),
        observable_terms={k: list(v) for k, v in target.observable_terms.items()},
        exact=exact.values,
        features=features,
        observable_weights={k: list(v) for k, v in target.observable_weights.items()},
        exact_reason=exact.reason,
        circuit_qubits=target.circuit.num_qubits,
        parameter_values=dict(parameter_values) if parameter_values is not None else None,
        expand_seconds=round(expand_seconds, 4),
        circuits=circuits,
        circuit_sha256=circuit_digest(template.source),
        user_circuit=circuit is not None or config.circuit_file is not None,
    )
    write_json(store.manifest_path, manifest.to_json())
    return manifest


def policy_for(config: RunConfig) -> SelectionPolicy:
    """The selection policy a config names, with a one-line error for a bad model file."""
    try:
        return make_policy(
            config.policy,
            seed=config.seed,
            model_path=config.policy_model,
            error_budget=config.error_budget,
            policy_config=config.policy_config,
        )
    except ValueError as exc:
        raise PipelineError(str(exc)) from None


def budget_of(policy: SelectionPolicy) -> float | None:
    """The per-subexperiment error budget a policy plans against (None: it has none)."""
    budget = getattr(policy, "error_budget", None)
    return None if budget is None else float(budget)


def plan_pending(
    manifest: Manifest,
    backend_states: Sequence[BackendState],
    unavailable: dict[str, str] | None = None,
    policy: SelectionPolicy | None = None,
) -> Plan:
    """Ask the policy where every subexperiment without a result runs; batch the answer."""
    config = manifest.config
    store = ArtifactStore(config.run_dir)
    pending, invalid = results_to_compute(store, manifest, manifest.cut.unique_keys())
    if not backend_states:
        raise PipelineError("no usable backend: " + "; ".join((unavailable or {}).values()))
    policy = policy or policy_for(config)
    decisions = policy.select([manifest.features[k] for k in pending], backend_states) if pending else []
    workers = {state.name: state.workers for state in backend_states}
    plan = Plan(
        run_id=manifest.run_id,
        policy=config.policy,
        batches=batch_decisions(decisions, config.batch_size, workers, states=backend_states),
        decisions={d.key: decision_record(d, backend_states, budget_of(policy)) for d in decisions},
        unavailable=dict(unavailable or {}),
        invalid=invalid,
    )
    write_json(store.plan_path, plan.to_json())
    return plan


def nominal_backend_states(
    config: RunConfig, inventory_qpus: Sequence[Any] | None = None
) -> list[BackendState]:
    """The requested backend classes as a cluster offers them, without probing this machine.

    ``qubelet render`` and the workflow's generate step plan for the cluster's GPU and QPU
    nodes, not for the pod or laptop that happens to do the planning. With the cluster's
    inventory (its ``QPUConfig``s), one QPU state per inventory QPU, under the cluster's names.
    """
    if inventory_qpus and "qpu" in config.backends:
        others = nominal_backend_states(
            replace(config, backends=tuple(b for b in config.backends if b != "qpu"))
        )
        return [*others, *inventory_states(inventory_qpus, config.mitigation_config())]
    states = []
    for kind in config.backends:
        if kind == "cpu":
            states.append(BackendState(name="cpu", kind="cpu", workers=config.cpu_workers))
        elif kind == "gpu":
            states.append(BackendState(name="gpu", kind="gpu", model="aer-statevector-gpu"))
        elif kind == "qpu":
            qpu = make_backend("qpu", qpu_spec=config.qpu_backend, mitigation=config.mitigation_config())
            states.append(qpu.state())
        else:  # the exact backend: a CPU simulator under its own name
            states.append(make_backend(kind, cpu_workers=config.cpu_workers).state())
    return states


@dataclass
class Preview:
    """A run planned from its cut alone, with what it will cost (nothing stored or executed)."""

    plan: Plan
    cost: CostEstimate
    estimate: RunEstimate
    cut_seconds: float


def plan_from_cut(
    config: RunConfig,
    *,
    states: Sequence[BackendState] | None = None,
    template: CutTemplate | None = None,
    parameter_values: dict[str, float] | None = None,
) -> Plan:
    """The plan a cluster run of ``config`` will make, from the cut's metadata alone.

    Nothing is written and nothing is executed: the subexperiments are cut, keyed and described
    in memory, and the policy plans them for the nominal backend classes. The cluster's generate
    step cuts the same circuit again into the shared volume and gets the same batches (it checks
    that it does), so ``qubelet render`` needs neither a scratch run directory nor the exact
    reference values.
    """
    return preview(config, states=states, template=template, parameter_values=parameter_values).plan


def preview(
    config: RunConfig,
    *,
    states: Sequence[BackendState] | None = None,
    template: CutTemplate | None = None,
    parameter_values: dict[str, float] | None = None,
    rehearse_loop: bool = False,
) -> Preview:
    """:func:`plan_from_cut` and the cost estimate of that plan (:mod:`pipeline.estimate`).

    ``states`` are the backends to plan for (default: the nominal cluster classes); a
    ``template`` (a parametrised circuit's cut) is bound to ``parameter_values`` first. With
    ``rehearse_loop`` (a local run's dry run) the estimate costs the split and batches the
    executor's scheduling loop would make under the predictions (:mod:`policy.rehearsal`), not
    the one-shot plan a cluster run's steps are rendered from.
    """
    template = template or make_template(config)
    problem, subexperiments, coefficients = expand_for(
        template, parameter_values or {}, config.num_samples, config.seed
    )
    cut, features = store_subexperiments(problem, subexperiments, coefficients, None, config.num_samples)
    tasks = [CircuitFeatures(**{**features[k].__dict__, "shots": config.shots}) for k in cut.unique_keys()]
    states = list(states) if states is not None else nominal_backend_states(config)
    policy = policy_for(config)
    decisions = policy.select(tasks, states) if tasks else []
    workers = {state.name: state.workers for state in states}
    batches = batch_decisions(decisions, config.batch_size, workers, states=states)
    plan = Plan(
        run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        policy=config.policy,
        batches=batches,
        decisions={d.key: decision_record(d, states, budget_of(policy)) for d in decisions},
    )
    jobs: dict[str, int] = {}
    for batch in batches:
        jobs[batch.backend] = jobs.get(batch.backend, 0) + 1
    assignment = {d.key: d.backend for d in decisions}
    try:
        if rehearse_loop and tasks:
            assignment, jobs = rehearse_run(config, tasks, states)
        estimate = estimate_run(
            subexperiments=template.estimate.subexperiments,
            tasks=tasks,
            assignment=assignment,
            batches=jobs,
            states=states,
            shots=config.shots,
            mitigation=config.mitigation_config(),
            model_path=config.policy_model,
        )
    except ValueError as exc:  # an unreadable model file: one line
        raise PipelineError(str(exc)) from None
    return Preview(plan=plan, cost=template.estimate, estimate=estimate, cut_seconds=template.seconds)


def rehearse_run(
    config: RunConfig, tasks: Sequence[CircuitFeatures], states: Sequence[BackendState]
) -> tuple[dict[str, str], dict[str, int]]:
    """The scheduling loop's split (key → backend) and batches per backend, on predicted times."""
    from pipeline.estimate import load_model
    from policy.rehearsal import batch_seconds, rehearse

    model, _ = load_model(config.policy_model)
    policy = policy_for(config)
    rehearsal = rehearse(
        policy,
        tasks,
        states,
        loop_settings_for(config, policy),
        predict=lambda work, state: batch_seconds(model, work, state, config.exact_probe_max_width),
        queue_wait=lambda state: float(model.queue_wait(state)),
    )
    return rehearsal.assignment(), rehearsal.batches()


def generate(
    config: RunConfig,
    *,
    probe_backends: bool = True,
    template: CutTemplate | None = None,
    parameter_values: dict[str, float] | None = None,
    states: Sequence[BackendState] | None = None,
) -> Plan:
    """Stage 1: cut (or reuse the cut), then plan the pending subexperiments.

    With ``probe_backends`` the plan uses only backends this machine can run (the local
    executor); without, it plans for every requested class (a cluster run). A ``template``
    with ``parameter_values`` is one set of a sweep (:func:`prepare`).
    """
    manifest = prepare(config, template=template, parameter_values=parameter_values)
    if not probe_backends:
        return plan_pending(manifest, list(states) if states is not None else nominal_backend_states(config))
    backends, unavailable = available_backends(
        config.backends,
        qpu_spec=config.qpu_backend,
        cpu_workers=config.cpu_workers,
        mitigation=config.mitigation_config(),
    )
    return plan_pending(manifest, [b.state() for b in backends], unavailable)


@dataclass
class BatchOutcome:
    """The result of executing one batch: which keys ran, which were skipped, and the time."""

    batch_id: str
    backend: str
    started: float
    finished: float
    executed: list[str]
    skipped: list[str]
    telemetry: list[TelemetryRow] = field(default_factory=list)
    #: when this batch first built its backend (the fake QPU's one-off start-up), else None:
    #: the build ran from here to ``started`` and shows on the timeline as its own bar
    build_started: float | None = None


#: A backend start-up shorter than this is not worth a bar on the timeline.
BUILD_SHOWN_SECONDS = 0.05


def execute_batch(
    run_dir: Path,
    batch_id: str | Batch,
    backend: Backend | None = None,
    *,
    queued_at: float | None = None,
    attempt: int = 1,
    manifest: Manifest | None = None,
    seen: BackendState | None = None,
) -> BatchOutcome:
    """Stage 2: run one batch on its backend and store each result; done keys are skipped.

    ``seen`` is the backend's state as the scheduling loop saw it when it dispatched the batch
    (our jobs and other tenants' queued ahead, calibration): what the telemetry rows record.
    """
    manifest = manifest or load_manifest(run_dir)
    config = manifest.config
    batch = batch_id if isinstance(batch_id, Batch) else load_plan(run_dir).batch(batch_id)
    store = ArtifactStore(run_dir)
    todo, _invalid = results_to_compute(store, manifest, batch.keys)
    skipped = [k for k in batch.keys if k not in todo]
    if backend is None:
        backend = make_backend(
            batch.backend if config.exact else batch.kind,
            qpu_spec=config.qpu_backend,
            cpu_workers=config.cpu_workers,
            mitigation=config.mitigation_config(),
        )
    if not todo:
        now = time.time()
        return BatchOutcome(batch.id, backend.name, now, now, [], skipped)
    load = getattr(backend, "load", None)
    loading = time.time()
    if callable(load):
        # A backend built on first use (the fake QPU): its one-off start-up is neither this
        # batch's run time nor a queue wait (policy fit would learn a service queue from it).
        load()
    started = time.time()
    startup = started - loading
    build_started = loading if startup >= BUILD_SHOWN_SECONDS else None
    in_memory = manifest.circuits
    circuits = [in_memory[k] if k in in_memory else store.get_circuit(k) for k in todo]
    seeds = [subexperiment_seed(config.seed, k) for k in todo]
    use_job_journal = getattr(backend, "use_job_journal", None)
    if use_job_journal is not None:  # a server QPU: a resumed run re-attaches to its jobs
        use_job_journal(store.jobs_dir)
    features = [manifest.features[k] for k in todo]
    observe = backend.kind == "qpu" and config.observe_errors
    run_probed = getattr(backend, "run_batch_probed", None)
    mirror = None
    if observe and callable(run_probed):  # too wide for the exact probe: a mirror in the job
        mirror = plan_mirror(circuits, features, config.exact_probe_max_width)
    mirror_counts = None
    if mirror is not None and callable(run_probed):
        counts, mirror_counts = run_probed(circuits, config.shots, seeds, mirror.circuit)
    else:
        counts = backend.run_batch(circuits, config.shots, seeds)
    finished = time.time()
    state = seen or backend.state()
    observation = None
    if observe:
        observation = observe_batch(
            circuits, counts, config.mitigation_config(), max_width=config.exact_probe_max_width,
            mirror=mirror, mirror_counts=mirror_counts, features=features, state=state,
        )  # fmt: skip
    rows: list[TelemetryRow] = []
    for index, (key, seed, result) in enumerate(zip(todo, seeds, counts, strict=True)):
        row = telemetry_row(
            manifest, batch, backend.name, backend.kind, state, key,
            started=started, finished=finished, batch_size=len(todo), attempt=attempt,
            queued_at=None if queued_at is None else queued_at + startup, startup_seconds=startup,
            # one measurement per probe: one row carries it (the first, or the mirrored one's)
            observation=observation if observation is not None and observation.index == index else None,
        )  # fmt: skip
        # The row rides in the result record too: a run killed between the two writes gets it
        # back into telemetry.jsonl on resume (pipeline.telemetry_log.backfill).
        store.put_result(
            key,
            result,
            shots=config.shots,
            seed=seed,
            qpu_backend=config.qpu_backend if backend.kind == "qpu" else None,
            mitigation=config.mitigation_config().level if backend.kind == "qpu" else None,
            backend=backend.name,
            kind=backend.kind,
            batch=batch.id,
            started=started,
            finished=finished,
            seconds=row["run_seconds"],
            telemetry=dict(row),
        )
        store.append_telemetry([dict(row)])  # per result, not per batch
        rows.append(row)
    return BatchOutcome(batch.id, backend.name, started, finished, todo, skipped, rows, build_started)


def execute_probe(
    run_dir: Path,
    batch: Batch,
    backend: Backend,
    key: str,
    *,
    queued_at: float | None = None,
    manifest: Manifest | None = None,
    seen: BackendState | None = None,
) -> BatchOutcome:
    """A probe-only job: the mirror circuit of subexperiment ``key`` alone on a QPU (no result).

    The scheduling loop sends one when the policy wants a QPU measured that its calibration
    alone keeps idle (``policy.loop``); its one telemetry row is marked ``probe_only``.
    """
    manifest = manifest or load_manifest(run_dir)
    config = manifest.config
    store = ArtifactStore(run_dir)
    run_probed = getattr(backend, "run_batch_probed", None)
    circuit = manifest.circuits[key] if key in manifest.circuits else store.get_circuit(key)
    mirror = plan_mirror([circuit], [manifest.features[key]], exact_max_width=-1)
    if not callable(run_probed) or mirror is None:  # nothing to probe with: an empty outcome
        now = time.time()
        return BatchOutcome(batch.id, backend.name, now, now, [], [])
    load = getattr(backend, "load", None)
    if callable(load):
        load()
    started = time.time()
    _, counts = run_probed([], config.shots, [], mirror.circuit)
    finished = time.time()
    state = seen or backend.state()
    observation = observe_batch(
        [], [], config.mitigation_config(), mirror=mirror, mirror_counts=counts,
        features=[manifest.features[key]], state=state,
    )  # fmt: skip
    row = telemetry_row(
        manifest, batch, backend.name, backend.kind, state, key, started=started, finished=finished,
        batch_size=0, queued_at=queued_at, attempt=1, observation=observation,
    )  # fmt: skip
    row["probe_only"] = True
    store.append_telemetry([dict(row)])
    return BatchOutcome(batch.id, backend.name, started, finished, [], [], [row])


def telemetry_row(
    manifest: Manifest,
    batch: Batch,
    backend: str,
    kind: Any,
    state: BackendState,
    key: str,
    *,
    started: float,
    finished: float,
    batch_size: int,
    queued_at: float | None,
    attempt: int,
    observation: BatchObservation | None,
    startup_seconds: float = 0.0,
) -> TelemetryRow:
    """The telemetry row of one result: what ran where, what was seen, how long it took."""
    feature = manifest.features[key]
    row = TelemetryRow(
        ts=started,
        run_id=manifest.run_id,
        task_id=f"{batch.id}/{key[:12]}",
        key=key,
        partition=feature.partition,
        backend=backend,
        backend_kind=kind,
        model=state.model,
        num_qubits=feature.num_qubits,
        depth=feature.depth,
        num_2q_gates=feature.num_2q_gates,
        num_clbits=feature.num_clbits,
        shots=manifest.config.shots,
        batch_size=batch_size,
        queue_wait_seconds=max(0.0, started - queued_at) if queued_at else 0.0,
        queue_depth=state.queue_depth,
        external_queue_depth=state.external_queue_depth,
        run_seconds=(finished - started) / max(batch_size, 1),
        success=True,
        error=None,
        attempt=attempt,
        fidelity_2q=state.fidelity_2q,
        readout_fidelity=state.readout_fidelity,
        calibration_time=state.calibration_time,
        mitigation=state.mitigation,
        mitigation_work=state.mitigation_work,
    )
    if observation is not None:
        row["observed_error"] = observation.error
        row["probe"] = observation.probe
    if startup_seconds > 1e-3:
        row["startup_seconds"] = round(startup_seconds, 6)
    return row


def backend_usage(infos: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per backend class: tasks run and seconds spent (from the stored results' records)."""
    usage: dict[str, dict[str, float]] = defaultdict(lambda: {"tasks": 0, "seconds": 0.0})
    for info in infos:
        # the exact backend is a CPU simulator to the scheduler, but not sampled shots to a reader
        entry = usage["exact" if info.get("backend") == "exact" else info.get("kind", "unknown")]
        entry["tasks"] += 1
        entry["seconds"] += float(info.get("seconds", 0.0))
    return {
        k: {"tasks": int(v["tasks"]), "seconds": round(v["seconds"], 6)} for k, v in sorted(usage.items())
    }


def reconstruct(run_dir: Path, wall_seconds: float | None = None) -> dict[str, Any]:
    """Stage 3: recombine all results into expectation values; write and return summary.json."""
    manifest = load_manifest(run_dir)
    store = ArtifactStore(run_dir)
    keys = manifest.cut.unique_keys()
    missing = [key for key in keys if not store.result_path(key).exists()]
    if missing:
        raise PipelineError(
            f"{run_dir}: {len(missing)} of {len(keys)} subexperiments have no result yet "
            "(run the execute steps first)"
        )
    # Each result file is read once: its counts feed the reconstruction, the rest the summary.
    records = {key: store.get_result_record(key) for key in keys}
    invalid = {key: p for key in keys if (p := problem_with(records[key], expected_record(manifest, key)))}
    if invalid:
        key, reason = next(iter(invalid.items()))
        raise PipelineError(
            f"{run_dir}: {len(invalid)} of {len(keys)} results are invalid (first: {key[:12]}: "
            f"{reason}); rerun the run to recompute them"
        )
    backfill(store, records)
    counts = {key: Counts.from_json(records[key]) for key in keys}
    mitigation = manifest.config.mitigation_config()
    observables = observable_estimates(manifest, counts)
    infos = list(records.values())
    if wall_seconds is None:
        wall_seconds = max(i["finished"] for i in infos) - min(i["started"] for i in infos)
    config = manifest.config
    summary = {
        "run_id": manifest.run_id,
        "qubits": manifest.circuit_qubits or len(build_partition(manifest)),
        "cuts": manifest.cut.cuts if manifest.circuit_qubits is not None else config.cuts,
        "gate_cuts": manifest.cut.gate_cuts,
        "wire_cuts": manifest.cut.wire_cuts,
        "sampling_overhead": manifest.cut.sampling_overhead,
        "num_samples": manifest.cut.num_samples,
        "exact_reason": manifest.exact_reason,
        "parameter_values": manifest.parameter_values,
        "subcircuit_widths": subcircuit_widths(manifest.cut),
        "shots": config.shots,
        "seed": config.seed,
        "policy": config.policy,
        "subexperiments": manifest.cut.counts_per_partition(),
        "distinct_subexperiments": manifest.cut.distinct_per_partition(),
        "coefficient_terms": len(manifest.cut.coefficients),
        "observables": observables,
        "backends": backend_usage(infos),
        "mitigation": mitigation_usage(mitigation, counts.values(), records.values(), config.shots),
        "wall_seconds": round(float(wall_seconds), 4),
    }
    write_json(store.summary_path, summary)
    return summary


def subcircuit_widths(cut: CutResult) -> dict[str, int]:
    """Qubits per partition of the cut circuit (wire cuts add qubits; idle ones belong to none)."""
    widths: dict[str, int] = {}
    for label in cut.qubit_labels:
        if label:
            widths[label] = widths.get(label, 0) + 1
    return dict(sorted(widths.items()))


def mitigation_usage(
    mitigation: MitigationConfig,
    counts: Iterable[Counts],
    records: Iterable[dict[str, Any]],
    shots: int,
) -> dict[str, Any]:
    """Per backend: the mitigation its results got, and the extra circuits and shots it cost."""
    per_backend: dict[str, dict[str, Any]] = {}
    for result, record in zip(counts, records, strict=True):
        name = str(record.get("backend", "unknown"))
        entry = per_backend.setdefault(
            name, {"level": "none", "extra_circuits": 0, "extra_shots": 0, "subexperiments": 0}
        )
        entry["subexperiments"] += 1
        if result.readout and mitigation.readout:
            entry["level"] = "zne" if (mitigation.zne and result.folded) else "readout"
        extra = len(result.folded)
        entry["extra_circuits"] += extra
        entry["extra_shots"] += extra * shots
    return {"requested": mitigation.to_json(), "backends": dict(sorted(per_backend.items()))}


def build_partition(manifest: Manifest) -> str:
    """The partition string of the run (from the config, or the built-in ansatz)."""
    config = manifest.config
    if config.partition:
        return config.partition
    size_a, size_b = split_halves(config.qubits)
    return "A" * size_a + "B" * size_b
