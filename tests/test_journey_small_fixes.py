"""Issue 24 #7, the smaller defects of a workflow author's journey, each proved on the real path.

- ``--qubits``/``--cuts`` with ``--circuit`` are refused in one line (they were silently ignored
  and recorded), and ``manifest.json`` records a circuit run's real width and cuts;
- an OpenQASM 2 file is read (most tools export it), and a broken one says OpenQASM 2;
- a bare ``SparsePauliOp`` comes back under its Pauli label, not ``1.0*…``;
- a typo in an API option is one line with a "did you mean";
- ``--policy`` help lists every policy;
- the timeline has each stage once, a legend, and a bar for a backend's build.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from qiskit import QuantumCircuit, qpy
from qiskit.quantum_info import SparsePauliOp

from pipeline.errors import PipelineError
from qubelet.cli import main

pytestmark = pytest.mark.timeout(300)

QASM2 = """// exported by another tool
OPENQASM 2.0;
include "qelib1.inc";
qreg q[4];
creg c[4];
ry(0.3) q[0];
u3(0.1,0.2,0.3) q[1];
ry(1.2) q[2];
cx q[0],q[1];
cx q[1],q[2];
cx q[2],q[3];
measure q -> c;
"""


def _circuit4() -> QuantumCircuit:
    circuit = QuantumCircuit(4)
    for q, angle in enumerate((0.3, 1.1, -0.4, 0.9)):
        circuit.ry(angle, q)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.cx(2, 3)
    return circuit


def test_qubits_and_cuts_with_a_circuit_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.qpy"
    with path.open("wb") as handle:
        qpy.dump(_circuit4(), handle)
    for argv in (["run"], ["render"], ["task", "generate", f"--run-dir={tmp_path / 'r'}"]):
        code = main(
            [*argv, f"--circuit={path}", "--partition=AABB", "--qubits=10", "--cuts=3", "--backends=cpu"]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err, argv
        assert "--qubits 10 and --cuts 3 describe the built-in ansatz" in err


def test_manifest_records_the_circuits_width_and_cuts(tmp_path: Path) -> None:
    from pipeline.api import run

    result = run(_circuit4(), ["Z0Z3"], "AABB", shots=64, backends=("cpu",), run_dir=tmp_path / "r")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert (manifest["config"]["qubits"], manifest["config"]["cuts"]) == (4, 1)
    assert (result.summary["qubits"], result.summary["cuts"]) == (4, 1)
    # resuming the same run directory still works (identity ignores the derived fields)
    again = run(_circuit4(), ["Z0Z3"], "AABB", shots=64, backends=("cpu",), run_dir=tmp_path / "r")
    assert again.values == result.values


def test_openqasm2_is_read_and_a_broken_one_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.circuits import load_circuit_file

    good = tmp_path / "ok.qasm"
    good.write_text(QASM2)
    circuit = load_circuit_file(good)
    assert circuit.num_qubits == 4 and circuit.count_ops()["cx"] == 3
    bad = tmp_path / "bad.qasm"
    bad.write_text(QASM2.replace("creg c[4];\n", ""))
    assert main(["run", f"--circuit={bad}", "--partition=AABB", "--backends=cpu", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a valid OpenQASM 2 circuit" in err and "'c' is not defined" in err


def test_bare_sparse_pauli_op_comes_back_under_its_label() -> None:
    from pipeline.api import observable_specs

    assert observable_specs(SparsePauliOp("IIZZ")) == ("IIZZ",)
    assert observable_specs(SparsePauliOp(["ZZII", "XXII"], [1.0, -0.5])) == ("ZZII-0.5*XXII",)
    assert observable_specs({"e": SparsePauliOp("IIZZ")}) == ("e=1.0*IIZZ",)


def test_bare_sparse_pauli_op_key_in_a_real_run(tmp_path: Path) -> None:
    from pipeline.api import run

    result = run(
        _circuit4(), SparsePauliOp("ZIIZ"), "AABB", shots=64, backends=("cpu",), run_dir=tmp_path / "r"
    )
    assert list(result.values) == ["ZIIZ"]


def test_api_option_typo_is_one_line_with_a_suggestion() -> None:
    from pipeline.api import run

    with pytest.raises(PipelineError, match=r"^unknown run option 'shot' \(did you mean 'shots'\?\)$"):
        run(_circuit4(), ["Z0Z3"], "AABB", shot=100)


def test_policy_help_lists_every_policy(capsys: pytest.CaptureFixture[str]) -> None:
    from policy.registry import POLICY_NAMES

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"backend selection: {'|'.join(POLICY_NAMES)}" in text
    assert {"greedy", "all_cpu"} <= set(POLICY_NAMES)


def test_timeline_has_each_stage_once_a_legend_and_the_build(tmp_path: Path) -> None:
    """A CLI run's stages are each recorded once, and a backend's build shows as its own bar."""
    from PIL import Image

    from pipeline import report, stages
    from pipeline.backends.factory import make_backend
    from pipeline.config import RunConfig
    from pipeline.timing import STAGES, StageClock

    assert (
        main(["run", "--qubits=4", "--cuts=1", "--shots=32", "--backends=cpu", f"--run-dir={tmp_path / 'r'}"])
        == 0
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    names = [name for name, _, _ in summary["timing"]["intervals"]]
    assert names == list(STAGES), names

    # A backend built on first use (the fake QPU takes seconds): the batch records the build.
    config = RunConfig(qubits=4, cuts=1, shots=32, backends=("cpu",), run_dir=tmp_path / "b", policy="size")
    plan = stages.generate(config)
    backend: Any = make_backend("cpu")
    backend.load = lambda: time.sleep(0.2)
    outcome = stages.execute_batch(config.run_dir, plan.batches[0], backend)
    assert outcome.build_started is not None and outcome.started - outcome.build_started >= 0.2
    events = [
        {"batch": report.BUILD_EVENT, "backend": "cpu", "kind": "cpu", "start": outcome.build_started,
         "end": outcome.started, "tasks": 0, "success": True},
        {"batch": "cpu-000", "backend": "cpu", "kind": "cpu", "start": outcome.started,
         "end": outcome.finished, "tasks": 1, "success": True},
    ]  # fmt: skip
    clock = StageClock.from_json(summary["timing"])
    png = report.plot_timeline(events, tmp_path / "t.png", timing=None)
    colours = {colour for _, colour in Image.open(png).convert("RGB").getcolors(1 << 20)}

    def rgb(hex_colour: str) -> tuple[int, int, int]:
        return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]

    assert rgb(report.BUILD_COLOUR) in colours and rgb(report.BACKEND_COLOURS["cpu"]) in colours
    # The legend, in the bottom strip: a swatch for every stage drawn, the lane's kind and the build.
    image = Image.open(report.plot_timeline(events, tmp_path / "s.png", timing=clock)).convert("RGB")
    strip = image.crop((0, image.height - 20, image.width, image.height))
    legend = {colour for _, colour in strip.getcolors(1 << 20)}
    for name in STAGES:
        assert rgb(report.STAGE_COLOURS[name]) in legend, name
    assert {rgb(report.BUILD_COLOUR), rgb(report.BACKEND_COLOURS["cpu"])} <= legend
