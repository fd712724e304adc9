"""``qubelet run --dry-run``: the cost estimate against what a real (small) run then did.

Counts must match exactly: the subexperiments that run, and the shots (ZNE's folded circuits
included). Time is the policy model's prediction: with a model fitted on one run, the estimate of
a second run's execution is checked within a factor of 4 of the execute stage it then took (the
prior, with no fitted model, is only checked to be positive: it is a prior).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qubelet.cli import main

pytestmark = pytest.mark.timeout(300)
TIME_FACTOR = 4.0

RUN = ["--qubits=8", "--cuts=2", "--shots=1024", "--backends=cpu", "--policy=size", "--no-progress"]


def _estimate(printed: str) -> dict[str, float]:
    match = re.search(
        r"estimate: (\d+) subexperiments \((\d+) distinct: [^)]*\), (\d+) shots"
        r"(?: \((\d+) for mitigation\))?, "
        r"([\d.]+) QPU-seconds, about ([\d.]+) (s|min|h) of execution",
        printed,
    )
    assert match, printed
    scale = {"s": 1.0, "min": 60.0, "h": 3600.0}[match[7]]
    return {
        "subexperiments": int(match[1]),
        "distinct": int(match[2]),
        "shots": int(match[3]),
        "mitigation_shots": int(match[4] or 0),
        "qpu_seconds": float(match[5]),
        "wall": float(match[6]) * scale,
    }


def _real(run_dir: Path) -> dict[str, float]:
    summary = json.loads((run_dir / "summary.json").read_text())
    tasks = sum(int(u["tasks"]) for u in summary["backends"].values())
    extra = sum(int(u["extra_shots"]) for u in summary["mitigation"]["backends"].values())
    return {
        "distinct": tasks,
        "shots": tasks * summary["shots"] + extra,
        "mitigation_shots": extra,
        "execute": summary["timing"]["stages"]["execute"],
    }


def test_dry_run_writes_nothing_and_its_estimate_matches_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", *RUN, "--dry-run", "--run-dir=never"]) == 0
    prior = _estimate(capsys.readouterr().out)
    assert list(tmp_path.iterdir()) == [] and prior["wall"] > 0

    assert main(["run", *RUN, "--run-dir=first"]) == 0
    capsys.readouterr()
    first = _real(tmp_path / "first")
    assert (prior["distinct"], prior["shots"]) == (first["distinct"], first["shots"])

    assert main(["policy", "fit", "--telemetry", "first/telemetry.jsonl", "-o", "model.json"]) == 0
    capsys.readouterr()
    assert main(["run", *RUN, "--seed=11", "--policy-model=model.json", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "(model model.json)" in printed
    fitted = _estimate(printed)
    assert main(["run", *RUN, "--seed=11", "--run-dir=second"]) == 0
    capsys.readouterr()
    second = _real(tmp_path / "second")
    assert (fitted["distinct"], fitted["shots"]) == (second["distinct"], second["shots"])
    ratio = fitted["wall"] / max(second["execute"], 1e-3)
    assert 1 / TIME_FACTOR <= ratio <= TIME_FACTOR, (fitted["wall"], second["execute"])


def test_dry_run_counts_zne_shots_on_the_qpu(capsys: pytest.CaptureFixture[str]) -> None:
    """ZNE's extra shots are in the estimate before the run (scales 1,3,5: three circuits each)."""
    argv = ["run", "--qubits=6", "--cuts=1", "--shots=100", "--policy=size", "--backends=cpu,qpu"]
    assert main([*argv, "--mitigation=zne", "--zne-scales=1,3,5", "--dry-run"]) == 0
    zne = _estimate(capsys.readouterr().out)
    assert main([*argv, "--mitigation=readout", "--dry-run"]) == 0
    readout = _estimate(capsys.readouterr().out)
    assert readout["mitigation_shots"] == 0 and zne["distinct"] == readout["distinct"]
    assert zne["shots"] == 3 * readout["shots"] and zne["mitigation_shots"] == 2 * readout["shots"]
    assert zne["qpu_seconds"] > readout["qpu_seconds"] > 0
