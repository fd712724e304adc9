"""``qubelet run``: the demo path, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qiskit import qpy

from pipeline.circuits import hardware_efficient_ansatz
from qubelet.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_prints_table_and_writes_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        [
            "run",
            "--qubits",
            "6",
            "--cuts",
            "2",
            "--shots",
            "800",
            "--backends",
            "cpu",
            "--run-dir",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0
    assert "observable" in out and "reconstructed" in out and "exact" in out
    assert "A: 36" in out  # 6^2 coefficient terms per partition
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["subexperiments"] == {"A": 36, "B": 36}
    assert (tmp_path / "timeline.png").stat().st_size > 1000


@pytest.fixture
def bad_qpy(tmp_path: Path) -> Path:
    path = tmp_path / "bad.qpy"
    path.write_bytes(b"QISKIT but not really")
    return path


@pytest.fixture
def good_qpy(tmp_path: Path) -> Path:
    circuit, _ = hardware_efficient_ansatz(6, 1, seed=0)
    path = tmp_path / "good.qpy"
    with path.open("wb") as handle:
        qpy.dump(circuit, handle)
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--backends", "cpu,tpu"], "unknown backend 'tpu'"),
        (["--observables", "Q7"], "unknown observable 'Q7'"),
        (["--qubits", "4", "--cuts", "3"], "4 qubits are too few for 3 cuts"),
        (["--policy", "fastest"], "unknown policy 'fastest'"),
        (["--shots", "0"], "shots must be at least 1"),
    ],
)
def test_bad_flags_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, _, err = run_cli(["run", "--run-dir", str(tmp_path / "r"), "--no-progress", *args], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("qubelet: error:")]
    assert len(lines) == 1 and expected in lines[0], err


def test_malformed_and_mismatched_circuits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_qpy: Path, good_qpy: Path
) -> None:
    code, _, err = run_cli(
        ["run", "--circuit", str(bad_qpy), "--partition", "AAABBB", "--run-dir", str(tmp_path / "a")], capsys
    )
    assert code == 2 and "not a valid QPY circuit" in err
    code, _, err = run_cli(
        ["run", "--circuit", str(good_qpy), "--partition", "AAB", "--run-dir", str(tmp_path / "b")], capsys
    )
    assert code == 2 and "has 3 labels but the circuit has 6 qubits" in err
    code, _, err = run_cli(["run", "--circuit", str(good_qpy), "--run-dir", str(tmp_path / "c")], capsys)
    assert code == 2 and "needs --partition" in err


def test_missing_token_file_is_named_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUBELET_QPU_BACKEND", "iqm")
    monkeypatch.setenv("IQM_SERVER_URL", "https://iqm.invalid/station")
    monkeypatch.setenv("IQM_TOKENS_FILE", str(tmp_path / "absent-tokens.json"))
    code, _, err = run_cli(
        ["run", "--qubits", "6", "--cuts", "1", "--backends", "qpu", "--run-dir", str(tmp_path / "r")], capsys
    )
    assert code == 2
    assert f"IQM_TOKENS_FILE={tmp_path / 'absent-tokens.json'}: no such token file" in err


def test_token_value_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real-looking token file with a dead endpoint: the error names the URL, never the token."""
    tokens = tmp_path / "tokens.json"
    secret = "s3cr3t-access-token-value"
    tokens.write_text(json.dumps({"access_token": secret, "refresh_token": secret}))
    monkeypatch.setenv("QUBELET_QPU_BACKEND", "iqm")
    monkeypatch.setenv("IQM_SERVER_URL", "http://127.0.0.1:9/station")
    monkeypatch.setenv("IQM_TOKENS_FILE", str(tokens))
    code, out, err = run_cli(
        ["run", "--qubits", "6", "--cuts", "1", "--backends", "qpu", "--run-dir", str(tmp_path / "r")], capsys
    )
    assert code == 2
    assert secret not in out and secret not in err
    assert "no usable backend" in err and "127.0.0.1:9" in err
