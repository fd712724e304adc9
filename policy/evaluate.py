"""Compare ``telemetry`` with the baselines and the lower bound on a simulated scenario.

Baselines (``policy/baselines.py``, ``policy/size_rule.py``): ``all_cpu``, ``greedy`` (the same
scheduler on priors, never learning) and ``size`` (the paper's width rule). The best baseline is
the fastest one that held the error budget (a schedule that breaks the budget is not a valid
answer); when none held it, the fastest one.

Honesty rules: the telemetry policy is fitted only on *simulated history* (a smaller run of the
same cluster with another seed, half by the size rule and half by a cold-start telemetry policy
that explores), never on the scenario's true cost parameters; during the evaluated run it learns
online from rows of tasks that have finished. Every policy sees the same tasks, the same cluster
and the same backend state (published calibration, jobs ahead; never the true wait).

The reconstruction-error proxy is the mean realised error of the subexperiments (each
subexperiment's error feeds the quasi-probability reconstruction); the budget counts as held when
at most 1 % of subexperiments exceed the per-subexperiment budget (a calibration that drops
mid-run can catch a few tasks already queued on that QPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policy.baselines import GreedyPolicy
from policy.bounds import lower_bound
from policy.interface import SelectionPolicy, TelemetryRow
from policy.models import PolicyModel
from policy.scenarios import Scenario
from policy.simulator import SimResult, make_tasks, simulate
from policy.size_rule import SizePolicy
from policy.telemetry import TelemetryPolicy

HISTORY_TASKS = 216
VIOLATION_TOLERANCE = 0.01


@dataclass
class Outcome:
    """One policy's figures on one scenario."""

    makespan: float
    mean_error: float
    violations: int
    tasks_per_backend: dict[str, int]

    @classmethod
    def of(cls, result: SimResult, budget: float) -> Outcome:
        """The figures of one simulated run against a per-subexperiment error ``budget``."""
        return cls(
            makespan=result.makespan,
            mean_error=float(np.mean(result.errors)) if len(result.errors) else 0.0,
            violations=result.budget_violations(budget),
            tasks_per_backend=result.tasks_per_backend(),
        )


BASELINES = ("all_cpu", "greedy", "size")


@dataclass
class Evaluation:
    """``telemetry`` vs every baseline vs the lower bound on one scenario."""

    scenario: str
    tasks: int
    error_budget: float
    outcomes: dict[str, Outcome]  #: by policy name: the baselines and ``telemetry``
    lower_bound: float
    history_rows: int

    def held(self, policy: str) -> bool:
        """Whether ``policy`` kept all but 1 % of subexperiments within the error budget."""
        return self.outcomes[policy].violations <= VIOLATION_TOLERANCE * self.tasks

    def best_baseline(self) -> str:
        """The fastest baseline that held the budget (the fastest of all when none did)."""
        valid = [b for b in BASELINES if self.held(b)] or list(BASELINES)
        return min(valid, key=lambda b: self.outcomes[b].makespan)

    def summary(self) -> dict[str, Any]:
        """The figures the benchmark's JSON line carries."""
        telemetry = self.outcomes["telemetry"]
        best = self.best_baseline()
        return {
            "tasks": self.tasks,
            "makespan_s": {name: round(o.makespan, 4) for name, o in self.outcomes.items()},
            "budget_held": {name: self.held(name) for name in self.outcomes},
            "budget_violations": {name: o.violations for name, o in self.outcomes.items()},
            "error_proxy": {name: round(o.mean_error, 4) for name, o in self.outcomes.items()},
            "best_baseline": best,
            "makespan_ratio_vs_best_baseline": round(telemetry.makespan / self.outcomes[best].makespan, 4),
            "makespan_ratio_vs_size": round(telemetry.makespan / self.outcomes["size"].makespan, 4),
            "lower_bound_s": round(self.lower_bound, 4),
            "makespan_ratio_vs_lower_bound": round(telemetry.makespan / self.lower_bound, 4),
            "error_budget_held": self.held("telemetry"),
            "telemetry_tasks_per_backend": telemetry.tasks_per_backend,
        }


def simulated_history(scenario: Scenario, seed: int, tasks: int = HISTORY_TASKS) -> list[TelemetryRow]:
    """Telemetry of a small earlier run on the same simulated cluster (what ``policy fit`` reads)."""
    small = scenario.scaled(tasks)
    day = 86_400.0
    rows = simulate(small, SizePolicy(), seed=seed, run_id="history-size", start_time=-2 * day).rows
    explorer = TelemetryPolicy(
        seed=seed, error_budget=scenario.error_budget, epsilon=0.3, record_metrics=False
    )
    rows += simulate(small, explorer, seed=seed + 1, run_id="history-telemetry", start_time=-day).rows
    return rows


def evaluate(scenario: Scenario, *, seed: int = 0, epsilon: float = 0.02) -> Evaluation:
    """Run the baselines and the telemetry policy on the same tasks and compute the bound."""
    from policy.registry import make_policy

    tasks = make_tasks(scenario, seed)
    history = simulated_history(scenario, seed=seed + 1000)
    outcomes: dict[str, Outcome] = {}
    for name in BASELINES:
        if name == "greedy":
            baseline: SelectionPolicy = GreedyPolicy(
                seed=seed, error_budget=scenario.error_budget, record_metrics=False
            )
        else:
            baseline = make_policy(name, seed=seed)
        result = simulate(scenario, baseline, seed=seed, tasks=tasks, run_id=name)
        outcomes[name] = Outcome.of(result, scenario.error_budget)
    policy = TelemetryPolicy(
        PolicyModel(history),
        seed=seed,
        error_budget=scenario.error_budget,
        epsilon=epsilon,
        record_metrics=False,
    )
    telemetry = simulate(scenario, policy, seed=seed, tasks=tasks, run_id="telemetry")
    outcomes["telemetry"] = Outcome.of(telemetry, scenario.error_budget)
    return Evaluation(
        scenario=scenario.name,
        tasks=len(tasks),
        error_budget=scenario.error_budget,
        outcomes=outcomes,
        lower_bound=lower_bound(scenario, tasks),
        history_rows=len(history),
    )


def format_table(evaluations: list[Evaluation]) -> str:
    """A readable table: makespan of every policy, the bound, and the budget, per scenario."""
    names = (*BASELINES, "telemetry")
    head = (
        f"{'scenario':<21} {'tasks':>6} "
        + " ".join(f"{n + ' s':>11}" for n in names)
        + f" {'bound s':>9} {'best':>8} {'t/best':>7} {'t/bound':>7} {'held (a/g/s/t)':>15}"
    )
    lines = [head, "-" * len(head)]
    for e in evaluations:
        s = e.summary()
        held = "/".join("y" if e.held(n) else "N" for n in names)
        lines.append(
            f"{e.scenario:<21} {e.tasks:>6} "
            + " ".join(f"{e.outcomes[n].makespan:>11.3f}" for n in names)
            + f" {e.lower_bound:>9.3f} {s['best_baseline']:>8} {s['makespan_ratio_vs_best_baseline']:>7.3f}"
            f" {s['makespan_ratio_vs_lower_bound']:>7.3f} {held:>15}"
        )
    return "\n".join(lines)
