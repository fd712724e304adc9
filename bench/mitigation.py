"""Error mitigation on the demo circuit: raw, readout, and zero-noise extrapolation, side by side.

The paper's experiment (N=10, K=3: 216 subexperiments per partition) with every subexperiment
on the noisy fake QPU (``--policy size``, IQMFakeApollo). One run collects the counts of every
circuit at every ZNE scale factor; each mitigation level is then reconstructed from the *same*
samples (a paired comparison: the unfolded counts are what ``--mitigation none`` would have
seen, with the same seeds). For each level it prints the summed |error| over the default
observables, each observable's error in its own standard errors, and the extra QPU circuits.

The baseline is ``--mitigation none``. Success: the best level at least halves the summed
|error| while every observable stays within 4 standard errors of the exact value.

    python bench/mitigation.py [--shots 4096 65536] [--qubits 10] [--cuts 3]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: (label, level, scale factors used, extrapolation) reconstructed from one run's data.
LEVELS = (
    ("none", "none", (1,), "linear"),
    ("readout", "readout", (1,), "linear"),
    ("zne linear (1,3)", "zne", (1, 3), "linear"),
    ("zne richardson (1,3,5)", "zne", (1, 3, 5), "richardson"),
)


def run_levels(qubits: int, cuts: int, shots: int, seed: int) -> list[dict[str, object]]:
    """One ZNE run at scales (1, 3, 5); every level reconstructed from its samples."""
    from pipeline import stages
    from pipeline.backends.base import Counts
    from pipeline.config import RunConfig
    from pipeline.executor import LocalExecutor
    from pipeline.mitigation import MitigationConfig
    from pipeline.reconstruct import reconstruct
    from pipeline.store import ArtifactStore

    run_dir = Path(tempfile.mkdtemp(prefix="qubelet-bench-mitigation-"))
    config = RunConfig(
        qubits=qubits,
        cuts=cuts,
        shots=shots,
        seed=seed,
        policy="size",
        backends=("cpu", "qpu"),
        run_dir=run_dir,
        mitigation="zne",
        zne_scales=(1, 3, 5),
    )
    started = time.perf_counter()
    LocalExecutor(config).run()
    run_seconds = time.perf_counter() - started
    manifest = stages.load_manifest(run_dir)
    store = ArtifactStore(run_dir)
    counts = {k: Counts.from_json(store.get_result_record(k)) for k in manifest.cut.unique_keys()}
    qpu_subexperiments = sum(1 for c in counts.values() if c.readout)
    out = []
    for label, level, scales, extrapolation in LEVELS:
        keep = set(scales)
        subset = {
            k: c.with_mitigation_data(c.readout, [f for f in c.folded if f[0] in keep])
            for k, c in counts.items()
        }
        mitigation = MitigationConfig(
            level=level, zne_scales=scales if len(scales) > 1 else (1, 3), extrapolation=extrapolation
        )
        recon = reconstruct(manifest.cut, subset.__getitem__, mitigation=mitigation)
        observables = []
        assert manifest.exact is not None
        for name in manifest.observable_names:
            terms = manifest.observable_terms[name]
            weights = manifest.weights_of(name)
            value = recon.value_of(terms, weights)
            exact = sum(w * manifest.exact[p] for p, w in zip(terms, weights, strict=True))
            stderr = recon.stderr_of(terms, weights)
            observables.append({"name": name, "error": value - exact, "stderr": stderr})
        out.append(
            {
                "level": label,
                "shots": shots,
                "sum_abs_error": sum(abs(o["error"]) for o in observables),
                "max_sigmas": max(abs(o["error"]) / o["stderr"] for o in observables),
                "extra_circuits": qpu_subexperiments * (len(scales) - 1),
                "observables": observables,
                "run_seconds": run_seconds,
            }
        )
    return out


def main() -> int:
    """Run the comparison at each shot count and print the table and the JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--qubits", type=int, default=10)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--shots", type=int, nargs="+", default=[4096, 65536])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    results = []
    for shots in args.shots:
        rows = run_levels(args.qubits, args.cuts, shots, args.seed)
        baseline = rows[0]["sum_abs_error"]
        print(f"\nN={args.qubits}, K={args.cuts}, {shots} shots, policy size on IQMFakeApollo")
        print(
            f"{'level':<24} {'sum|error|':>10} {'vs none':>8} {'max |err|/stderr':>17} {'extra circuits':>15}"
        )
        for row in rows:
            ratio = float(row["sum_abs_error"]) / float(baseline)  # type: ignore[arg-type]
            row["ratio_vs_none"] = ratio
            print(
                f"{row['level']:<24} {row['sum_abs_error']:>10.4f} {ratio:>8.2f} "
                f"{row['max_sigmas']:>17.2f} {row['extra_circuits']:>15}"
            )
        for row in rows:
            cells = "  ".join(
                f"{o['name']} {o['error']:+.4f}±{o['stderr']:.4f}"  # type: ignore[index]
                for o in row["observables"]  # type: ignore[attr-defined]
            )
            print(f"  {row['level']:<22} {cells}")
        results.append({"shots": shots, "levels": rows})

    best = {
        str(r["shots"]): min(
            (lv for lv in r["levels"][1:] if float(lv["max_sigmas"]) <= 4.0),  # type: ignore[index,arg-type]
            key=lambda lv: float(lv["sum_abs_error"]),  # type: ignore[index,arg-type]
            default=None,
        )
        for r in results
    }
    summary = {
        "benchmark": "mitigation",
        "qubits": args.qubits,
        "cuts": args.cuts,
        "best_covered_level": {s: (b["level"] if b else None) for s, b in best.items()},
        "best_ratio_vs_none": {
            s: (round(float(b["ratio_vs_none"]), 3) if b else None) for s, b in best.items()
        },
        "sum_abs_error": {
            str(r["shots"]): {lv["level"]: round(float(lv["sum_abs_error"]), 4) for lv in r["levels"]}  # type: ignore[index,arg-type]
            for r in results
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
