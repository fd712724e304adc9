"""Regressions from running qiskit-addon-cutting users' circuits: each failed before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit, qpy
from qiskit.circuit import Gate, Instruction, Parameter
from qiskit.circuit.library import efficient_su2

from pipeline import stages
from pipeline.backends.simulators import AerStatevectorBackend
from pipeline.config import RunConfig
from pipeline.executor import LocalExecutor
from qubelet.cli import main

#: The width-reduction tutorial's observables and its signed sum as one observable.
TUTORIAL_OBSERVABLES = (
    "ZZII",
    "IZZI",
    "IIZZ",
    "XIXI",
    "ZIZZ",
    "IXIX",
    "tutorial=ZZII+IZZI-IIZZ+XIXI+ZIZZ+IXIX",
)


def width_tutorial_circuit(entanglement: str = "linear", reps: int = 2) -> QuantumCircuit:
    """qiskit-addon-cutting tutorial 1: efficient_su2(4), every parameter 0.4."""
    circuit = efficient_su2(4, entanglement=entanglement, reps=reps)
    circuit.assign_parameters([0.4] * len(circuit.parameters), inplace=True)
    return circuit


def mirror_circuit() -> QuantumCircuit:
    """Halves AB|CD built alike, joined by one CZ: many subexperiments are equal in A and B."""
    circuit = QuantumCircuit(4)
    for offset in (0, 2):
        circuit.ry(0.7, offset)
        circuit.ry(1.1, offset + 1)
        circuit.cx(offset, offset + 1)
    circuit.cz(1, 3)
    for offset in (0, 2):
        circuit.ry(0.3, offset)
        circuit.cx(offset, offset + 1)
    return circuit


def run_user(tmp_path: Path, circuit: QuantumCircuit, partition: str | None, **options: object) -> dict:
    config = RunConfig(
        run_dir=tmp_path,
        partition=partition,
        backends=("cpu",),
        **options,  # type: ignore[arg-type]
    )
    summary, _ = LocalExecutor(config, circuit=circuit).run()
    return summary


def assert_within(summary: dict, sigmas: float = 4.0) -> None:
    for obs in summary["observables"]:
        assert obs["exact"] is not None, obs
        assert obs["stderr"] > 0, obs
        assert abs(obs["error"]) <= sigmas * obs["stderr"], obs


@pytest.mark.parametrize("partition", ["AABB", "BBAA"])
def test_width_tutorial_with_its_own_partition(tmp_path: Path, partition: str) -> None:
    """Two of its subexperiments are equal in A and B: this crashed (AABB) or mixed them (BBAA)."""
    summary = run_user(
        tmp_path, width_tutorial_circuit(), partition, shots=2000, seed=5, observables=TUTORIAL_OBSERVABLES
    )
    assert_within(summary)
    by_name = {o["name"]: o for o in summary["observables"]}
    parts = ["ZZII", "IZZI", "IIZZ", "XIXI", "ZIZZ", "IXIX"]
    signs = [1, 1, -1, 1, 1, 1]
    assert by_name["tutorial"]["value"] == pytest.approx(
        sum(s * by_name[p]["value"] for s, p in zip(signs, parts, strict=True)), abs=1e-9
    )
    assert summary["cuts"] == 2 and summary["gate_cuts"] == 2 and summary["wire_cuts"] == 0


def test_equal_subexperiments_of_two_partitions_get_their_own_samples(tmp_path: Path) -> None:
    """A result shared by the two factors of one product biases it by Var/shots."""
    manifest = stages.prepare(
        RunConfig(run_dir=tmp_path, partition="AABB", backends=("cpu",), observables=("Z0Z2",)),
        circuit=mirror_circuit(),
    )
    store_a = [(tmp_path / "subexperiments" / f"{k}.qpy").read_bytes() for k in manifest.cut.keys["A"]]
    store_b = [(tmp_path / "subexperiments" / f"{k}.qpy").read_bytes() for k in manifest.cut.keys["B"]]
    equal_circuits = sum(a == b for a, b in zip(store_a, store_b, strict=True))
    assert equal_circuits > 0  # the circuit really is mirror-symmetric
    assert not set(manifest.cut.keys["A"]) & set(manifest.cut.keys["B"])


def test_initialize_takes_the_shot_based_path() -> None:
    """``initialize`` hides a reset: deferring it as a unitary collapses the first measurement."""
    circuit = QuantumCircuit(1, 2)
    circuit.h(0)
    circuit.measure(0, 0)
    circuit.initialize([0, 1], [0])
    circuit.measure(0, 1)
    backend = AerStatevectorBackend("cpu")
    (counts,) = backend.run_batch([circuit], 4000, [11])
    probabilities = np.zeros(4)
    probabilities[counts.outcomes] = counts.counts / counts.shots
    expected = np.array([0.0, 0.0, 0.5, 0.5])  # bit 1 is always 1, bit 0 a fair coin
    assert 0.5 * np.abs(probabilities - expected).sum() < 0.05
    (again,) = backend.run_batch([circuit], 4000, [11])
    assert again.counts.tolist() == counts.counts.tolist()


def test_deferred_batches_are_reproducible() -> None:
    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    backend = AerStatevectorBackend("cpu")
    first = backend.run_batch([circuit, circuit], 1000, [1, 2])
    second = backend.run_batch([circuit, circuit], 1000, [1, 2])
    assert [c.counts.tolist() for c in first] == [c.counts.tolist() for c in second]


def test_non_unitary_circuit_gets_a_density_matrix_reference(tmp_path: Path) -> None:
    from qiskit.quantum_info import DensityMatrix, SparsePauliOp

    circuit = QuantumCircuit(4)
    circuit.h(range(4))
    circuit.cx(1, 2)
    circuit.initialize([0, 1], [1])  # a reset of an entangled qubit: no single statevector
    circuit.cx(1, 2)
    summary = run_user(tmp_path, circuit, "AABB", shots=500, observables=("Z1Z2",))
    (obs,) = summary["observables"]
    expected = float(np.real(DensityMatrix(circuit).expectation_value(SparsePauliOp("IZZI"))))
    assert summary["exact_reason"] is None
    assert obs["exact"] == pytest.approx(expected, abs=1e-9)
    assert abs(obs["error"]) <= 4 * obs["stderr"]


def test_no_exact_reference_beyond_the_density_matrix_limit(tmp_path: Path) -> None:
    circuit = QuantumCircuit(13)
    circuit.h(range(13))
    circuit.cx(5, 6)
    circuit.reset(1)
    summary = run_user(tmp_path, circuit, "A" * 6 + "B" * 7, shots=200, observables=("Z5Z6",))
    (obs,) = summary["observables"]
    assert obs["exact"] is None and obs["error"] is None
    assert "not unitary" in summary["exact_reason"] and "density-matrix limit" in summary["exact_reason"]


def test_summary_reports_the_cuts_of_a_user_circuit(tmp_path: Path) -> None:
    circuit = width_tutorial_circuit(reps=1)  # linear: one crossing CNOT per rep
    summary = run_user(tmp_path, circuit, "AABB", shots=300, observables=("ZZII",))
    assert summary["cuts"] == 1 and summary["coefficient_terms"] == 6


def _write_qpy(path: Path, circuit: QuantumCircuit) -> Path:
    with path.open("wb") as handle:
        qpy.dump(circuit, handle)
    return path


def _unbound() -> QuantumCircuit:
    circuit = QuantumCircuit(4)
    circuit.ry(Parameter("theta"), 0)
    circuit.cx(1, 2)
    return circuit


def _three_qubit_across() -> QuantumCircuit:
    circuit = QuantumCircuit(4)
    circuit.h(0)
    circuit.ccx(0, 1, 2)
    return circuit


def _opaque() -> QuantumCircuit:
    circuit = QuantumCircuit(4)
    circuit.h(0)
    circuit.append(Instruction("mystery", 1, 0, []), [3])
    circuit.cx(1, 2)
    return circuit


def _opaque_gate() -> QuantumCircuit:
    circuit = QuantumCircuit(4)
    circuit.append(Gate("blackbox", 2, []), [0, 1])
    circuit.cx(1, 2)
    return circuit


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_unbound, "1 unbound parameters (theta)"),
        (_three_qubit_across, "'ccx' (instruction 1, qubits 0,1,2) spans partitions A,B"),
        (_opaque, "unsupported instruction 'mystery' (instruction 1, qubits 3)"),
        (_opaque_gate, "unsupported instruction 'blackbox'"),
    ],
)
def test_bad_circuits_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], build, message: str
) -> None:
    path = _write_qpy(tmp_path / "c.qpy", build())
    run_dir = str(tmp_path / "run")
    flags = ["--partition", "AABB", "--backends", "cpu", "--shots", "100", "--no-progress"]
    code = main(["run", "--circuit", str(path), *flags, "--run-dir", run_dir])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "healthy" not in err
    assert not (tmp_path / "run" / "results").exists()  # refused before anything ran


def test_a_run_directory_resumes_only_its_own_circuit(tmp_path: Path) -> None:
    options = {"run_dir": tmp_path, "partition": "AABB", "backends": ("cpu",), "observables": ("ZZII",)}
    stages.prepare(RunConfig(**options), circuit=width_tutorial_circuit())  # type: ignore[arg-type]
    again = stages.prepare(RunConfig(**options), circuit=width_tutorial_circuit())  # type: ignore[arg-type]
    assert again.circuit_sha256
    with pytest.raises(stages.PipelineError, match="another circuit"):
        stages.prepare(RunConfig(**options), circuit=mirror_circuit())  # type: ignore[arg-type]
