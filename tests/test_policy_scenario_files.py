"""Scenarios as data: the built-ins are files, and any valid file can be evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from policy.scenario_files import BUILTIN_DIR, dump_scenario, load_scenario
from policy.scenarios import SCENARIOS
from qubelet.cli import main
from qubelet.errors import ConfigError

SMALL = """\
version: v1
name: tiny_cloud
description: 40 narrow tasks; a cloud QPU behind a 5-minute queue
waveSize: 8
partitions:
  - {label: A, count: 40, numQubits: 5, depth: 10, num2qGates: 4, numClbits: 5}
backends:
  - name: cpu
    kind: cpu
    cost: {base: 0.003, perShot: 3.0e-7, perAmpLayer: 6.0e-9}
    workers: 2
  - name: qpu:cloud
    kind: qpu
    cost: {base: 0.04, perShot: 1.8e-5, perShotLayer: 1.0e-8}
    maxQubits: 20
    fidelity2q: 0.995
    readoutFidelity: 0.98
    queueWaitSeconds: 300
"""


def test_builtins_are_the_shipped_files() -> None:
    files = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
    assert sorted(SCENARIOS) == files
    for name, scenario in SCENARIOS.items():
        text = (BUILTIN_DIR / f"{name}.yaml").read_text()
        assert yaml.safe_load(dump_scenario(scenario)) == yaml.safe_load(text)
        assert scenario.name == name


def test_a_scenario_file_is_evaluated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(SMALL)
    scenario = load_scenario(path)
    assert scenario.backends[1].queue_wait_seconds == 300.0 and scenario.num_tasks == 40
    assert main(["policy", "eval", "--scenario-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tiny_cloud" in out and "greedy_sim" in out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("workers: 2", "workers: two"),
            "tiny.yaml: backends[0] (cpu): workers: must be an integer, got 'two'",
        ),
        (("kind: qpu", "kind: tpu"), "backends[1] (qpu:cloud): kind: must be one of cpu, gpu, qpu"),
        (("maxQubits: 20", "maxQubit: 20"), "backends[1] (qpu:cloud): unknown field 'maxQubit'"),
        (("count: 40, ", ""), "tiny.yaml: partitions[0]: count is required"),
        (("version: v1", "version: 1"), "tiny.yaml: version: must be v1"),
        (("waveSize: 8", "waveSize: [8"), "tiny.yaml: invalid YAML"),
    ],
)
def test_bad_scenario_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: tuple[str, str], message: str
) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(SMALL.replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert main(["policy", "eval", "--scenario-file", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_recorded_run_is_replayed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    flags = ["--qubits", "4", "--cuts", "1", "--shots", "300", "--backends", "cpu", "--policy", "greedy"]
    assert main(["run", *flags, "--run-dir", str(run_dir), "--no-progress"]) == 0
    capsys.readouterr()
    from policy.trace import scenario_from_trace

    scenario = scenario_from_trace(run_dir)
    assert [b.name for b in scenario.backends] == ["cpu"]
    assert scenario.num_tasks == len(json.loads((run_dir / "manifest.json").read_text())["features"])
    assert main(["policy", "eval", "--trace", str(run_dir)]) == 0
    assert "trace:run" in capsys.readouterr().out
    (run_dir / "telemetry.jsonl").write_bytes(b"\x00\x00\n")
    assert main(["policy", "eval", "--trace", str(run_dir)]) == 2
    assert "no usable telemetry rows to replay" in capsys.readouterr().err
