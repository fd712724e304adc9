"""Issue 21's smaller defects, each through the interface a user meets it in."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from oracle import TOLERANCE, exact_values
from qiskit import QuantumCircuit, qpy
from qiskit.circuit.library import efficient_su2
from test_pipeline_user_defects import width_tutorial_circuit

from pipeline import api
from qubelet.cli import attach_dash_values, main


def _qpy(path: Path, circuit: QuantumCircuit) -> Path:
    with path.open("wb") as handle:
        qpy.dump(circuit, handle)
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["run", *args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_width_that_fits_runs_uncut(tmp_path: Path) -> None:
    circuit = width_tutorial_circuit()
    result = api.run(circuit, ["ZZII", "XIXI"], run_dir=tmp_path, backends=("exact",), max_subcircuit_width=4)
    assert result.summary["cuts"] == 0 and result.summary["subcircuit_widths"] == {"A": 4}
    assert result.summary["coefficient_terms"] == 1
    for label, exact in zip(["ZZII", "XIXI"], exact_values(circuit, ["ZZII", "XIXI"]), strict=True):
        assert abs(result.values[label] - exact) <= TOLERANCE


def test_run_without_run_dir_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = api.run(width_tutorial_circuit(), ["ZZII"], "AABB", shots=100, backends=("cpu",))
    assert result.run_dir is None and result.values["ZZII"] == pytest.approx(result.exact["ZZII"], abs=0.3)
    assert list(scratch.iterdir()) == []


def test_empty_qasm_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.qasm"
    path.write_text("\n")
    code, _out, err = _run(
        capsys, "--circuit", str(path), "--partition", "AB", "--run-dir", str(tmp_path / "r")
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line == f"qubelet: error: {path}: empty file, expected an OpenQASM 3 circuit"


def test_text_file_named_qpy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "circuit.qpy"
    path.write_text("OPENQASM 3.0;\nqubit[2] q;\n")
    code, _out, err = _run(
        capsys, "--circuit", str(path), "--partition", "AB", "--run-dir", str(tmp_path / "r")
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "not a QPY file" in line and "upgrade" not in line


def test_unbound_parameters_fail_before_the_cost_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _qpy(tmp_path / "ansatz.qpy", efficient_su2(4, entanglement="linear", reps=1))
    code, out, err = _run(
        capsys,
        "--circuit",
        str(path),
        "--partition",
        "AABB",
        "--backends",
        "exact",
        "--run-dir",
        str(tmp_path / "r"),
    )
    assert code == 2
    assert "cost:" not in out
    (line,) = err.strip().splitlines()
    assert "unbound parameters" in line


@pytest.mark.parametrize("form", ["separate", "attached"])
def test_an_observable_with_a_leading_minus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    circuit = width_tutorial_circuit()
    path = _qpy(tmp_path / "c.qpy", circuit)
    run_dir = tmp_path / "r"
    flag = ["--observables", "-XZII"] if form == "separate" else ["--observables=-XZII"]
    code, out, err = _run(
        capsys,
        "--circuit",
        str(path),
        "--partition",
        "AABB",
        *flag,
        "--backends",
        "exact",
        "--run-dir",
        str(run_dir),
    )
    assert code == 0, err
    assert "coefficient terms), exact distributions, policy" in out
    (obs,) = json.loads((run_dir / "summary.json").read_text())["observables"]
    assert obs["name"] == "-XZII"
    assert obs["value"] == pytest.approx(-exact_values(circuit, ["XZII"])[0], abs=TOLERANCE)


def test_only_observable_values_are_attached() -> None:
    assert attach_dash_values(["run", "--observables", "-0.5*ZZII", "-v"]) == [
        "run",
        "--observables=-0.5*ZZII",
        "-v",
    ]
    assert attach_dash_values(["run", "--observables", "-v"]) == ["run", "--observables", "-v"]
    assert attach_dash_values(["run", "--shots", "-XZ"]) == ["run", "--shots", "-XZ"]
