"""What a run pays for: no iqm or scikit-learn unless used, and wall time from process start."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import RunConfig
from pipeline.executor import LocalExecutor
from pipeline.timing import STAGES

pytestmark = pytest.mark.timeout(300)

#: Runs `qubelet run` as its own process and reports, after it, which heavy packages it imported.
_PROBE = """
import json, sys
from qubelet.cli import main
code = main(sys.argv[1:])
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"iqm", "sklearn", "pandas", "scipy"})
print("PROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


def _run_process(tmp_path: Path, *flags: str) -> tuple[dict[str, Any], str, float]:
    """Run ``qubelet run`` with ``flags`` in a fresh interpreter; (probe, stdout, process seconds)."""
    args = ["run", "--qubits", "6", "--cuts", "1", "--shots", "500", "--run-dir", str(tmp_path), *flags]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=240, check=False
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe_line = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(probe_line.removeprefix("PROBE ")), proc.stdout, seconds


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, float, Path]:
    run_dir = tmp_path_factory.mktemp("cpu-run")
    probe, out, seconds = _run_process(run_dir, "--backends", "cpu", "--no-progress")
    return probe, out, seconds, run_dir


def test_cpu_run_imports_neither_iqm_nor_scikit_learn(
    cpu_run: tuple[dict[str, Any], str, float, Path],
) -> None:
    probe, _out, _seconds, _dir = cpu_run
    assert probe["code"] == 0
    assert "iqm" not in probe["heavy"]
    assert "sklearn" not in probe["heavy"]
    assert "pandas" not in probe["heavy"]


def test_printed_wall_time_is_the_process_wall_time(cpu_run: tuple[dict[str, Any], str, float, Path]) -> None:
    """The printed figure covers start-up: within 10% of what the parent measured for the process."""
    _probe, out, process_seconds, run_dir = cpu_run
    match = re.search(r"wall time ([0-9.]+) s \((.*)\)", out)
    assert match, out
    printed = float(match.group(1))
    # (+20 ms: the kernel records the start in clock ticks, 10 ms on most systems)
    assert 0.9 * process_seconds <= printed <= process_seconds + 0.02
    # Every stage is in the printed breakdown and in summary.json, and they add up to the wall time.
    for stage in STAGES:
        assert f"{stage} " in match.group(2)
    summary = json.loads((run_dir / "summary.json").read_text())
    stages = summary["timing"]["stages"]
    assert set(stages) == set(STAGES)
    assert stages["startup"] > 0
    assert summary["wall_seconds"] == pytest.approx(printed, abs=0.01)
    assert sum(stages.values()) == pytest.approx(summary["wall_seconds"], rel=0.05)


def test_default_backends_leave_iqm_unloaded_when_the_qpu_gets_no_work(tmp_path: Path) -> None:
    """The telemetry policy gives this run's 3-qubit work to the CPU: the fake QPU is never built."""
    probe, out, _seconds = _run_process(tmp_path, "--backends", "cpu,qpu", "--policy", "telemetry")
    assert probe["code"] == 0
    assert "iqm" not in probe["heavy"], out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["backends"]) == {"cpu"}
    assert "qpu:apollo" in summary["backend_names"]  # offered, drawn as an idle lane


def test_fake_qpu_is_built_on_its_first_batch_only(tmp_path: Path) -> None:
    config = RunConfig(qubits=6, cuts=1, shots=200, backends=("cpu", "qpu"), run_dir=tmp_path / "telemetry")
    executor = LocalExecutor(config)
    qpu = executor.backends["qpu:apollo"]
    executor.run()
    assert qpu.built is False
    config = RunConfig(
        qubits=6, cuts=1, shots=200, backends=("cpu", "qpu"), run_dir=tmp_path / "size", policy="size"
    )
    executor = LocalExecutor(config)
    qpu = executor.backends["qpu:apollo"]
    summary, _ = executor.run()
    assert qpu.built is True
    assert set(summary["backends"]) == {"qpu"}


def test_cached_fake_properties_match_iqm_client() -> None:
    """The policy's view of each fake QPU without iqm-client equals the built backend's own."""
    from pipeline.backends.lazy_qpu import (
        BUILD_SECONDS,
        LazyFakeQPUBackend,
        fake_properties,
        measured_fake_properties,
    )
    from pipeline.backends.qpu import IQMBackend, resolve_qpu_target

    assert measured_fake_properties() == fake_properties()
    target = resolve_qpu_target("fake:IQMFakeApollo", env={})
    lazy = LazyFakeQPUBackend(target)
    # Before it is built, the only difference is the build time, reported as a queue wait.
    assert lazy.state().queue_wait_seconds >= BUILD_SECONDS
    assert replace(lazy.state(), queue_wait_seconds=0.0) == IQMBackend(target).state()
    lazy.load()
    assert lazy.state() == IQMBackend(target).state()


def test_telemetry_policy_does_not_explore_an_unbuilt_qpu() -> None:
    """Even always exploring, the policy does not start the fake QPU for a few cheap tasks: its
    build time is part of its predicted finish (a real, measured cost of that choice)."""
    from pipeline.backends.lazy_qpu import LazyFakeQPUBackend
    from pipeline.backends.qpu import resolve_qpu_target
    from pipeline.backends.simulators import AerStatevectorBackend
    from policy.interface import CircuitFeatures
    from policy.telemetry import TelemetryPolicy

    qpu = LazyFakeQPUBackend(resolve_qpu_target("fake:IQMFakeApollo", env={}))
    tasks = [
        CircuitFeatures(key=f"t{i}", num_qubits=18, depth=40, num_2q_gates=1, num_clbits=3, shots=1000)
        for i in range(40)
    ]
    states = [AerStatevectorBackend("cpu").state(), qpu.state()]
    explore_always = TelemetryPolicy(seed=1, epsilon=1.0, error_budget=1.0, record_metrics=False)
    assert {d.backend for d in explore_always.select(tasks, states)} == {"cpu"}
    # The same tasks with the QPU already up: it is used (so the check above can fail).
    ready = [states[0], replace(states[1], queue_wait_seconds=0.0)]
    assert "qpu:apollo" in {d.backend for d in explore_always.select(tasks, ready)}


def test_timeline_shows_stages_and_idle_backends(tmp_path: Path) -> None:
    from pipeline import report
    from pipeline.timing import StageClock

    clock = StageClock(origin=100.0)
    for index, stage in enumerate(STAGES):
        clock.add(stage, 100.0 + index, 101.0 + index)
    events = [
        {
            "batch": "cpu-000",
            "backend": "cpu",
            "kind": "cpu",
            "start": 103.1,
            "end": 103.9,
            "tasks": 4,
            "success": True,
        }
    ]
    png = report.plot_timeline(events, tmp_path / "t.png", timing=clock, backends=["cpu", "qpu:apollo"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert StageClock.from_json(clock.to_json(106.0)).seconds() == {stage: 1.0 for stage in STAGES}
    assert clock.to_json(106.0)["wall_seconds"] == 6.0


def test_a_lazy_backend_is_loaded_before_its_batch_is_timed(tmp_path: Path) -> None:
    """The one-off build of a lazy backend must not count as the first batch's run time (the
    telemetry policy would learn it as the backend's cost)."""
    from pipeline import stages
    from pipeline.backends.simulators import AerStatevectorBackend

    class LoadingBackend(AerStatevectorBackend):
        """The cpu backend with a lazy-build hook that records when it ran."""

        loaded_at: float | None = None

        def load(self) -> None:
            time.sleep(0.05)
            self.loaded_at = time.time()

    config = RunConfig(qubits=6, cuts=1, shots=100, backends=("cpu",), run_dir=tmp_path)
    manifest = stages.prepare(config)
    backend = LoadingBackend("cpu")
    plan = stages.plan_pending(manifest, [backend.state()])
    outcome = stages.execute_batch(tmp_path, plan.batches[0], backend, manifest=manifest)
    assert backend.loaded_at is not None
    assert outcome.started >= backend.loaded_at
