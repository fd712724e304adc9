"""Budgets users can see: an unmeetable --error-budget warns and is recorded, or is refused.

A real run on the fake QPU (the only backend offered), with a budget no QPU meets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qubelet.cli import main

RUN = ["run", "--qubits", "4", "--cuts", "1", "--shots", "200", "--backends", "qpu", "--no-progress"]


def test_unmeetable_budget_warns_and_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code = main([*RUN, "--policy", "telemetry", "--error-budget", "0.0001", "--run-dir", str(run_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning: error budget 0.0001 not met" in captured.err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["error_budget"] == 0.0001
    assert summary["error_budget_met"] is False
    assert summary["error_budget_exceeded_subexperiments"] > 0
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["error_budget"] == 0.0001
    assert plan["decisions"]
    for decision in plan["decisions"].values():
        (candidate,) = decision["candidates"]  # the one QPU offered, with its predictions
        assert candidate["chosen"] is True
        assert candidate["error"] > 0.0001
        assert candidate["run_seconds"] > 0 and candidate["queue_wait_seconds"] >= 0
        assert "no backend meets error budget" in decision["reason"]


def test_meetable_budget_is_recorded_as_met(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    flags = ["--backends", "cpu,qpu", "--policy", "telemetry", "--error-budget", "0.0001"]
    code = main([*RUN[:-3], *flags, "--no-progress", "--run-dir", str(run_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "not met" not in captured.err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["error_budget_met"] is True
    plan = json.loads((run_dir / "plan.json").read_text())
    for decision in plan["decisions"].values():
        assert decision["backend"] == "cpu"
        by_name = {c["backend"]: c for c in decision["candidates"]}
        assert by_name["qpu:apollo"]["lost_because"].startswith("predicted error")
        assert by_name["qpu:apollo"]["error"] > 0.0001
    # the run's decisions, explained from its run directory
    assert main(["policy", "explain", "--run-dir", str(run_dir), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "error budget 0.0001: met" in out
    assert "chosen" in out and "lost: predicted error" in out


def test_require_budget_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code = main(
        [
            *RUN,
            "--policy",
            "telemetry",
            "--error-budget",
            "0.0001",
            "--require-budget",
            "--run-dir",
            str(run_dir),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "refused (--require-budget)" in err
    assert not list((run_dir / "results").glob("*.json"))
