"""Benchmark: ``size`` vs ``telemetry`` vs a lower bound on simulated clusters.

Scenarios (``policy/scenarios.py``): ``paper`` (the paper's cut: 2 partitions x 216 = 432
subexperiments of 5 qubits on 3 CPU workers + 1 GPU + 1 QPU), ``cloud_queue`` (the QPU sits
behind a 15-minute cloud queue), ``drift`` (1728 subexperiments; the QPU's two-qubit fidelity drops
mid-run), ``wide`` (26-qubit partitions where a good QPU beats saturated simulators), and
``paper_100k`` (the paper cluster at 10^5 subexperiments, for scale). The telemetry policy is
fitted on simulated history of the same cluster (another seed), never on the true costs, and
keeps learning online from finished tasks. All figures come from this one run.

Run: ``python bench/policy.py`` (no arguments). Last line: one JSON object keyed by scenario.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.evaluate import evaluate, format_table
from policy.scenarios import SCENARIOS


def main() -> int:
    started = time.perf_counter()
    evaluations = [evaluate(SCENARIOS[name], seed=0) for name in ("paper", "cloud_queue", "drift", "wide")]
    big = evaluate(SCENARIOS["paper"].scaled(100_000), seed=0)
    big.scenario = "paper_100k"
    evaluations.append(big)
    print("makespan (s) and reconstruction-error proxy (mean subexperiment error), budget 0.35")
    print(format_table(evaluations))
    wall = time.perf_counter() - started
    print(f"targets on paper: telemetry <= 0.5x size and <= 1.25x lower bound; wall {wall:.1f}s")
    print("(the bound uses expected run times, so a large noisy run can land a hair below it)")
    figures: dict[str, Any] = {e.scenario: e.summary() for e in evaluations}
    paper = figures["paper"]
    met = (
        paper["makespan_ratio_vs_size"] <= 0.5
        and paper["makespan_ratio_vs_lower_bound"] <= 1.25
        and all(f["error_budget_held"] for f in figures.values())
    )
    print(f"targets met: {'yes' if met else 'NO'}")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
