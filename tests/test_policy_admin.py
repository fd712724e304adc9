"""The admin's policy knobs: validated like the inventory, and they change what the loop does."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.admin import load_policy_config
from policy.interface import BackendState, CircuitFeatures
from policy.loop import LoopSettings
from policy.telemetry import TelemetryPolicy
from qubelet.cli import main
from qubelet.errors import ConfigError

GOOD = """\
version: v1
epsilon: 0.0
loop: {rounds: 2, replanFraction: 0.25, refitRows: 50}
backends:
  - name: gpu
    weight: 100
  - kind: cpu
    prior: {base: 0.5, perShot: 0, perAmpLayer: 0, perShotLayer: 0}
"""

TASKS = [
    CircuitFeatures(key=f"k{i}", num_qubits=20, depth=30, num_2q_gates=40, num_clbits=20, shots=4096)
    for i in range(8)
]
BACKENDS = [BackendState(name="cpu", kind="cpu", workers=2), BackendState(name="gpu", kind="gpu")]


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_knobs_reach_the_policy_and_the_loop(tmp_path: Path) -> None:
    admin = load_policy_config(_file(tmp_path, GOOD))
    plain = TelemetryPolicy(record_metrics=False, epsilon=0.0)
    tuned = TelemetryPolicy(record_metrics=False, admin=admin)
    on_gpu = sum(d.backend == "gpu" for d in plain.select(TASKS, BACKENDS))
    assert on_gpu >= 4  # 20 qubits: the GPU's work
    assert all(d.backend == "cpu" for d in tuned.select(TASKS, BACKENDS))  # weighted 100x away
    cpu_prior = tuned.model.prior_seconds(TASKS[:1], "cpu")[0]
    assert cpu_prior == pytest.approx(0.5)
    assert tuned.epsilon == 0.0
    settings = admin.loop_settings(LoopSettings(batch_size=7))
    assert (settings.batch_size, settings.rounds, settings.replan_fraction, settings.refit_rows) == (
        7,
        2,
        0.25,
        50,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: v2\n", "policy.yaml: version: must be v1, got 'v2'"),
        ("version: v1\nepsilon: 2\n", "policy.yaml: epsilon: must be a number >= 0.0 and <= 1.0, got 2"),
        ("version: v1\nloop: {rounds: 0}\n", "policy.yaml: loop.rounds: must be an integer >= 1, got 0"),
        ("version: v1\nloop: {every: 3}\n", "policy.yaml: loop: unknown field 'every'"),
        (
            "version: v1\nbackends: [{kind: gpu, weight: -1}]\n",
            "policy.yaml: backends[0] (gpu): weight: must be a number > 0.0, got -1",
        ),
        (
            "version: v1\nbackends: [{kind: tpu}]\n",
            "policy.yaml: backends[0]: kind: must be one of cpu, gpu, qpu",
        ),
        ("version: v1\nbackends: [{name: gpu, prior: {base: 1}}]\n", "priors are per kind"),
        ("version: v1\nbackends: [{kind: gpu}, {kind: gpu}]\n", "backends[1] (gpu): gpu is configured twice"),
        ("version: [v1\n", "policy.yaml: invalid YAML: line 2"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_config(_file(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_run_with_a_bad_policy_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path, "version: v1\nepsilon: -1\n")
    code = main(
        ["run", "--qubits", "4", "--cuts", "1", "--backends", "cpu", "--policy-config", str(path),
         "--run-dir", str(tmp_path / "run"), "--no-progress"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "policy.yaml: epsilon: must be a number" in err and "Traceback" not in err
