"""The circuits qiskit-addon-cutting users bring: its tutorials and how-tos, QAOA rings, sweeps.

Circuits and partitions are the library's own (docs/tutorials 01-04, how-tos/how_to_specify_
cut_wires); every estimate must lie within 4 standard errors of the exact value.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit, qpy
from qiskit.circuit.library import efficient_su2
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_addon_cutting.instructions import CutWire, Move
from test_pipeline_user_defects import TUTORIAL_OBSERVABLES, assert_within, width_tutorial_circuit

from pipeline import api, stages
from pipeline.circuits import observables_from_json, parse_weighted_observable
from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from qubelet.cli import main

#: Observables of the wire-cutting tutorial and how-to, on the 7 original qubits.
WIRE_OBSERVABLES = ("ZIIIIII", "IIIZIII", "IIIIIIZ")


def wire_tutorial_original() -> QuantumCircuit:
    """Tutorial 3's qc_0: qubit 3 talks to everything, so it is cut out (twice)."""
    circuit = QuantumCircuit(7)
    for i in range(7):
        circuit.rx(np.pi / 4, i)
    for control in (0, 1, 2):
        circuit.cx(control, 3)
    for target in (4, 5, 6):
        circuit.cx(3, target)
    for control in (0, 1, 2):
        circuit.cx(control, 3)
    return circuit


def move_circuit() -> QuantumCircuit:
    """Tutorial 3's qc_1: the same circuit with qubit 3's state moved to ancilla 4 and back."""
    circuit = QuantumCircuit(8)
    for i in [*range(4), *range(5, 8)]:
        circuit.rx(np.pi / 4, i)
    for control in (0, 1, 2):
        circuit.cx(control, 3)
    circuit.append(Move(), [3, 4])
    for target in (5, 6, 7):
        circuit.cx(4, target)
    circuit.append(Move(), [4, 3])
    for control in (0, 1, 2):
        circuit.cx(control, 3)
    return circuit


def cut_wire_circuit() -> QuantumCircuit:
    """The how-to's circuit: tutorial 3's qc_0 with two CutWire markers on qubit 3."""
    circuit = QuantumCircuit(7)
    for i in range(7):
        circuit.rx(np.pi / 4, i)
    for control in (0, 1, 2):
        circuit.cx(control, 3)
    circuit.append(CutWire(), [3])
    for target in (4, 5, 6):
        circuit.cx(3, target)
    circuit.append(CutWire(), [3])
    for control in (0, 1, 2):
        circuit.cx(control, 3)
    return circuit


def qaoa_ring(num_qubits: int, gamma: float = 0.6, beta: float = 0.4) -> QuantumCircuit:
    circuit = QuantumCircuit(num_qubits)
    circuit.h(range(num_qubits))
    for i in range(num_qubits):
        circuit.rzz(2 * gamma, i, (i + 1) % num_qubits)
    circuit.rx(2 * beta, range(num_qubits))
    return circuit


def exact(circuit: QuantumCircuit, label: str) -> float:
    return float(np.real(Statevector(circuit).expectation_value(SparsePauliOp(label))))


def test_width_tutorial_reps1_circular(tmp_path: Path) -> None:
    circuit = width_tutorial_circuit(entanglement="circular", reps=1)
    result = api.run(
        circuit, TUTORIAL_OBSERVABLES, "AABB", run_dir=tmp_path, shots=2000, seed=8, backends=("cpu",)
    )
    assert_within(result.summary)
    assert result.summary["gate_cuts"] == 2  # CNOT(1,2) and the circular CNOT(3,0)


def test_move_circuit_of_the_wire_cutting_tutorial(tmp_path: Path) -> None:
    """Observables on the Move circuit's own 8 qubits, as in the tutorial; exact from its qc_0."""
    result = api.run(
        move_circuit(),
        ["ZIIIIIII", "IIIIZIII", "IIIIIIIZ"],
        "AAAABBBB",
        run_dir=tmp_path,
        shots=2000,
        seed=4,
        backends=("cpu",),
    )
    summary = result.summary
    assert summary["wire_cuts"] == 2 and summary["gate_cuts"] == 0 and summary["cuts"] == 2
    assert summary["exact_reason"] is None  # a Move resets its target: a density matrix
    reference = wire_tutorial_original()
    for (name, value), label in zip(result.values.items(), WIRE_OBSERVABLES, strict=True):
        assert abs(value - exact(reference, label)) <= 4 * result.stderrs[name], name
        assert result.exact[name] == pytest.approx(exact(reference, label), abs=1e-9)


def test_cut_wire_markers_with_observables_on_the_original_qubits(tmp_path: Path) -> None:
    result = api.run(
        cut_wire_circuit(), WIRE_OBSERVABLES, run_dir=tmp_path, shots=2000, seed=5, backends=("cpu",)
    )
    summary = result.summary
    assert summary["wire_cuts"] == 2 and summary["qubits"] == 7
    assert summary["subcircuit_widths"] == {"0": 5, "1": 4}  # two ancillas: 9 qubits cut in two
    assert_within(summary)
    reference = wire_tutorial_original()
    for name, label in zip(result.values, WIRE_OBSERVABLES, strict=True):
        assert result.exact[name] == pytest.approx(exact(reference, label), abs=1e-9)


def test_qaoa_ring_with_automatic_cuts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """16 qubits, --max-subcircuit-width 8: find_cuts cuts the ring twice; each half fits 8."""
    ring = "ring=" + "+".join(f"Z{i}Z{(i + 1) % 16}" for i in range(16))
    path = tmp_path / "ring.qpy"
    with path.open("wb") as handle:
        qpy.dump(qaoa_ring(16), handle)
    run_dir = tmp_path / "run"
    flags = ["--max-subcircuit-width", "8", "--observables", f"Z0Z1,Z7Z8,Z15Z0,{ring}", "--shots", "2000"]
    code = main(
        [
            "run",
            "--circuit",
            str(path),
            *flags,
            "--backends",
            "cpu",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["cuts"] >= 2
    assert max(summary["subcircuit_widths"].values()) <= 8
    assert len(summary["subcircuit_widths"]) >= 2
    assert_within(summary)


def test_three_part_partition(tmp_path: Path) -> None:
    circuit = QuantumCircuit(6)
    for q in range(6):
        circuit.ry(0.3 + 0.2 * q, q)
    for a, b in ((0, 1), (2, 3), (4, 5), (1, 2), (3, 4)):
        circuit.cx(a, b)
    for q in range(6):
        circuit.ry(0.5, q)
    result = api.run(
        circuit,
        ["Z0Z5", "Z1Z2", "X2X3", "h=Z1Z2+Z3Z4-0.5*X0"],
        "AABBCC",
        run_dir=tmp_path,
        shots=2000,
        seed=2,
        backends=("cpu",),
    )
    assert sorted(result.summary["subexperiments"]) == ["A", "B", "C"]
    assert result.summary["cuts"] == 2
    assert_within(result.summary)


def test_weighted_observable_forms() -> None:
    terms = parse_weighted_observable("ZZII+IZZI-IIZZ+0.5*XIXI", 4)
    assert [(p.to_label(), w) for p, w in terms] == [
        ("ZZII", 1.0),
        ("IZZI", 1.0),
        ("IIZZ", -1.0),
        ("XIXI", 0.5),
    ]
    assert [w for _, w in parse_weighted_observable("e=-2.5e-1*Z0Z3+sumZ", 4)] == [-0.25, 1, 1, 1, 1]
    with pytest.raises(PipelineError, match="character 6"):
        parse_weighted_observable("ZZII IZZI", 4)
    specs = observables_from_json(
        [{"name": "energy", "terms": [["ZZII", 1.0], ["XIXI", [-0.5, 0.0]]]}, "Z0Z1"], "obs.json"
    )
    assert specs == ("energy=1.0*ZZII-0.5*XIXI", "Z0Z1")
    with pytest.raises(PipelineError, match="not real"):
        observables_from_json([{"name": "e", "terms": [["ZZII", [1.0, 2.0]]]}], "obs.json")


def test_weighted_sum_stderr_includes_covariances(tmp_path: Path) -> None:
    """ZZII and IZZI share subexperiments: the sum's variance is not the sum of variances."""
    result = api.run(
        width_tutorial_circuit(),
        ["ZZII", "IZZI", "s=ZZII+IZZI", "d=ZZII-IZZI"],
        "AABB",
        run_dir=tmp_path,
        shots=1000,
        seed=1,
        backends=("cpu",),
    )
    stderr = result.stderrs
    independent = stderr["ZZII"] ** 2 + stderr["IZZI"] ** 2
    # Var(a+b) - Var(a-b) = 4 Cov(a, b): zero if covariances were left out.
    assert abs(stderr["s"] ** 2 - stderr["d"] ** 2) > 0.1 * independent
    assert stderr["s"] ** 2 + stderr["d"] ** 2 == pytest.approx(
        2 * (stderr["ZZII"] ** 2 + stderr["IZZI"] ** 2), rel=1e-9
    )


def test_observables_file_and_saved_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    circuit = width_tutorial_circuit()
    path = tmp_path / "c.qpy"
    with path.open("wb") as handle:
        qpy.dump(circuit, handle)
    observable = SparsePauliOp(["ZZII", "IZZI", "-IIZZ", "XIXI", "ZIZZ", "IXIX"])
    observables_file = tmp_path / "obs.json"
    observables_file.write_text(
        json.dumps([{"name": "tutorial", "terms": [[p, c.real] for p, c in observable.to_list()]}])
    )
    run_dir = tmp_path / "run"
    code = main(
        [
            "run",
            "--circuit",
            str(path),
            "--partition",
            "AABB",
            "--observables-file",
            str(observables_file),
            "--shots",
            "1000",
            "--backends",
            "cpu",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "cost: 2 gate + 0 wire cuts, 36 coefficient terms, 144 subexperiments" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    (obs,) = summary["observables"]
    assert obs["exact"] == pytest.approx(
        exact(circuit, "ZZII")
        + exact(circuit, "IZZI")
        - exact(circuit, "IIZZ")
        + exact(circuit, "XIXI")
        + exact(circuit, "ZIZZ")
        + exact(circuit, "IXIX"),
        abs=1e-9,
    )
    assert abs(obs["error"]) <= 4 * obs["stderr"]
    # The run directory holds the uncut circuit and observables another tool can check.
    with (run_dir / "circuit.qpy").open("rb") as handle:
        (saved,) = qpy.load(handle)
    assert Statevector(saved).equiv(Statevector(circuit))
    saved_specs = observables_from_json(json.loads((run_dir / "observables.json").read_text()), "saved")
    assert saved_specs == observables_from_json(json.loads(observables_file.read_text()), "given")


def depth_tutorial_circuit() -> QuantumCircuit:
    """Tutorial 2: efficient_su2(4, circular), reps 3; AABB cuts 6 CNOTs: 6^6 = 46,656 terms."""
    circuit = efficient_su2(num_qubits=4, entanglement="circular")
    circuit.assign_parameters([0.4] * len(circuit.parameters), inplace=True)
    return circuit


def test_cost_is_refused_before_any_work_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "depth.qpy"
    with path.open("wb") as handle:
        qpy.dump(depth_tutorial_circuit(), handle)
    run_dir = tmp_path / "run"
    code = main(
        [
            "run",
            "--circuit",
            str(path),
            "--partition",
            "AABB",
            "--observables",
            "ZZII,XIXI",
            "--backends",
            "cpu",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "46656 coefficient terms" in captured.out  # the estimate is printed first
    (line,) = captured.err.strip().splitlines()
    # 3 observable groups per term: 10000 // 3 draws fit the limit.
    assert "exceed --max-subexperiments 10000" in line and "--num-samples 3333" in line
    assert not (run_dir / "subexperiments").exists()


def test_sampled_qpd_within_its_error(tmp_path: Path) -> None:
    """--num-samples: the library's QPD sampling; the stderr includes the sampling variance."""
    result = api.run(
        depth_tutorial_circuit(),
        ["ZZII", "XIXI"],
        "AABB",
        run_dir=tmp_path,
        shots=500,
        seed=6,
        backends=("cpu",),
        num_samples=150,
    )
    summary = result.summary
    assert summary["num_samples"] == 150 and summary["coefficient_terms"] <= 150
    assert_within(summary)
    manifest = stages.load_manifest(tmp_path)
    from pipeline.reconstruct import reconstruct
    from pipeline.store import ArtifactStore

    recon = reconstruct(manifest.cut, ArtifactStore(tmp_path).get_result)
    assert recon.sampling_variance([0], [1.0]) > 0


def _parametrised() -> QuantumCircuit:
    return efficient_su2(4, entanglement="linear", reps=1)


def test_parameter_sweep_cuts_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    circuit = _parametrised()
    path = tmp_path / "ansatz.qpy"
    with path.open("wb") as handle:
        qpy.dump(circuit, handle)
    rng = np.random.default_rng(0)
    rows = rng.uniform(0, np.pi, size=(3, circuit.num_parameters))
    params = tmp_path / "params.npz"
    np.savez(params, values=rows)
    run_dir = tmp_path / "sweep"
    code = main(
        [
            "run",
            "--circuit",
            str(path),
            "--partition",
            "AABB",
            "--observables",
            "ZZII,e=IZZI-0.5*XIXI",
            "--parameters",
            str(params),
            "--shots",
            "2000",
            "--backends",
            "cpu",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "3 parameter sets, cut once" in out
    sweep = json.loads((run_dir / "sweep.json").read_text())["sets"]
    assert len(sweep) == 3
    assert sweep[1]["seconds"]["cut"] == 0 and sweep[2]["seconds"]["cut"] == 0
    for row, values in zip(sweep, rows, strict=True):
        bound = circuit.assign_parameters(values)
        reference = {"ZZII": exact(bound, "ZZII"), "e": exact(bound, "IZZI") - 0.5 * exact(bound, "XIXI")}
        for name, value in row["values"].items():
            assert row["exact"][name] == pytest.approx(reference[name], abs=1e-9)
            assert abs(value - reference[name]) <= 4 * row["stderrs"][name], (name, row)
    assert (run_dir / "circuit.qpy").exists() and (run_dir / "sets" / "0002" / "summary.json").exists()


def test_api_loop_reuses_the_cut(tmp_path: Path) -> None:
    circuit = _parametrised()
    first = api.run(
        circuit,
        "ZZII",
        "AABB",
        parameter_values=[0.1] * 16,
        run_dir=tmp_path / "a",
        shots=500,
        backends=("cpu",),
    )
    second = api.run(
        circuit,
        "ZZII",
        "AABB",
        parameter_values=[0.2] * 16,
        run_dir=tmp_path / "b",
        shots=500,
        backends=("cpu",),
    )
    assert first.seconds["cut"] > 0 and second.seconds["cut"] == 0
    assert second.exact["ZZII"] == pytest.approx(exact(circuit.assign_parameters([0.2] * 16), "ZZII"))
    assert set(second.usage) == {"cpu"} and second.usage["cpu"]["tasks"] > 0
    with pytest.raises(PipelineError, match="1 given, the circuit has 16 parameters"):
        api.run(circuit, "ZZII", "AABB", parameter_values=[0.1], run_dir=tmp_path / "c", backends=("cpu",))


def test_sweep_parameters_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text('[[1, "x"]]')
    with pytest.raises(PipelineError, match="must be a number"):
        api.load_parameter_sets(bad)
    assert api.load_parameter_sets(_write(tmp_path / "q.json", "[[1, 2], [3, 4]]")) == [[1, 2], [3, 4]]
    config = RunConfig(run_dir=tmp_path / "r", partition="AABB", backends=("cpu",))
    with pytest.raises(PipelineError, match="no unbound parameters"):
        api.sweep(config, width_tutorial_circuit(), [[1.0]])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_render_cuts_to_the_widest_device_of_the_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --partition and no W on a cluster: cut so every subcircuit fits the widest QPU (20)."""
    import yaml

    path = tmp_path / "ring.qpy"
    with path.open("wb") as handle:
        qpy.dump(qaoa_ring(24), handle)
    out = tmp_path / "wf.yaml"
    inventory = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "qpus.yaml"
    argv = ["render", "--circuit", str(path), "--inventory", str(inventory), "--backends=cpu,qpu"]
    code = main([*argv, "--observables=Z0Z1,Z11Z12", "--shots=64", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    workflow = list(yaml.safe_load_all(out.read_text()))[-1]
    generate_args = json.dumps(workflow["spec"])
    assert "--max-subcircuit-width=20" in generate_args
    assert "--observables=Z0Z1,Z11Z12" in generate_args


def test_qaoa_sweep_with_parametrised_cut_gates(tmp_path: Path) -> None:
    """The cut RZZ gates carry gamma: find_cuts runs once, the QPD is re-expanded per set."""
    from qiskit.circuit import Parameter

    gamma, beta = Parameter("gamma"), Parameter("beta")
    circuit = QuantumCircuit(10)
    circuit.h(range(10))
    for i in range(10):
        circuit.rzz(2 * gamma, i, (i + 1) % 10)
    circuit.rx(2 * beta, range(10))
    results = []
    for index, values in enumerate(([0.3, 0.2], [0.7, 0.5])):
        results.append(
            api.run(
                circuit,
                ["Z0Z1", "Z4Z5", "ring=" + "+".join(f"Z{i}Z{(i + 1) % 10}" for i in range(10))],
                parameter_values=dict(zip(["beta", "gamma"], values, strict=True)),
                run_dir=tmp_path / str(index),
                shots=2000,
                seed=9,
                backends=("cpu",),
                max_subcircuit_width=5,
            )
        )
        bound = circuit.assign_parameters({beta: values[0], gamma: values[1]})
        assert results[-1].exact["Z0Z1"] == pytest.approx(exact(bound, "I" * 8 + "ZZ"), abs=1e-9)
        assert_within(results[-1].summary)
        assert results[-1].summary["subcircuit_widths"] == {"A": 5, "B": 5}
    assert results[0].seconds["cut"] > 0 and results[1].seconds["cut"] == 0


@pytest.mark.parametrize(
    ("flag", "content", "message"),
    [
        ("--observables-file", "{not json", "not valid JSON"),
        ("--observables-file", '[{"name": "e", "terms": [["ZZII", "x"]]}]', "is not a real number"),
        ("--parameters", '[["a"]]', "must be a number"),
        ("--parameters", "[[0.1, 0.2]]", "2 given, the circuit has 16 parameters"),
    ],
)
def test_bad_observables_and_parameters_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, content: str, message: str
) -> None:
    circuit = tmp_path / "c.qpy"
    with circuit.open("wb") as handle:
        qpy.dump(_parametrised(), handle)
    bad = _write(tmp_path / "bad.json", content)
    base = ["run", "--circuit", str(circuit), "--partition", "AABB", "--backends", "cpu", "--no-progress"]
    code = main([*base, flag, str(bad), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
