"""Benchmark: the telemetry policy vs the baselines, on the executor's own scheduling loop.

Every policy runs in :class:`policy.loop.SchedulingLoop` — the loop ``qubelet run`` executes —
driven by the simulator's backends on a virtual clock (``policy/simulator.py``). Baselines:
``all_cpu``, ``greedy`` (the same scheduler on priors, never learning), ``greedy_sim`` (greedy
offered the simulators only) and ``size`` (the paper's width rule). Each run is compared with the
fastest baseline that held the error budget, which is named. The telemetry policy is fitted on
simulated history from another draw of the cluster (``policy.evaluate.history_variant``: timed
events shifted and stretched, another seed), never on the true costs, and keeps learning online.

Modes:

* default: every built-in scenario, seeds 0–9: per scenario the median, min and max of
  telemetry / best budget-holding baseline, and the seeds on which the budget held; then the
  targets of issue 22 (≤ 1.05× on every seed, ≤ 0.85× median in ≥ 3 scenarios, budget held).
* ``--sequence``: five runs in a row per scenario, each on a new draw, cold start, the model
  refit on all earlier runs' telemetry before each (learning across runs).
* ``--quick``: seeds 0–2 only.

Run: ``python bench/policy.py [--quick] [--sequence]``. Last line: one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.evaluate import Evaluation, evaluate, learning_sequence, seed_table
from policy.scenarios import SCENARIOS

NEVER_WORSE_THAN = 1.05
CLEAR_WIN = 0.85
CLEAR_WINS_NEEDED = 3


def seeds_mode(seeds: list[int]) -> dict[str, Any]:
    """Every scenario on every seed; the table, the targets and the figures."""
    by_scenario: dict[str, list[Evaluation]] = {}
    for name, scenario in SCENARIOS.items():
        by_scenario[name] = [evaluate(scenario, seed=seed) for seed in seeds]
        print(f"  {name}: done", file=sys.stderr, flush=True)
    table, figures = seed_table(by_scenario)
    print(f"telemetry makespan / best budget-holding baseline, seeds {seeds[0]}-{seeds[-1]}")
    print(table)
    worst = max(figures, key=lambda n: figures[n]["max"])
    # a win counts only where the telemetry policy held the budget on every seed
    wins = sorted(
        n for n, f in figures.items() if f["median"] <= CLEAR_WIN and f["budget_held_seeds"] == f["seeds"]
    )
    unheld = sorted(n for n, f in figures.items() if f["budget_held_seeds"] < f["seeds"])
    met = figures[worst]["max"] <= NEVER_WORSE_THAN and len(wins) >= CLEAR_WINS_NEEDED and not unheld
    print(
        f"targets: <= {NEVER_WORSE_THAN}x on every seed (worst {figures[worst]['max']:.3f} in {worst}); "
        f"median <= {CLEAR_WIN}x in >= {CLEAR_WINS_NEEDED} scenarios ({', '.join(wins) or 'none'}); "
        f"budget held on every seed (not in: {', '.join(unheld) or 'none'})"
    )
    print(f"targets met: {'yes' if met else 'NO'}")
    return figures


def sequence_mode(runs: int = 5) -> dict[str, Any]:
    """Learning across runs: ratio per run (run 0 cold) for every scenario."""
    figures: dict[str, Any] = {}
    print(f"learning across {runs} runs (run 0 cold; refit on all earlier runs before each)")
    print(f"{'scenario':<21} " + " ".join(f"{'run ' + str(k):>7}" for k in range(runs)) + "   held")
    for name, scenario in SCENARIOS.items():
        evaluations = learning_sequence(scenario, runs=runs, seed=0)
        ratios = [e.summary()["makespan_ratio_vs_best_baseline"] for e in evaluations]
        held = sum(e.held("telemetry") for e in evaluations)
        figures[name] = {
            "ratios": ratios,
            "budget_held_runs": held,
            "mean_after_first": float(np.mean(ratios[1:])),
        }
        print(f"{name:<21} " + " ".join(f"{r:>7.3f}" for r in ratios) + f"   {held}/{runs}")
    return figures


def main(argv: list[str]) -> int:
    """Run the selected mode, print its table and one JSON line."""
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    if "--sequence" in argv:
        figures["sequence"] = sequence_mode()
    else:
        figures["seeds"] = seeds_mode(list(range(3 if "--quick" in argv else 10)))
    print(f"wall {time.perf_counter() - started:.1f}s")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
