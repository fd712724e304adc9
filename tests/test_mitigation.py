"""Readout mitigation and zero-noise extrapolation: exact physics, honest error bars.

Every check compares against a value known exactly (a noise-free statevector, an injected
confusion, a known depolarizing channel) and would fail if the mitigation were skipped or the
standard error inflated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import Statevector

from pipeline.backends.base import Counts
from pipeline.mitigation import MitigationConfig, quasi_distribution, subexperiment_moments
from pipeline.mitigation.readout import ReadoutError, apply_confusion
from pipeline.mitigation.zne import extrapolation_weights, fold_two_qubit_gates

NONE = MitigationConfig(level="none")
READOUT = MitigationConfig(level="readout")

#: Masks of Z0Z1, Z1Z2, Z0Z1Z2 and Z0 on three measured bits.
MASKS = (0b011, 0b110, 0b111, 0b001)
ERRORS = (ReadoutError(0.02, 0.06), ReadoutError(0.08, 0.03), ReadoutError(0.04, 0.10))


def _ghz_probabilities() -> np.ndarray:
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.ry(0.7, 0)  # breaks the symmetry: Z0 and Z0Z1Z2 are non-zero
    return Statevector(qc).probabilities()  # index bit j = qubit j = clbit j


def _ideal(probabilities: np.ndarray, mask: int) -> float:
    signs = np.array([1 - 2 * (bin(x & mask).count("1") % 2) for x in range(len(probabilities))])
    return float(signs @ probabilities)


def _noisy_counts(probabilities: np.ndarray, shots: int, seed: int) -> Counts:
    confusions = [
        np.array([[1 - e.p1_given_0, e.p1_given_0], [e.p0_given_1, 1 - e.p0_given_1]]) for e in ERRORS
    ]
    noisy = apply_confusion(probabilities, confusions)
    histogram = np.random.default_rng(seed).multinomial(shots, noisy / noisy.sum())
    return Counts.from_samples(histogram, 3).with_mitigation_data(ERRORS)


def test_weights_are_the_tensored_inverse() -> None:
    error = ReadoutError(0.03, 0.11)
    confusion = np.array([[0.97, 0.03], [0.11, 0.89]])  # [true][recorded]
    z = np.array([1.0, -1.0])
    assert np.allclose(error.weights(), np.linalg.inv(confusion) @ z)
    assert np.allclose(error.inverse() @ confusion, np.eye(2))
    with pytest.raises(ValueError, match="not invertible"):
        ReadoutError(0.6, 0.5)


def test_injected_readout_error_is_removed() -> None:
    probabilities = _ghz_probabilities()
    counts = _noisy_counts(probabilities, 200_000, seed=3)
    raw, _ = subexperiment_moments(counts, 3, MASKS, NONE)
    mean, cov = subexperiment_moments(counts, 3, MASKS, READOUT)
    stderr = np.sqrt(np.diag(cov))
    ideal = np.array([_ideal(probabilities, m) for m in MASKS])
    assert np.all(np.abs(mean - ideal) < 4 * stderr), (mean, ideal, stderr)
    # Without mitigation the same data is many standard errors off: the test can fail.
    assert np.max(np.abs(raw - ideal) / stderr) > 10
    # The mitigated quasi-distribution (negative entries allowed) gives the same expectations.
    quasi = quasi_distribution(counts, READOUT)
    from_quasi = [sum(p * (1 - 2 * (bin(x & m).count("1") % 2)) for x, p in quasi.items()) for m in MASKS]
    assert np.allclose(from_quasi, mean)
    assert abs(sum(quasi.values()) - 1.0) < 1e-9


def test_agrees_with_mthree() -> None:
    mthree = pytest.importorskip("mthree")
    probabilities = _ghz_probabilities()
    counts = _noisy_counts(probabilities, 50_000, seed=5)
    mit = mthree.M3Mitigation()
    # mthree's single-qubit calibration: [[P(0|0), P(0|1)], [P(1|0), P(1|1)]] (columns: prepared).
    mit.cals_from_matrices(
        [np.array([[1 - e.p1_given_0, e.p0_given_1], [e.p1_given_0, 1 - e.p0_given_1]]) for e in ERRORS]
    )
    bitstrings = {format(int(o), "03b"): int(n) for o, n in zip(counts.outcomes, counts.counts, strict=True)}
    quasi = mit.apply_correction(bitstrings, [0, 1, 2], method="direct")
    ours, _ = subexperiment_moments(counts, 3, MASKS, READOUT)
    theirs = [quasi.expval(op) for op in ("IZZ", "ZZI", "ZZZ", "IIZ")]
    assert np.allclose(ours, theirs, atol=1e-9)


def test_mitigated_standard_errors_are_calibrated() -> None:
    """Over many seeds, the spread of the mitigated estimate matches its reported stderr."""
    probabilities = _ghz_probabilities()
    ideal = np.array([_ideal(probabilities, m) for m in MASKS])
    means, stderrs = [], []
    for seed in range(400):
        mean, cov = subexperiment_moments(_noisy_counts(probabilities, 2000, seed), 3, MASKS, READOUT)
        means.append(mean)
        stderrs.append(np.sqrt(np.diag(cov)))
    means_a, stderrs_a = np.array(means), np.array(stderrs)
    ratio = means_a.std(axis=0, ddof=1) / stderrs_a.mean(axis=0)
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio
    # Unbiased: the mean over seeds is within 4 of its own standard errors of the ideal value.
    assert np.all(np.abs(means_a.mean(axis=0) - ideal) < 4 * stderrs_a.mean(axis=0) / np.sqrt(400))
    # The raw estimator's stderr of the three-bit parity is well below the mitigated spread
    # (the inverse confusion amplifies): reusing it for mitigated values would fail the ratio.
    raw_cov = subexperiment_moments(_noisy_counts(probabilities, 2000, 0), 3, MASKS, NONE)[1]
    assert np.sqrt(raw_cov[2, 2]) < 0.8 * means_a[:, 2].std(ddof=1)


def test_counts_keep_mitigation_data_through_json() -> None:
    counts = _noisy_counts(_ghz_probabilities(), 100, seed=1)
    folded = counts.with_mitigation_data(ERRORS, [(3, counts)])
    again = Counts.from_json(folded.to_json())
    assert again.readout == ERRORS
    assert [s for s, _ in again.folded] == [3]
    assert np.array_equal(again.folded[0][1].counts, counts.counts)
    plain = Counts.from_json({"num_clbits": 1, "outcomes": [0], "counts": [5]})
    assert plain.readout is None and plain.folded == ()


@pytest.mark.parametrize("scales", [(1, 3), (1, 3, 5), (1, 3, 5, 7), (1, 5, 9)])
@pytest.mark.parametrize("method", ["linear", "richardson"])
def test_extrapolation_weights_are_mitiqs(scales: tuple[int, ...], method: str) -> None:
    from mitiq.zne.inference import LinearFactory, RichardsonFactory

    factory = LinearFactory if method == "linear" else RichardsonFactory
    xs = [float(s) for s in scales]
    theirs = [factory.extrapolate(xs, list(unit)) for unit in np.eye(len(xs))]
    assert extrapolation_weights(scales, method) == pytest.approx(theirs, abs=1e-12)


def test_extrapolation_weights_match_mitiq_on_polynomials() -> None:
    scales = (1, 3, 5)
    richardson = np.array(extrapolation_weights(scales, "richardson"))
    # Richardson on three points is exact for a quadratic in the scale factor.
    assert richardson @ np.array([2 - 0.3 * s + 0.01 * s * s for s in scales]) == pytest.approx(2.0)
    linear = np.array(extrapolation_weights((1, 3), "linear"))
    assert linear.tolist() == pytest.approx([1.5, -0.5])
    assert (richardson**2).sum() == pytest.approx(5.21875)


def _depolarized_circuit() -> QuantumCircuit:
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.h(1)
    for _ in range(3):
        qc.cz(0, 1)
        qc.rx(0.4, 0)
        qc.ry(0.3, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def _zne_counts(noise_model: object, shots: int, seed: int, scales: tuple[int, ...]) -> Counts:
    from pipeline.backends.qpu import run_noisy_exact

    circuit = _depolarized_circuit()
    jobs = [fold_two_qubit_gates(circuit, s, "2q") for s in scales]
    runs = run_noisy_exact(jobs, noise_model, shots, [seed * 10 + s for s in scales])
    return runs[0].with_mitigation_data(None, list(zip(scales[1:], runs[1:], strict=True)))


def test_zne_removes_a_known_depolarizing_channel() -> None:
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    noise_model = NoiseModel(basis_gates=["cz", "rx", "ry", "h"])
    noise_model.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), ["cz"])
    circuit = _depolarized_circuit()
    ideal_probabilities = Statevector(circuit.remove_final_measurements(inplace=False)).probabilities()
    masks = (0b11, 0b01, 0b10)
    ideal = np.array([_ideal(ideal_probabilities, m) for m in masks])
    zne = MitigationConfig(level="zne", zne_scales=(1, 3, 5), extrapolation="richardson", fold="2q")

    counts = _zne_counts(noise_model, 1_000_000, seed=1, scales=(1, 3, 5))
    raw, _ = subexperiment_moments(counts, 2, masks, NONE)
    mean, cov = subexperiment_moments(counts, 2, masks, zne)
    stderr = np.sqrt(np.diag(cov))
    assert np.max(np.abs(raw - ideal)) > 0.03  # the channel matters
    assert np.all(np.abs(mean - ideal) < 4 * stderr + 2e-3), (mean, ideal, stderr)
    assert np.max(np.abs(mean - ideal)) < 0.25 * np.max(np.abs(raw - ideal))

    # Honest error bars: spread over seeds / reported stderr in [0.8, 1.25].
    estimates, reported = [], []
    for seed in range(150):
        m, c = subexperiment_moments(_zne_counts(noise_model, 4000, seed + 100, (1, 3, 5)), 2, masks, zne)
        estimates.append(m)
        reported.append(np.sqrt(np.diag(c)))
    ratio = np.array(estimates).std(axis=0, ddof=1) / np.array(reported).mean(axis=0)
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio


def test_folding_keeps_the_unitary_and_multiplies_two_qubit_gates() -> None:
    from qiskit.quantum_info import Operator

    circuit = _depolarized_circuit().remove_final_measurements(inplace=False)
    folded = fold_two_qubit_gates(circuit, 5, "2q")
    assert folded.count_ops()["cz"] == 5 * circuit.count_ops()["cz"]
    assert Operator(folded.remove_final_measurements(inplace=False)).equiv(Operator(circuit))
    every = fold_two_qubit_gates(circuit, 3, "all")
    assert every.count_ops()["rx"] == 3 * circuit.count_ops()["rx"]
    assert Operator(every).equiv(Operator(circuit))


@pytest.mark.slow
def test_run_reports_raw_and_mitigated_side_by_side(tmp_path: Path) -> None:
    """The tutorial's width-reduction circuit, every subexperiment on the noisy fake QPU."""
    from qiskit.circuit.library import efficient_su2

    from pipeline.api import run

    circuit = efficient_su2(4, entanglement="linear", reps=2)
    circuit.assign_parameters([0.4] * len(circuit.parameters), inplace=True)
    options = {
        "backends": ("qpu",),
        "policy": "size",
        "qpu_backend": "fake:IQMFakeAdonis",
        "shots": 100_000,
    }
    observables = ["ZZII", "IZZI", "IIZZ", "ZIZZ"]
    unmitigated = run(circuit, observables, "AABB", mitigation="none", run_dir=tmp_path / "none", **options)
    readout = run(circuit, observables, "AABB", mitigation="readout", run_dir=tmp_path / "ro", **options)
    zne = run(circuit, observables, "AABB", mitigation="zne", run_dir=tmp_path / "zne", **options)

    raw_errors = [abs(o["error"]) for o in unmitigated.summary["observables"]]
    readout_errors = [abs(o["error"]) for o in readout.summary["observables"]]
    assert "raw" not in unmitigated.summary["observables"][0]
    # Same seeds, same samples: the readout run's raw column is the unmitigated run's answer.
    for plain, mitigated in zip(
        unmitigated.summary["observables"], readout.summary["observables"], strict=True
    ):
        assert mitigated["raw"]["value"] == pytest.approx(plain["value"], abs=1e-12)
        assert mitigated["stderr"] > plain["stderr"]  # the inverse confusion's amplification
    assert sum(readout_errors) < 0.5 * sum(raw_errors)

    usage = zne.summary["mitigation"]["backends"]["qpu:adonis"]
    assert usage["level"] == "zne"
    assert usage["extra_circuits"] == usage["subexperiments"] * (
        len(zne.summary["mitigation"]["requested"]["zne_scales"]) - 1
    )
    assert usage["extra_shots"] == usage["extra_circuits"] * 100_000
    assert readout.summary["mitigation"]["backends"]["qpu:adonis"]["extra_circuits"] == 0

    # Extrapolated values carry a systematic term beside their stderr; nothing else does, and
    # the table measures errors in the combined uncertainty when there is one.
    from pipeline.report import results_table

    assert all(o["systematic"] > 0 for o in zne.summary["observables"])
    assert all(o["systematic"] == 0 for o in readout.summary["observables"])
    assert all(o["systematic"] == 0 for o in unmitigated.summary["observables"])
    assert zne.systematics == {o["name"]: o["systematic"] for o in zne.summary["observables"]}
    assert "systematic" in results_table(zne.summary).splitlines()[0]
    assert "|error|/uncertainty" in results_table(zne.summary).splitlines()[0]
    assert "systematic" not in results_table(readout.summary)

    # Telemetry carries the level and the measured error of each QPU batch against ideal values:
    # what `policy fit` learns mitigated errors from. Readout mitigation measurably helps.
    import json

    def qpu_rows(result: object) -> list[dict[str, object]]:
        lines = (result.run_dir / "telemetry.jsonl").read_text().splitlines()  # type: ignore[attr-defined]
        return [r for r in map(json.loads, lines) if r["backend_kind"] == "qpu"]

    raw_rows, readout_rows = qpu_rows(unmitigated), qpu_rows(readout)
    assert {r["mitigation"] for r in raw_rows} == {"none"}
    assert {r["mitigation"] for r in readout_rows} == {"readout"}
    assert {r["mitigation_work"] for r in qpu_rows(zne)} == {9.0}  # 1 + 3 + 5 gate layers
    # One observed error per batch, on the batch's first row.
    raw_observed = [float(r["observed_error"]) for r in raw_rows if r.get("observed_error") is not None]  # type: ignore[arg-type]
    readout_observed = [
        float(r["observed_error"])  # type: ignore[arg-type]
        for r in readout_rows
        if r.get("observed_error") is not None
    ]
    assert raw_observed and readout_observed
    assert np.mean(readout_observed) < 0.7 * np.mean(raw_observed)

    # qiskit-addon-cutting, fed the mitigated (partly negative) quasi-distributions, reconstructs
    # the same values as the moment-based estimator whose standard errors we report.
    from pipeline import stages
    from pipeline.reconstruct import reconstruct
    from pipeline.store import ArtifactStore

    for result, level in ((readout, READOUT), (zne, MitigationConfig(level="zne"))):
        manifest = stages.load_manifest(result.run_dir)
        store = ArtifactStore(result.run_dir)
        counts = {k: Counts.from_json(store.get_result_record(k)) for k in manifest.cut.unique_keys()}
        recon = reconstruct(manifest.cut, counts.__getitem__, with_library=True, mitigation=level)
        assert recon.library_values is not None
        assert recon.library_values == pytest.approx([p.value for p in recon.paulis], abs=1e-9)


def test_extrapolation_alternatives() -> None:
    """A value is compared with the other model on its scale factors and with one factor fewer."""
    from pipeline.mitigation.systematic import alternatives, describe

    line = MitigationConfig(level="zne", zne_scales=(1, 3, 5), extrapolation="linear")
    assert [describe(a) for a in alternatives(line)] == ["richardson (1,3,5)", "linear (1,3)"]
    richardson = MitigationConfig(level="zne", zne_scales=(1, 3, 5, 7), extrapolation="richardson")
    assert [describe(a) for a in alternatives(richardson)] == ["linear (1,3,5,7)", "richardson (1,3,5)"]
    # Two points cannot test a model: the alternative is no extrapolation at all.
    two = MitigationConfig(level="zne", zne_scales=(1, 3))
    assert [describe(a) for a in alternatives(two)] == ["no extrapolation"]
    assert alternatives(READOUT) == [] and alternatives(NONE) == []


def test_table_measures_errors_in_the_combined_uncertainty() -> None:
    from pipeline.report import mitigation_line, results_table

    observable = {"name": "ZZ", "value": 0.50, "stderr": 0.03, "exact": 0.40, "error": 0.10}
    raw = {"value": 0.30, "stderr": 0.02, "error": -0.10}
    extrapolated = {"observables": [{**observable, "systematic": 0.04, "raw": raw}]}
    header, _rule, row = results_table(extrapolated).splitlines()
    assert header.split()[:7] == [
        "observable",
        "reconstructed",
        "stderr",
        "systematic",
        "exact",
        "error",
        "|error|/uncertainty",
    ]
    assert row.split()[6] == "2.00"  # 0.10 / hypot(0.03, 0.04), not 0.10 / 0.03
    plain = results_table({"observables": [{**observable, "systematic": 0.0}]})
    assert "systematic" not in plain and plain.splitlines()[2].split()[-1] == "3.33"
    usage = {"level": "readout", "extra_circuits": 0, "extra_shots": 0}
    line = mitigation_line({"mitigation": {"backends": {"qpu:apollo": usage}}})
    assert line is not None and "gate noise is not in the readout-mitigated error bars" in line
    zne = {**usage, "level": "zne", "extra_circuits": 2, "extra_shots": 10}
    assert "gate noise" not in str(mitigation_line({"mitigation": {"backends": {"qpu:apollo": zne}}}))
