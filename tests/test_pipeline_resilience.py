"""A run loses no subexperiment: failed batches are retried or moved, killed runs resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from qiskit import QuantumCircuit

from pipeline import stages
from pipeline.backends.base import Counts
from pipeline.backends.simulators import AerStatevectorBackend
from pipeline.config import RunConfig
from pipeline.errors import BackendFailedError, PipelineError
from pipeline.executor import LocalExecutor
from policy.interface import BackendState


class FlakyBackend:
    """A real Aer backend that raises on its first ``failures`` batches (a crashing worker)."""

    def __init__(self, name: str, kind: str, failures: int, max_qubits: int | None = None) -> None:
        self.inner = AerStatevectorBackend("cpu")
        self.name = name
        self.kind = kind  # type: ignore[assignment]
        self.failures = failures
        self.calls = 0
        self.max_qubits = max_qubits

    def state(self) -> BackendState:
        return BackendState(name=self.name, kind=self.kind, workers=1, max_qubits=self.max_qubits)  # type: ignore[arg-type]

    def run_batch(self, circuits: Sequence[QuantumCircuit], shots: int, seeds: Sequence[int]) -> list[Counts]:
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendFailedError(f"{self.name}: worker crashed")
        return self.inner.run_batch(circuits, shots, seeds)


def test_failed_batch_is_retried_on_its_backend(tmp_path: Path) -> None:
    config = RunConfig(qubits=6, cuts=1, shots=500, policy="size", backends=("cpu",), run_dir=tmp_path)
    flaky = FlakyBackend("cpu", "cpu", failures=1)
    summary, report = LocalExecutor(config, backends=[flaky]).run()
    assert report.retried == 1 and report.moved == 0
    assert summary["backends"]["cpu"]["tasks"] == len(stages.load_manifest(tmp_path).cut.unique_keys())


def test_unhealthy_backend_work_moves_elsewhere(tmp_path: Path) -> None:
    config = RunConfig(qubits=6, cuts=1, shots=500, policy="size", backends=("cpu", "qpu"), run_dir=tmp_path)
    broken_qpu = FlakyBackend("qpu:broken", "qpu", failures=10**6, max_qubits=20)
    cpu = FlakyBackend("cpu", "cpu", failures=0)
    summary, report = LocalExecutor(config, backends=[cpu, broken_qpu]).run()
    # The size rule sent everything to the QPU; after two failures it is unhealthy and the CPU runs it.
    assert report.moved >= 1
    assert set(summary["backends"]) == {"cpu"}
    assert all(abs(o["error"]) <= 4 * o["stderr"] for o in summary["observables"])
    rows = [json.loads(line) for line in (tmp_path / "telemetry.jsonl").read_text().splitlines()]
    assert any(not r["success"] and r["backend"] == "qpu:broken" for r in rows)
    # plan.json says why the QPU lost the decisions made after it was given up on
    plan = json.loads((tmp_path / "plan.json").read_text())
    lost = {
        c.get("lost_because")
        for d in plan["decisions"].values()
        for c in d["candidates"]
        if c["backend"] == "qpu:broken"
    }
    assert lost == {
        "unhealthy: this run: failed 2 batches in a row (BackendFailedError: qpu:broken: worker crashed)"
    }


def test_exhausted_retries_report_and_keep_results(tmp_path: Path) -> None:
    config = RunConfig(qubits=6, cuts=1, shots=200, backends=("cpu",), run_dir=tmp_path, max_attempts=2)
    dead = FlakyBackend("cpu", "cpu", failures=10**6)
    with pytest.raises(PipelineError, match=r"failed after retries.*rerun with --run-dir"):
        LocalExecutor(config, backends=[dead]).run()
    # A later run with a working backend completes the same directory.
    summary, _ = LocalExecutor(config, backends=[FlakyBackend("cpu", "cpu", 0)]).run()
    assert summary["observables"]


def test_resume_after_killed_run_loses_and_recomputes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    flags = "--qubits 8 --cuts 2 --shots 2000 --policy size --backends qpu --batch-size 4 --no-progress"
    command = [sys.executable, "-m", "qubelet.cli", "run", *flags.split(), "--run-dir", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = run_dir / "results"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if results.exists() and len(list(results.glob("*.json"))) >= 3:
                break
            if process.poll() is not None:
                pytest.fail("the run finished before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("no results appeared within 240 s")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in results.glob("*.json")}
    total = len(stages.load_manifest(run_dir).cut.unique_keys())
    assert 0 < len(before) < total
    config = RunConfig(
        qubits=8, cuts=2, shots=2000, policy="size", backends=("qpu",), run_dir=run_dir, batch_size=4
    )
    summary, _ = LocalExecutor(config).run()
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in results.glob("*.json")}
    assert len(after) == total
    for name, stamp in before.items():
        assert after[name] == stamp, f"{name} was recomputed"
    assert summary["resumed_subexperiments"] == len(before)
    assert summary["backends"]["qpu"]["tasks"] == total
    # telemetry survives the kill: exactly one successful row per result, none lost, none twice
    rows = []
    for line in (run_dir / "telemetry.jsonl").read_bytes().split(b"\n"):
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line the kill tore (readers skip and count it)
    keys = sorted(str(r["key"]) for r in rows if r.get("success") is True)
    assert keys == sorted(p.stem for p in results.glob("*.json"))


def test_resume_with_different_circuit_is_refused(tmp_path: Path) -> None:
    LocalExecutor(RunConfig(qubits=6, cuts=1, shots=100, backends=("cpu",), run_dir=tmp_path)).run()
    with pytest.raises(PipelineError, match="holds a different run \\(qubits differ\\)"):
        LocalExecutor(RunConfig(qubits=8, cuts=1, shots=100, backends=("cpu",), run_dir=tmp_path)).run()
