"""Python API defects of issue 21 (item 4): each test failed on the code before its fix.

- a ``cut_gates`` circuit object run twice (or drawn, or saved, before its first run) raised the
  library's raw ValueError about label suffixes: its cached decomposition kept unnumbered labels;
- ``parameter_values`` as a numpy array (what optimisers return) crashed on ``values or []``;
- a ``cut_gates`` circuit saved as QPY loads as an opaque ``qpd_2q``: it was cut as if it were
  one gate, Aer failed on every batch, and a run directory that can never resume was left behind.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit, qpy
from qiskit.circuit.library import efficient_su2
from qiskit.quantum_info import PauliList, SparsePauliOp, Statevector
from qiskit_addon_cutting import cut_gates, generate_cutting_experiments, partition_problem
from test_pipeline_user_defects import width_tutorial_circuit

from pipeline.api import run
from qubelet.cli import main

OBSERVABLES = ("ZZII", "IZZI", "IIZZ")


def _cut_between_1_and_2() -> QuantumCircuit:
    """Tutorial 1's circuit with its two 1-2 CNOTs replaced by cut gates, as the tutorial does."""
    circuit = width_tutorial_circuit().decompose()
    crossing = [
        i
        for i, inst in enumerate(circuit.data)
        if len(inst.qubits) == 2 and {circuit.find_bit(q).index for q in inst.qubits} == {1, 2}
    ]
    assert len(crossing) == 2
    cut, _bases = cut_gates(circuit, crossing)
    return cut


def _assert_close_to_exact(result: object, original: QuantumCircuit) -> None:
    """Within 4 stderr of the statevector value of the uncut circuit (computed here, not by qubelet)."""
    state = Statevector(original)
    for obs in result.summary["observables"]:  # type: ignore[attr-defined]
        exact = float(state.expectation_value(SparsePauliOp(obs["name"])).real)
        assert abs(obs["value"] - exact) <= 4 * obs["stderr"], (obs, exact)


def test_a_cut_gates_circuit_runs_again_and_is_left_untouched(tmp_path: Path) -> None:
    circuit = _cut_between_1_and_2()
    circuit.draw()  # what a notebook user does first: it builds (and caches) each cut gate's definition
    options = {"backends": ("cpu",), "shots": 4000}
    first = run(circuit, OBSERVABLES, run_dir=tmp_path / "1", **options)
    second = run(circuit, OBSERVABLES, run_dir=tmp_path / "2", seed=3, **options)
    _assert_close_to_exact(first, width_tutorial_circuit())
    _assert_close_to_exact(second, width_tutorial_circuit())
    assert first.summary["gate_cuts"] == second.summary["gate_cuts"] == 2
    # The user's object is still what the library accepts: its own flow on it works.
    problem = partition_problem(circuit, "AABB", observables=PauliList(list(OBSERVABLES)))
    subexperiments, _ = generate_cutting_experiments(problem.subcircuits, problem.subobservables, np.inf)
    assert len(subexperiments["A"]) == 36


def test_numpy_parameter_values(tmp_path: Path) -> None:
    circuit = efficient_su2(4, entanglement="linear", reps=2)
    theta = np.linspace(0.1, 1.2, len(circuit.parameters))
    options = {"backends": ("cpu",), "shots": 2000, "seed": 11}
    from_array = run(circuit, OBSERVABLES, "AABB", parameter_values=theta, run_dir=tmp_path / "a", **options)
    from_list = run(
        circuit, OBSERVABLES, "AABB", parameter_values=theta.tolist(), run_dir=tmp_path / "l", **options
    )
    assert from_array.values == from_list.values
    _assert_close_to_exact(from_array, circuit.assign_parameters(theta))


def test_a_cut_gates_circuit_saved_as_qpy_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buffer = io.BytesIO()
    qpy.dump(_cut_between_1_and_2(), buffer)
    path = tmp_path / "cut.qpy"
    path.write_bytes(buffer.getvalue())
    run_dir = tmp_path / "run"
    # ABBB: the opaque qpd_2q lies inside partition B, so the library cuts only the other gates.
    flags = ["--partition", "ABBB", "--backends", "cpu", "--shots", "100", "--no-progress"]
    code = main(["run", "--circuit", str(path), *flags, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "'qpd_2q' 'cut_cx', qubits 1,2) is a cut gate without its decomposition" in err
    assert "Traceback" not in err and "healthy" not in err and "cost:" not in err
    assert not run_dir.exists()  # nothing half-written to resume
