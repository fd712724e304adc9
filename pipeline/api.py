"""The Python API of the pipeline: estimate observables of a circuit by cutting it.

``qubelet run`` is a thin shell around :func:`execute`; a variational optimiser calls
:func:`run` in its loop::

    from pipeline.api import run

    result = run(circuit, ["ZZII+IZZI-0.5*XIXI"], partition="AABB",
                 parameter_values=theta, shots=2000, backends=("cpu",))
    energy, sigma = result.values["ZZII+IZZI-0.5*XIXI"], result.stderrs["ZZII+IZZI-0.5*XIXI"]

A parametrised circuit is cut once: later calls with the same circuit, observables and cut
options reuse the cut (:class:`~pipeline.stages.CutTemplate`) and only bind the new values, so an
iteration costs binding plus execution, not cutting. ``result.seconds`` shows the split.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

from pipeline.circuits import observables_from_json
from pipeline.config import RunConfig
from pipeline.cutgates import fresh_cut_gates
from pipeline.errors import PipelineError
from pipeline.executor import ExecutionReport, LocalExecutor, ProgressSink
from pipeline.stages import CostEstimate, CutTemplate, make_template, save_inputs
from pipeline.store import ArtifactStore, canonical_qpy, write_json
from pipeline.timing import StageClock

#: Observables as the API takes them: one spec string ("ZZII+0.5*XIXI", "energy=Z0Z1"), a list
#: of them, a SparsePauliOp (real coefficients), or a mapping of names to SparsePauliOps/specs.
Observables: TypeAlias = str | SparsePauliOp | Sequence[str] | Mapping[str, SparsePauliOp | str]


@dataclass
class RunResult:
    """What one run returns: values, standard errors and exact references per observable."""

    values: dict[str, float]
    stderrs: dict[str, float]
    exact: dict[str, float | None]
    #: per observable, the zero-noise extrapolation's systematic term (0 without ZNE); compare
    #: errors with ``hypot(stderr, systematic)`` (see pipeline.mitigation.systematic)
    systematics: dict[str, float]
    #: per backend class: subexperiments run and seconds spent
    usage: dict[str, dict[str, float]]
    summary: dict[str, Any]
    #: the run directory; None when :func:`run` was given none (its scratch one is removed)
    run_dir: Path | None
    #: seconds per phase: cut (0 when the cut was reused), bind (re-expand), execute+reconstruct, total
    seconds: dict[str, float] = field(default_factory=dict)
    execution: ExecutionReport | None = None


def observable_specs(observables: Observables, num_qubits: int | None = None) -> tuple[str, ...]:
    """Normalise the accepted observable forms to the spec strings a RunConfig holds."""
    if isinstance(observables, str):
        return (observables,)
    if isinstance(observables, SparsePauliOp):
        return (_sparse_spec(None, observables),)
    if isinstance(observables, Mapping):
        return tuple(
            _sparse_spec(name, op) if isinstance(op, SparsePauliOp) else f"{name}={op}"
            for name, op in observables.items()
        )
    specs = []
    for entry in observables:
        if isinstance(entry, SparsePauliOp):
            specs.append(_sparse_spec(None, entry))
        elif isinstance(entry, str):
            specs.append(entry)
        else:
            raise PipelineError(f"observable {entry!r}: expected a string or a SparsePauliOp")
    return tuple(specs)


def _sparse_spec(name: str | None, op: SparsePauliOp) -> str:
    """The spec of a SparsePauliOp; unnamed, it is named by its terms as a person writes them.

    ``SparsePauliOp("IIIIZZ")`` is ``IIIIZZ`` (not ``1.0*IIIIZZ``), ``ZZ - 0.5 XX`` is
    ``ZZ-0.5*XX``: the key the results come back under.
    """
    coefficients = np.asarray(op.coeffs)
    if np.any(np.abs(coefficients.imag) > 1e-12):
        raise PipelineError(f"observable {name or op}: coefficients must be real")
    terms = [[label, float(c.real)] for label, c in zip(op.paulis.to_labels(), coefficients, strict=True)]
    if name:
        return observables_from_json([{"name": name, "terms": terms}], "observable")[0]
    parts = []
    for label, coefficient in terms:
        sign = "-" if coefficient < 0 else "+"
        magnitude = abs(coefficient)
        parts.append(f"{sign}{label}" if magnitude == 1.0 else f"{sign}{magnitude!r}*{label}")
    return "".join(parts).lstrip("+")


_TEMPLATES: OrderedDict[str, CutTemplate] = OrderedDict()
_TEMPLATE_CACHE_SIZE = 8


def _template_key(config: RunConfig, circuit: QuantumCircuit) -> str:
    """What the cut depends on: the circuit (parameters unbound), observables and cut options."""
    digest = hashlib.sha256(canonical_qpy(circuit))
    options = {
        "observables": list(config.observables or ()),
        "partition": config.partition,
        "max_subcircuit_width": config.max_subcircuit_width,
        "num_samples": config.num_samples,
        "max_subexperiments": config.max_subexperiments,
        # The seed picks find_cuts' search and the QPD draws; otherwise it only seeds the shots,
        # so an optimiser that reseeds every iteration still reuses the cut.
        "seed": config.seed if config.max_subcircuit_width or config.num_samples else None,
    }
    digest.update(json.dumps(options, sort_keys=True).encode())
    return digest.hexdigest()


def cut_template(
    config: RunConfig,
    circuit: QuantumCircuit | None,
    announce: Callable[[CostEstimate], None] | None = None,
) -> CutTemplate:
    """The cut of ``circuit`` under ``config``, computed once per process and then reused."""
    if circuit is None:
        return make_template(config, announce=announce)
    key = _template_key(config, circuit)
    template = _TEMPLATES.get(key)
    if template is None:
        parametrised = bool(circuit.parameters)
        template = make_template(config, circuit, allow_parameters=parametrised, announce=announce)
        _TEMPLATES[key] = template
        while len(_TEMPLATES) > _TEMPLATE_CACHE_SIZE:
            _TEMPLATES.popitem(last=False)
        return template
    _TEMPLATES.move_to_end(key)
    if announce is not None:
        announce(template.estimate)
    return replace(template, seconds=0.0)


def parameter_dict(
    circuit: QuantumCircuit, values: Sequence[float] | Mapping[str, float]
) -> dict[str, float]:
    """Values by parameter name, from a mapping or a row in ``circuit.parameters`` order."""
    names = [p.name for p in circuit.parameters]
    if isinstance(values, Mapping):
        given = {str(k): float(v) for k, v in values.items()}
        unknown = sorted(set(given) - set(names))
        missing = sorted(set(names) - set(given))
        if unknown or missing:
            raise PipelineError(
                f"parameter values: unknown {unknown[:4]} / missing {missing[:4]} "
                f"(the circuit's parameters: {', '.join(names[:6])})"
            )
        return given
    row = [float(v) for v in values]
    if len(row) != len(names):
        raise PipelineError(
            f"parameter values: {len(row)} given, the circuit has {len(names)} parameters "
            f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})"
        )
    return dict(zip(names, row, strict=True))


def execute(
    config: RunConfig,
    circuit: QuantumCircuit | None = None,
    *,
    parameter_values: Sequence[float] | Mapping[str, float] | None = None,
    progress: ProgressSink | None = None,
    announce: Callable[[CostEstimate], None] | None = None,
    lock_wait: float = 0.0,
    started_at: float | None = None,
) -> RunResult:
    """Run ``config`` end to end (``circuit`` overrides ``config.circuit_file``).

    ``lock_wait``: seconds to wait for another process's lock on the run directory.
    ``started_at``: when the user's wait began (``qubelet run`` passes its process start); the
    summary's wall time and its ``startup`` stage count from it (default: from this call).
    """
    started = time.perf_counter()
    now = time.time()
    clock = StageClock(origin=now if started_at is None else started_at)
    if started_at is not None:
        clock.add("startup", started_at, now)
    with clock.stage("cut"):
        if circuit is None and config.circuit_file is not None:
            from pipeline.circuits import load_circuit_file

            circuit = load_circuit_file(Path(config.circuit_file))
        if circuit is not None:  # cutting must neither mutate the caller's object nor depend on its past
            circuit = fresh_cut_gates(circuit)
        if circuit is not None and circuit.parameters and parameter_values is None:
            from pipeline.validate import check_bound

            check_bound(circuit)  # before the cost line: a circuit with free parameters never runs
        resuming = (Path(config.run_dir) / "manifest.json").exists()
        template = None if resuming else cut_template(config, circuit, announce)
    values = None
    if circuit is not None and (circuit.parameters or parameter_values is not None):
        if parameter_values is None:
            from pipeline.validate import check_bound

            check_bound(circuit)
        values = parameter_dict(circuit, [] if parameter_values is None else parameter_values)
    after_cut = time.perf_counter()
    with clock.stage("backends"):  # which backends this machine has (the executor probes them)
        executor = LocalExecutor(
            config,
            progress=progress,
            lock_wait=lock_wait,
            circuit=circuit,
            template=template,
            parameter_values=values,
        )
    summary, execution = executor.run(clock)
    finished = time.perf_counter()
    expand = executor.manifest.expand_seconds
    seconds = {
        "cut": round(template.seconds if template else 0.0, 4),
        # binding the set's values (re-expanding the QPD when a cut gate has parameters)
        "bind": expand,
        "execute_and_reconstruct": round(finished - after_cut - expand, 4),
        "total": round(finished - started, 4),
    }
    summary["seconds"] = seconds
    write_json(Path(config.run_dir) / "summary.json", summary)
    return _result(summary, config.run_dir, seconds, execution)


def _result(
    summary: dict[str, Any], run_dir: Path, seconds: dict[str, float], execution: ExecutionReport | None
) -> RunResult:
    observables = summary["observables"]
    return RunResult(
        values={o["name"]: o["value"] for o in observables},
        stderrs={o["name"]: o["stderr"] for o in observables},
        systematics={o["name"]: float(o.get("systematic", 0.0)) for o in observables},
        exact={o["name"]: o["exact"] for o in observables},
        usage=summary["backends"],
        summary=summary,
        run_dir=Path(run_dir),
        seconds=seconds,
        execution=execution,
    )


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse, in one line with a "did you mean", an option that is no RunConfig field."""
    import dataclasses
    import difflib

    fields = [
        f.name for f in dataclasses.fields(RunConfig) if f.name not in ("run_dir", "observables", "partition")
    ]
    for name in options:
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (options: {', '.join(sorted(fields))})"
            raise PipelineError(f"unknown run option {name!r}{hint}")


def run(
    circuit: QuantumCircuit,
    observables: Observables,
    partition: str | None = None,
    *,
    parameter_values: Sequence[float] | Mapping[str, float] | None = None,
    run_dir: Path | str | None = None,
    **options: Any,
) -> RunResult:
    """Estimate ``observables`` on ``circuit`` by cutting it, and return values and errors.

    Args:
        circuit: the uncut circuit; it may contain ``CutWire`` markers, ``Move`` instructions,
            cut gates, and (with ``parameter_values``) unbound parameters.
        observables: Pauli labels, indexed products (``Z0Z3``), ``sumZ``, weighted sums
            (``"ZZII-0.5*XIXI"``), named specs (``"energy=..."``) or SparsePauliOps.
        partition: one label per qubit (``"AABB"``); None to follow the circuit's cut markers
            or, with ``max_subcircuit_width``, the cuts ``find_cuts`` chooses.
        parameter_values: one value per parameter (``circuit.parameters`` order) or by name.
        run_dir: where artifacts go (default: a temporary directory, removed before returning;
            ``result.run_dir`` is then None).
        **options: any :class:`~pipeline.config.RunConfig` field (``shots``, ``seed``,
            ``backends``, ``policy``, ``max_subcircuit_width``, ``num_samples``, ...).

    Returns:
        A :class:`RunResult`; ``result.seconds["cut"]`` is 0 when an earlier call's cut was reused.
    """
    check_options(options)
    if run_dir is None:
        # Nothing is left behind: the artifacts live in a scratch directory removed on return.
        with tempfile.TemporaryDirectory(prefix="qubelet-run-") as scratch:
            result = run(
                circuit, observables, partition, parameter_values=parameter_values, run_dir=scratch, **options
            )
        result.run_dir = None
        return result
    config = RunConfig(
        run_dir=Path(run_dir),
        observables=observable_specs(observables, circuit.num_qubits),
        partition=partition,
        **options,
    )
    return execute(config, circuit, parameter_values=parameter_values)


def load_parameter_sets(path: Path) -> list[list[float]] | list[dict[str, float]]:
    """Rows of parameter values from ``--parameters FILE`` (JSON or NPZ), one row per run.

    JSON: a list of rows (values in ``circuit.parameters`` order) or of ``{name: value}``
    objects. NPZ: a 2-D array named ``values`` (or the only array), one row per run.
    """
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                only = data.files[0] if len(data.files) == 1 else None
                name = "values" if "values" in data.files else only
                if name is None:
                    raise PipelineError(f"{path}: expected an array named 'values' (found {data.files})")
                array = np.asarray(data[name], dtype=float)
            if array.ndim == 1:
                array = array[None, :]
            if array.ndim != 2 or not array.size:
                raise PipelineError(f"{path}: expected a 2-D array, one row per parameter set")
            return [list(map(float, row)) for row in array]
        data = json.loads(path.read_text())
    except PipelineError:
        raise
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such parameters file") from None
    except (ValueError, OSError) as exc:
        raise PipelineError(f"{path}: not a valid JSON or NPZ parameters file ({exc})") from None
    if not isinstance(data, list) or not data:
        raise PipelineError(f"{path}: expected a non-empty JSON list, one entry per parameter set")
    if all(isinstance(row, dict) for row in data):
        try:
            return [{str(k): float(v) for k, v in row.items()} for row in data]
        except (TypeError, ValueError):
            raise PipelineError(f"{path}: every parameter value must be a number") from None
    if all(isinstance(row, list) for row in data):
        try:
            return [[float(v) for v in row] for row in data]
        except (TypeError, ValueError):
            raise PipelineError(f"{path}: every parameter value must be a number") from None
    raise PipelineError(f"{path}: rows must all be lists of numbers or all {{name: value}} objects")


def sweep(
    config: RunConfig,
    circuit: QuantumCircuit,
    parameter_sets: Sequence[Sequence[float] | Mapping[str, float]],
    *,
    progress: ProgressSink | None = None,
    announce: Callable[[CostEstimate], None] | None = None,
    on_result: Callable[[int, RunResult], None] | None = None,
    lock_wait: float = 0.0,
) -> list[RunResult]:
    """One run per parameter set, cut once; results under ``<run_dir>/sets/NNNN``.

    ``<run_dir>/sweep.json`` lists every set's values, observables and per-phase seconds.
    """
    if not circuit.parameters:
        raise PipelineError("--parameters given, but the circuit has no unbound parameters")
    root = Path(config.run_dir)
    results = []
    rows = []
    for index, values in enumerate(parameter_sets):
        named = parameter_dict(circuit, values)
        result = execute(
            replace(config, run_dir=root / "sets" / f"{index:04d}"),
            circuit,
            parameter_values=named,
            progress=progress,
            announce=announce if index == 0 else None,
            lock_wait=lock_wait,
        )
        results.append(result)
        rows.append(
            {
                "set": index,
                "parameters": named,
                "values": result.values,
                "stderrs": result.stderrs,
                "systematics": result.systematics,
                "exact": result.exact,
                "seconds": result.seconds,
            }
        )
        if on_result is not None:
            on_result(index, result)
    # The sweep's own directory keeps the unbound circuit (each set's has its bound one).
    save_inputs(ArtifactStore(root), circuit, cut_template(config, circuit).target)
    write_json(root / "sweep.json", {"sets": rows})
    return results
