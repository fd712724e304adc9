"""Error mitigation on the demo circuit over many seeds: raw, readout and ZNE, with honest bars.

The paper's experiment (N=10, K=3: 216 subexperiments per partition), every subexperiment on the
noisy fake QPU (``--policy size``, IQMFakeApollo). Per seed (the seed draws the ansatz's angles
and the samples) one pipeline run collects the counts of every circuit at ZNE scale factors
(1, 3, 5) and the largest shot count; each level is then reconstructed from the *same* samples
(a paired comparison: the unfolded counts are what ``--mitigation none`` sees with that seed).
Smaller shot counts are drawn from those samples without replacement, which is distributed
exactly as a run with fewer shots.

For each shot count and level it prints, over the seeds, the median and the quartiles of the
summed |error| relative to ``--mitigation none`` (the baseline), the share of observables within
twice their combined uncertainty ``sqrt(stderr² + systematic²)`` of the exact value, the median
uncertainty, and the extra QPU circuits. One seed is one noisy sample of a noisy process: the
figures worth quoting are the medians and spreads, not any single seed.

    python bench/mitigation.py [--seeds 8] [--shots 4096 65536] [--qubits 10] [--cuts 3]
    python bench/mitigation.py --circuit width-tutorial --seeds 24 --shots 2000 65536

``--circuit width-tutorial`` is qiskit-addon-cutting's tutorial 1 (``efficient_su2(4, linear,
reps=2)``, every angle 0.4, partition AABB, observables ZZII IZZI IIZZ XIXI ZIZZ IXIX); ``mirror``
two alike halves joined by one CZ (AABB; Z0Z2 Z1Z3 X0X2 Z0 Z1Z2). For those the seed only draws
the samples.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.mitigation.levels import MitigationConfig

#: (label, mitigation) reconstructed from one run's data; the first is the baseline.
LEVELS = (
    ("none", MitigationConfig(level="none")),
    ("readout", MitigationConfig(level="readout")),
    ("zne linear (1,3)", MitigationConfig(level="zne", zne_scales=(1, 3), extrapolation="linear")),
    ("zne linear (1,3,5)", MitigationConfig(level="zne", zne_scales=(1, 3, 5), extrapolation="linear")),
    (
        "zne richardson (1,3,5)",
        MitigationConfig(level="zne", zne_scales=(1, 3, 5), extrapolation="richardson"),
    ),
)
SCALES = (1, 3, 5)


def subsample(counts: Any, shots: int, rng: np.random.Generator) -> Any:
    """``shots`` of ``counts`` (and of each folded copy) drawn without replacement."""
    from pipeline.backends.base import Counts

    if shots >= counts.shots:
        return counts
    folded = [(scale, subsample(c, shots, rng)) for scale, c in counts.folded]
    drawn = rng.multivariate_hypergeometric(counts.counts, shots)
    keep = drawn > 0
    sample = Counts(counts.outcomes[keep], drawn[keep], counts.num_clbits)
    return sample.with_mitigation_data(counts.readout, folded)


Figures = dict[int, dict[str, list[dict[str, float]]]]


def user_circuit(name: str) -> tuple[Any, str, tuple[str, ...]]:
    """A fixed circuit, its partition and observables (``--circuit``); None for the demo's ansatz."""
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import efficient_su2

    if name == "width-tutorial":
        circuit = efficient_su2(4, entanglement="linear", reps=2)
        circuit.assign_parameters([0.4] * len(circuit.parameters), inplace=True)
        return circuit, "AABB", ("ZZII", "IZZI", "IIZZ", "XIXI", "ZIZZ", "IXIX")
    circuit = QuantumCircuit(4)
    for offset in (0, 2):
        circuit.ry(0.7, offset)
        circuit.ry(1.1, offset + 1)
        circuit.cx(offset, offset + 1)
    circuit.cz(1, 3)
    for offset in (0, 2):
        circuit.ry(0.3, offset)
        circuit.cx(offset, offset + 1)
    return circuit, "AABB", ("Z0Z2", "Z1Z3", "X0X2", "Z0", "Z1Z2")


def run_seed(qubits: int, cuts: int, shots: list[int], seed: int, circuit_name: str) -> tuple[Figures, int]:
    """One ZNE run at the largest shot count: per shot count and level, every observable's figures.

    Also returns how many distinct subexperiments ran on the QPU (each costs one extra circuit
    per extra scale factor).
    """
    from pipeline import stages
    from pipeline.backends.base import Counts
    from pipeline.config import RunConfig
    from pipeline.executor import LocalExecutor
    from pipeline.mitigation.systematic import extrapolation_systematics, restrict
    from pipeline.reconstruct import reconstruct
    from pipeline.store import ArtifactStore

    run_dir = Path(tempfile.mkdtemp(prefix="qubelet-bench-mitigation-"))
    try:
        options: dict[str, Any] = {}
        circuit = None
        if circuit_name != "demo":
            circuit, options["partition"], options["observables"] = user_circuit(circuit_name)
        config = RunConfig(
            qubits=qubits,
            cuts=cuts,
            shots=max(shots),
            seed=seed,
            policy="size",
            backends=("cpu", "qpu"),
            run_dir=run_dir,
            mitigation="zne",
            zne_scales=SCALES,
            **options,
        )
        LocalExecutor(config, circuit=circuit).run()
        manifest = stages.load_manifest(run_dir)
        store = ArtifactStore(run_dir)
        counts = {k: Counts.from_json(store.get_result_record(k)) for k in manifest.cut.unique_keys()}
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    assert manifest.exact is not None
    terms = [(manifest.observable_terms[n], manifest.weights_of(n)) for n in manifest.observable_names]
    exact = [sum(w * manifest.exact[p] for p, w in zip(t, ws, strict=True)) for t, ws in terms]
    rng = np.random.default_rng(seed)
    out: Figures = {}
    for n_shots in sorted(shots):
        sample = {k: subsample(c, n_shots, rng) for k, c in counts.items()}
        out[n_shots] = {}
        for label, mitigation in LEVELS:
            data = {
                k: restrict(c, mitigation.zne_scales if mitigation.zne else (1,)) for k, c in sample.items()
            }
            recon = reconstruct(manifest.cut, data.__getitem__, mitigation=mitigation)
            systematic = extrapolation_systematics(manifest.cut, data, mitigation, recon, terms)
            out[n_shots][label] = [
                {"error": recon.value_of(t, w) - e, "stderr": recon.stderr_of(t, w), "systematic": s}
                for (t, w), e, s in zip(terms, exact, systematic, strict=True)
            ]
    return out, sum(1 for c in counts.values() if c.readout is not None)


def summarise(
    per_seed: list[dict[str, list[dict[str, float]]]], qpu_subexperiments: int
) -> list[dict[str, Any]]:
    """Per level: the seeds' summed |error| vs none (median, quartiles), coverage, uncertainty."""
    rows = []
    baseline = np.array([sum(abs(o["error"]) for o in seed["none"]) for seed in per_seed])
    for label, mitigation in LEVELS:
        summed = np.array([sum(abs(o["error"]) for o in seed[label]) for seed in per_seed])
        ratio = summed / baseline
        observables = [o for seed in per_seed for o in seed[label]]
        uncertainty = np.array([np.hypot(o["stderr"], o["systematic"]) for o in observables])
        errors = np.array([abs(o["error"]) for o in observables])
        scales = mitigation.zne_scales if mitigation.zne else (1,)
        rows.append(
            {
                "level": label,
                "sum_abs_error_median": float(np.median(summed)),
                "ratio_median": float(np.median(ratio)),
                "ratio_q25": float(np.quantile(ratio, 0.25)),
                "ratio_q75": float(np.quantile(ratio, 0.75)),
                "ratio_min": float(ratio.min()),
                "ratio_max": float(ratio.max()),
                "within_2_uncertainty": float(np.mean(errors <= 2 * uncertainty)),
                "max_error_over_uncertainty": float(np.max(errors / uncertainty)),
                "uncertainty_median": float(np.median(uncertainty)),
                "extra_circuits": qpu_subexperiments * (len(scales) - 1),
                "qpu_work": float(sum(scales)),
            }
        )
    return rows


def main() -> int:
    """Run every seed, then print one table per shot count and the JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--qubits", type=int, default=10)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--shots", type=int, nargs="+", default=[4096, 65536])
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0 .. N-1 (default 8)")
    parser.add_argument("--circuit", choices=("demo", "width-tutorial", "mirror"), default="demo")
    args = parser.parse_args()

    started = time.perf_counter()
    results = []
    qpu_subexperiments = 0
    for seed in range(args.seeds):
        figures, qpu_subexperiments = run_seed(args.qubits, args.cuts, args.shots, seed, args.circuit)
        results.append(figures)
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    tables = {}
    circuit_label = f"N={args.qubits}, K={args.cuts}" if args.circuit == "demo" else args.circuit
    for shots in sorted(args.shots):
        rows = summarise([r[shots] for r in results], qpu_subexperiments)
        tables[str(shots)] = rows
        print(f"\n{circuit_label}, {shots} shots, {args.seeds} seeds, policy size on IQMFakeApollo")
        print(
            f"{'level':<24} {'sum|err| (median)':>17} {'vs none: median [q25, q75] (min-max)':>38} "
            f"{'within 2 unc.':>13} {'max |err|/unc.':>14} {'median unc.':>11} {'QPU work':>8}"
        )
        for row in rows:
            spread = (
                f"{row['ratio_median']:.2f} [{row['ratio_q25']:.2f}, {row['ratio_q75']:.2f}] "
                f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f})"
            )
            print(
                f"{row['level']:<24} {row['sum_abs_error_median']:>17.4f} {spread:>38} "
                f"{row['within_2_uncertainty']:>13.2f} {row['max_error_over_uncertainty']:>14.2f} "
                f"{row['uncertainty_median']:>11.4f} {row['qpu_work']:>7g}x"
            )
    summary = {
        "benchmark": "mitigation",
        "circuit": args.circuit,
        "qubits": args.qubits if args.circuit == "demo" else None,
        "cuts": args.cuts if args.circuit == "demo" else None,
        "seeds": args.seeds,
        "seconds": round(time.perf_counter() - started, 1),
        "levels": {
            shots: {
                row["level"]: {
                    k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k != "level"
                }
                for row in rows
            }
            for shots, rows in tables.items()
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
