"""``qubelet policy fit|explain|eval`` through the real top-level parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy.scenarios import SCENARIOS
from policy.simulator import simulate
from policy.size_rule import SizePolicy
from qubelet.cli import main

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def telemetry_file(tmp_path: Path) -> Path:
    rows = simulate(SCENARIOS["paper"].scaled(60), SizePolicy(), seed=0).rows
    path = tmp_path / "telemetry.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fit_then_explain(tmp_path: Path, telemetry_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.json"
    assert main(["policy", "fit", "--telemetry", str(telemetry_file), "-o", str(model)]) == 0
    out = capsys.readouterr().out
    assert "qpu:apollo-onprem" in out and model.is_file()
    inventory = "manifests/examples/qpus.yaml"
    argv = ["policy", "explain", "--model", str(model), "--qubits", "5", "--depth", "22",
            "--two-qubit-gates", "8", "--shots", "4096", "--inventory", inventory]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "chosen: cpu" in out and "qpu:adonis-onprem" in out and "budget" in out
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["backend"]: r for r in report["backends"]}
    assert report["chosen"] == "cpu"
    # history came from a different Apollo QPU: the pooled per-model fit corrects this one's prior
    assert rows["qpu:apollo-cloud"]["model"] == "model=qpu:Apollo"
    assert rows["qpu:apollo-cloud"]["training_rows"] > 0


def test_eval_prints_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "eval", "--scenario", "cloud_queue", "--tasks", "120", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("scenario")
    figures = json.loads(lines[-1])["cloud_queue"]
    assert figures["makespan_ratio_vs_size"] < 0.5 and figures["error_budget_held"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["policy", "fit", "--telemetry", "/nonexistent.jsonl", "-o", "m.json"], "does not exist"),
        (["policy", "fit", "-o", "m.json"], "give --telemetry"),
        (
            [
                "policy",
                "explain",
                "--model",
                "/nonexistent.json",
                "--qubits",
                "5",
                "--depth",
                "3",
                "--two-qubit-gates",
                "1",
                "--shots",
                "10",
            ],
            "does not exist",
        ),
        (["policy", "eval", "--tasks", "0"], "--tasks must be"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_corrupt_telemetry_and_model_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "telemetry.jsonl"
    bad.write_text('{"backend": "cpu"}\n')
    assert main(["policy", "fit", "--telemetry", str(bad), "-o", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1" in err and "missing field" in err
    model = tmp_path / "model.json"
    model.write_text("[1, 2")
    argv = ["policy", "explain", "--model", str(model), "--qubits", "5", "--depth", "3",
            "--two-qubit-gates", "1", "--shots", "10"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(model) in err and len(err.strip().splitlines()) == 1


def test_explain_validates_the_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The inventory goes through the daemons' validating loader: a bad field is one line, exit 2."""
    bad = tmp_path / "qpus.yaml"
    bad.write_text(
        "version: v1\nqpus:\n- {name: q, vendor: IQM, model: Apollo, qubits: many, technology: sc,"
        " location: onprem, backend: 'fake:IQMFakeApollo'}\n"
    )
    argv = ["policy", "explain", "--qubits", "5", "--depth", "2", "--two-qubit-gates", "1",
            "--shots", "100", "--inventory", str(bad)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "qpus[0] (q): qubits: must be a positive integer" in err


def test_show_prints_inputs_with_their_age_and_expired_ones_are_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from policy.interface import BackendState
    from policy.models import PolicyModel
    from policy.telemetry_sources import BackendSnapshot

    now = time.time()
    snapshots = {
        "gpu": BackendSnapshot(backend="gpu", up=False, observed_at=now - 3600),  # down an hour ago
        "qpu:apollo": BackendSnapshot(backend="qpu:apollo", queue_depth=40.0, observed_at=now - 60),
        "cpu": BackendSnapshot(backend="cpu", up=False),  # an old model's unstamped snapshot
    }
    path = tmp_path / "model.json"
    PolicyModel([], snapshots).save(path)
    model = PolicyModel.load(path)
    assert model.is_up(BackendState(name="gpu", kind="gpu"))  # expired: not down forever
    assert model.is_up(BackendState(name="cpu", kind="cpu"))
    qpu = BackendState(name="qpu:apollo", kind="qpu")
    assert model.queue_wait(qpu, 1.0) == pytest.approx(40.0)  # fresh: still counts
    assert model.snapshot_value("qpu:apollo", "queue_depth", now=now + 3600) is None
    assert main(["policy", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "prometheus gpu: up=False (age 60m, expired)" in out
    assert "prometheus cpu: up=False (no timestamp: expired)" in out
    assert "queue_depth=40.0 (age 60s, expires in" in out


def test_explain_needs_a_run_dir_or_a_subexperiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "--qubits", "5"]) == 2
    assert "give --run-dir DIR, or --depth" in capsys.readouterr().err
