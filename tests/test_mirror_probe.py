"""The mirror probe in the pipeline: a wide QPU batch's error measured by one circuit and its inverse.

Against an independent oracle, the exact probe, on random circuits under a known Aer noise model;
in real runs on the fake QPU (with the exact probe's width limit lowered so small circuits take
the mirror path): the mirror changes no result and is measured once per batch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qiskit import QuantumCircuit

from pipeline.backends.base import Counts
from pipeline.mitigation.levels import MitigationConfig
from pipeline.mitigation.mirror import mirror_circuit, plan_mirror, unitary_part, zero_fraction
from pipeline.mitigation.observed import batch_observed_error
from policy.interface import CircuitFeatures
from policy.probe import mirror_error

SHOTS = 8000
READOUT_ERROR = 0.01


def _noise(depolarizing: float) -> Any:
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(depolarizing, 2), ["cx", "cz"])
    e = READOUT_ERROR
    model.add_all_qubit_readout_error(ReadoutError([[1 - e, e], [e, 1 - e]]))
    return model


def _run(circuit: QuantumCircuit, depolarizing: float, seed: int) -> Counts:
    from qiskit_aer import AerSimulator

    simulator = AerSimulator(noise_model=_noise(depolarizing), seed_simulator=seed)
    counts = simulator.run(circuit, shots=SHOTS).result().get_counts()
    return Counts.from_qiskit(counts, circuit.num_clbits)


@st.composite
def basis_circuits(draw: st.DrawFn) -> QuantumCircuit:
    """Random circuits of X, RZ, CX and CZ: their ideal output is one basis state (parity ±1).

    For these the exact probe's figure has a closed form under depolarizing + readout noise, so
    the two probes can be compared against what each must read.
    """
    n = draw(st.integers(3, 5))
    circuit = QuantumCircuit(n, n)
    gates = 0
    for _ in range(draw(st.integers(10, 18))):
        kind = draw(st.sampled_from(["x", "rz", "cx", "cz", "cx"]))
        a = draw(st.integers(0, n - 1))
        if kind in ("cx", "cz"):
            b = draw(st.integers(0, n - 2))
            b = b + 1 if b >= a else b
            getattr(circuit, kind)(a, b)
            gates += 1
        elif kind == "rz":
            circuit.rz(draw(st.floats(0.1, 3.0)), a)
        else:
            circuit.x(a)
    if gates == 0:
        circuit.cx(0, 1)
    circuit.measure(range(n), range(n))
    return circuit


def _features(circuit: QuantumCircuit) -> CircuitFeatures:
    return CircuitFeatures(
        key="k",
        num_qubits=circuit.num_qubits,
        depth=circuit.depth(),
        num_2q_gates=sum(1 for i in circuit.data if i.operation.num_qubits == 2),
        num_clbits=circuit.num_clbits,
        shots=SHOTS,
    )


def _both_probes(circuit: QuantumCircuit, depolarizing: float, seed: int) -> tuple[float, float]:
    """(exact probe's error, mirror probe's estimate) of ``circuit`` under the noise."""
    counts = _run(circuit, depolarizing, seed)
    exact = batch_observed_error([circuit], [counts], MitigationConfig(level="none"))
    assert exact is not None
    mirror = mirror_circuit(circuit)
    assert mirror is not None
    reads = zero_fraction(_run(mirror, depolarizing, seed + 1))
    # the published calibration: a depolarised pair stays put with chance 1 − 3λ/4
    published = 1.0 - 0.75 * depolarizing
    estimate = mirror_error(reads, mirror.num_qubits, _features(circuit), published, 1 - READOUT_ERROR)
    return exact, estimate


def _parity_touches(circuit: QuantumCircuit) -> int:
    """Two-qubit gates whose noise reaches the all-qubit parity (Heisenberg picture, backwards).

    The measured parity ``Z…Z`` pulled back through X, RZ, CZ stays itself; through CX(c, t) a Z
    on the target becomes Z on both. A depolarised pair scales the parity by ``1 − λ`` exactly
    when the pulled-back string acts on the pair, else not at all.
    """
    string = [True] * circuit.num_qubits
    touched = 0
    for inst in reversed(circuit.data):
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name in ("cx", "cz"):
            touched += any(string[q] for q in qubits)
        if inst.operation.name == "cx":
            control, target = qubits
            string[control] ^= string[target]
    return touched


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(circuit=basis_circuits(), seed=st.integers(0, 10_000))
def test_mirror_agrees_with_the_exact_probe_and_follows_the_noise(circuit: QuantumCircuit, seed: int) -> None:
    """Stated model, per circuit of ``G`` two-qubit gates on ``m`` qubits, all measured.

    Depolarizing λ on every two-qubit gate, readout flips ε. The mirror reads the chance of any
    error, ``1 − (1 − 3λ/4)^G (1 − ε)^m`` (a depolarised pair lands where it was with 1/4 of its
    chance). The exact probe reads the bias of the ±1 parity, ``1 − (1 − λ)^T (1 − 2ε)^m``, where
    ``T ≤ G`` gates touch the parity pulled back to them (:func:`_parity_touches`). Both must
    read their model (slack: 8000 shots, σ ≈ 0.005, and the second order), and the exact probe
    stays within the bound the error budget states: a ±1 observable's bias is at most twice
    the chance of an error (docs/policy.md).
    """
    g = sum(1 for i in circuit.data if i.operation.num_qubits == 2)
    touches, m = _parity_touches(circuit), circuit.num_qubits
    mirrors = []
    for depolarizing in (0.01, 0.04):
        exact, mirror = _both_probes(circuit, depolarizing, seed)
        model_mirror = 1 - (1 - 0.75 * depolarizing) ** g * (1 - READOUT_ERROR) ** m
        model_exact = 1 - (1 - depolarizing) ** touches * (1 - 2 * READOUT_ERROR) ** m
        assert mirror == pytest.approx(model_mirror, abs=0.02 + 0.1 * model_mirror)
        assert exact == pytest.approx(model_exact, abs=0.02 + 0.1 * model_exact)
        assert exact <= 2 * mirror + 0.02, (exact, mirror)
        mirrors.append(mirror)
    # four times the gate noise: the mirror must see it (a constant stand-in cannot)
    assert mirrors[1] - mirrors[0] >= 0.5 * 0.75 * 0.03 * g


def test_mirror_circuit_is_the_unitary_and_its_inverse_on_the_used_qubits() -> None:
    from qiskit.quantum_info import Operator

    circuit = QuantumCircuit(4, 3)
    circuit.h(0)
    circuit.cx(0, 2)
    circuit.measure(2, 0)  # a mid-circuit measurement, a reset and a barrier are not the unitary
    circuit.reset(2)
    circuit.barrier()
    circuit.rz(0.3, 2)
    circuit.cz(2, 0)
    with circuit.if_test((circuit.clbits[0], 1)):
        circuit.x(0)
    circuit.measure([0, 2], [1, 2])
    unitary = unitary_part(circuit)
    assert unitary.num_qubits == 2  # qubits 1 and 3 are never touched
    assert dict(unitary.count_ops()) == {"h": 1, "cx": 1, "rz": 1, "cz": 1}
    mirror = mirror_circuit(circuit)
    assert mirror is not None and mirror.num_clbits == 2
    body = mirror.remove_final_measurements(inplace=False)
    assert Operator(body).equiv(Operator(QuantumCircuit(2)))
    assert body.count_ops()["barrier"] == 1  # keeps the transpiler from cancelling U against U†


def test_a_batch_with_a_narrow_subexperiment_keeps_the_exact_probe() -> None:
    narrow, wide = QuantumCircuit(2, 2), QuantumCircuit(3, 3)
    narrow.cx(0, 1)
    wide.cx(0, 1)
    wide.cx(1, 2)
    features = [_features(narrow), _features(wide)]
    assert plan_mirror([narrow, wide], features, exact_max_width=4) is None
    probe = plan_mirror([narrow, wide], features, exact_max_width=3)
    assert probe is not None and probe.index == 1  # the most two-qubit gates
    assert probe.qubits == 3


def _qpu_rows(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "telemetry.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["backend_kind"] == "qpu"]


@pytest.mark.slow
def test_a_real_run_measures_each_wide_batch_once_and_reconstructs_the_same(tmp_path: Path) -> None:
    """Fake QPU (iqm-client's fake Adonis): the mirror rides in every batch's job, changes nothing.

    The fake QPU evolves a density matrix with measurements deferred onto ancillas, so it runs
    only ~7 qubits plus clbits, all within the exact probe's 20: the limit is lowered to 2 to make
    every batch take the mirror path.
    """
    from qiskit.circuit.library import efficient_su2

    from pipeline import stages
    from pipeline.api import run
    from pipeline.store import ArtifactStore

    circuit = efficient_su2(4, entanglement="linear", reps=2)
    circuit.assign_parameters([0.4] * len(circuit.parameters), inplace=True)
    options: dict[str, Any] = {
        "backends": ("qpu",),
        "policy": "size",
        "qpu_backend": "fake:IQMFakeAdonis",
        "shots": 2000,
        "mitigation": "readout",
        "batch_size": 12,
    }
    exact = run(circuit, ["ZZII", "IZZI"], "AABB", run_dir=tmp_path / "exact", **options)
    mirrored = run(
        circuit, ["ZZII", "IZZI"], "AABB", run_dir=tmp_path / "mirror", exact_probe_max_width=2, **options
    )
    # (b) the mirror is no subexperiment: same results, same values, no extra result stored
    for a, b in zip(exact.summary["observables"], mirrored.summary["observables"], strict=True):
        assert a["value"] == b["value"] and a["stderr"] == b["stderr"]
    manifest = stages.load_manifest(mirrored.run_dir)
    keys = manifest.cut.unique_keys()
    assert sorted(
        p.stem for p in ArtifactStore(mirrored.run_dir).result_path(keys[0]).parent.iterdir()
    ) == sorted(ArtifactStore(mirrored.run_dir).result_path(k).stem for k in keys)
    # (c) exactly one mirror observation per QPU batch, on its most-gated subexperiment's row
    batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _qpu_rows(mirrored.run_dir):
        batches[str(row["task_id"]).split("/")[0]].append(row)
    assert len(batches) >= 2
    for rows in batches.values():
        observed = [r for r in rows if r.get("observed_error") is not None]
        assert len(observed) == 1 and observed[0]["probe"] == "mirror"
        assert observed[0]["num_2q_gates"] == max(r["num_2q_gates"] for r in rows)
        assert 0.0 < observed[0]["observed_error"] < 1.0
    exact_rows = [r for r in _qpu_rows(exact.run_dir) if r.get("observed_error") is not None]
    assert exact_rows and {r["probe"] for r in exact_rows} == {"exact"}
    # the fake Adonis is noisy: the readout-mitigated mirror estimate sees its gate error
    estimates = [r["observed_error"] for rows in batches.values() for r in rows if r.get("probe")]
    assert float(np.mean(estimates)) > 0.01


@pytest.mark.slow
def test_a_real_run_probes_a_qpu_its_calibration_alone_keeps_idle(tmp_path: Path) -> None:
    """Budget under every QPU prediction but within twice it: one probe-only job, no QPU result.

    The admin's config makes the CPU look slow (weight 10^5), so the QPU would finish first if
    it were within budget: a probe is worth its job. The fake QPU's calibration is its noise
    model, so the probe confirms it and the QPU stays idle; what matters here is that the
    pipeline runs the job the loop asks for, as the simulator does (tests/test_policy_probe.py
    shows the gain when the calibration is wrong).
    """
    from pipeline import stages
    from pipeline.backends.factory import make_backend
    from pipeline.config import RunConfig
    from pipeline.executor import LocalExecutor
    from policy.models import PolicyModel

    options: dict[str, Any] = {
        "qubits": 4, "cuts": 1, "shots": 500, "backends": ("cpu", "qpu"), "policy": "telemetry",
        "qpu_backend": "fake:IQMFakeAdonis",
    }  # fmt: skip
    manifest = stages.prepare(RunConfig(run_dir=tmp_path / "prepare", **options))
    state = make_backend("qpu", qpu_spec=options["qpu_backend"]).state()
    predicted = PolicyModel().predict_error(list(manifest.features.values()), state)
    budget = round(0.75 * float(predicted.min()), 4)
    assert budget < float(predicted.min()) <= 2 * budget
    run_dir = tmp_path / "run"
    admin = tmp_path / "policy.yaml"
    admin.write_text("version: v1\nbackends:\n  - kind: cpu\n    weight: 100000\n")
    LocalExecutor(RunConfig(run_dir=run_dir, error_budget=budget, policy_config=admin, **options)).run()
    rows = [json.loads(line) for line in (run_dir / "telemetry.jsonl").read_text().splitlines()]
    probes = [r for r in rows if r.get("probe_only")]
    assert len(probes) == 1
    (probe,) = probes
    assert probe["backend"] == state.name and probe["probe"] == "mirror" and probe["batch_size"] == 0
    assert 0.0 < probe["observed_error"] < 1.0
    results = [r for r in rows if not r.get("probe_only")]
    assert results and {r["backend_kind"] for r in results} == {"cpu"}
    plan = json.loads((run_dir / "plan.json").read_text())
    assert [b["keys"] for b in plan["batches"] if b["backend"] == state.name] == [[]]
