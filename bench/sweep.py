"""Variational loop cost: cutting once and binding per iteration, against re-cutting every time.

What is measured, in one run, on the same circuits and parameter sets:

(a) *cut once*: ``pipeline.api.run`` in a loop, as an optimiser would call it; the first call
    cuts (partition, cost check, QPD expansion), later calls reuse that cut and only bind.
(b) *re-cut*: the same loop with the cut cache cleared before every call (what a loop that
    calls partition_problem/generate_cutting_experiments each iteration pays).

Circuits: the width tutorial's ansatz with its 24 parameters unbound (``efficient_su2(4,
linear, reps=2)``, partition AABB: the cut CNOTs carry no parameter), and a 12-qubit QAOA ring
cut by ``find_cuts`` at W=6 (its cut RZZ gates carry gamma, so each set re-expands the QPD but
``find_cuts`` runs once). Every value is checked against the exact one (within 4 standard
errors). Reported: median seconds per iteration after the first, their ratio, and the median
seconds per phase (cut, bind, execute and reconstruct) of each loop. The last
line is one JSON object.

    python bench/sweep.py [--iterations 6] [--shots 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIGMA_LIMIT = 4.0


def _cases() -> dict[str, dict[str, Any]]:
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.circuit.library import efficient_su2

    gamma, beta = Parameter("gamma"), Parameter("beta")
    ring = QuantumCircuit(12)
    ring.h(range(12))
    for i in range(12):
        ring.rzz(2 * gamma, i, (i + 1) % 12)
    ring.rx(2 * beta, range(12))
    return {
        "width-tutorial-ansatz": {
            "circuit": efficient_su2(4, entanglement="linear", reps=2),
            "observables": ["energy=ZZII+IZZI-IIZZ+XIXI+ZIZZ+IXIX"],
            "options": {"partition": "AABB"},
        },
        "qaoa-ring-12": {
            "circuit": ring,
            "observables": ["cost=" + "+".join(f"Z{i}Z{(i + 1) % 12}" for i in range(12))],
            "options": {"max_subcircuit_width": 6},
        },
    }


def loop(case: dict[str, Any], rows: list[list[float]], shots: int, recut: bool) -> dict[str, Any]:
    """One optimiser loop; returns seconds per iteration and the worst |error| / stderr."""
    from pipeline import api

    seconds = []
    phases: dict[str, list[float]] = {}
    worst = 0.0
    for index, values in enumerate(rows):
        if recut:
            api._TEMPLATES.clear()
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="qubelet-bench-sweep-") as run_dir:
            result = api.run(
                case["circuit"],
                case["observables"],
                case["options"].get("partition"),
                parameter_values=values,
                run_dir=Path(run_dir) / str(index),
                shots=shots,
                seed=11,
                backends=("cpu",),
                policy="size",
                max_subcircuit_width=case["options"].get("max_subcircuit_width"),
            )
        seconds.append(time.perf_counter() - started)
        for phase, value in result.seconds.items():
            phases.setdefault(phase, []).append(value)
        for name, value in result.values.items():
            exact = result.exact[name]
            assert exact is not None, name
            worst = max(worst, abs(value - exact) / result.stderrs[name])
    return {"seconds": seconds, "phases": phases, "worst_sigma": worst}


def main() -> int:
    """Time both loops on both circuits and print the comparison; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--shots", type=int, default=1000)
    args = parser.parse_args()
    import numpy as np

    from pipeline import api

    report: dict[str, Any] = {"iterations": args.iterations, "shots": args.shots, "cases": {}}
    for name, case in _cases().items():
        rng = np.random.default_rng(5)
        rows = rng.uniform(0, np.pi, size=(args.iterations, case["circuit"].num_parameters)).tolist()
        api._TEMPLATES.clear()
        once = loop(case, rows, args.shots, recut=False)
        recut = loop(case, rows, args.shots, recut=True)
        later_once = statistics.median(once["seconds"][1:])
        later_recut = statistics.median(recut["seconds"][1:])
        worst = max(once["worst_sigma"], recut["worst_sigma"])
        report["cases"][name] = {
            "first_iteration_s": round(once["seconds"][0], 3),
            "later_iterations_cut_once_s": round(later_once, 3),
            "later_iterations_recut_s": round(later_recut, 3),
            "speedup": round(later_recut / later_once, 2),
            "worst_error_sigma": round(worst, 2),
            # median seconds per phase of the later iterations (pipeline.api.RunResult.seconds)
            "phases_cut_once_s": {k: round(statistics.median(v[1:]), 3) for k, v in once["phases"].items()},
            "phases_recut_s": {k: round(statistics.median(v[1:]), 3) for k, v in recut["phases"].items()},
        }
        print(
            f"{name}: first {once['seconds'][0]:.2f} s; later iterations median "
            f"{later_once:.2f} s cut once vs {later_recut:.2f} s re-cut ({later_recut / later_once:.2f}x); "
            f"worst |error| {worst:.2f} sigma"
        )
        if worst > SIGMA_LIMIT:
            print(f"FAIL: an answer is {worst:.2f} standard errors from exact", file=sys.stderr)
            return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
