"""Compare ``size`` and ``telemetry`` against the lower bound on a simulated scenario.

Honesty rules: the telemetry policy is fitted only on *simulated history* (a smaller run of the
same cluster with another seed, half by the size rule and half by a cold-start telemetry policy
that explores), never on the scenario's true cost parameters; during the evaluated run it learns
online from rows of tasks that have finished. Both policies see the same tasks and cluster.

The reconstruction-error proxy is the mean realised error of the subexperiments (each
subexperiment's error feeds the quasi-probability reconstruction); the budget counts as held when
at most 1 % of subexperiments exceed the per-subexperiment budget (a calibration that drops
mid-run can catch a few tasks already queued on that QPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policy.bounds import lower_bound
from policy.interface import TelemetryRow
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
        return cls(
            makespan=result.makespan,
            mean_error=float(np.mean(result.errors)) if len(result.errors) else 0.0,
            violations=result.budget_violations(budget),
            tasks_per_backend=result.tasks_per_backend(),
        )


@dataclass
class Evaluation:
    """``size`` vs ``telemetry`` vs the lower bound on one scenario."""

    scenario: str
    tasks: int
    error_budget: float
    size: Outcome
    telemetry: Outcome
    lower_bound: float
    history_rows: int

    def summary(self) -> dict[str, Any]:
        """The figures the benchmark's JSON line carries."""
        allowed = VIOLATION_TOLERANCE * self.tasks
        return {
            "tasks": self.tasks,
            "makespan_size_s": round(self.size.makespan, 4),
            "makespan_telemetry_s": round(self.telemetry.makespan, 4),
            "lower_bound_s": round(self.lower_bound, 4),
            "makespan_ratio_vs_size": round(self.telemetry.makespan / self.size.makespan, 4),
            "makespan_ratio_vs_lower_bound": round(self.telemetry.makespan / self.lower_bound, 4),
            "error_proxy_size": round(self.size.mean_error, 4),
            "error_proxy_telemetry": round(self.telemetry.mean_error, 4),
            "budget_violations_size": self.size.violations,
            "budget_violations_telemetry": self.telemetry.violations,
            "error_budget_held": self.telemetry.violations <= allowed,
            "telemetry_tasks_per_backend": self.telemetry.tasks_per_backend,
        }


def simulated_history(scenario: Scenario, seed: int, tasks: int = HISTORY_TASKS) -> list[TelemetryRow]:
    """Telemetry of a small earlier run on the same simulated cluster (what ``policy fit`` reads)."""
    small = scenario.scaled(tasks)
    rows = simulate(small, SizePolicy(), seed=seed, run_id="history-size").rows
    explorer = TelemetryPolicy(
        seed=seed, error_budget=scenario.error_budget, epsilon=0.3, record_metrics=False
    )
    rows += simulate(small, explorer, seed=seed + 1, run_id="history-telemetry").rows
    return rows


def evaluate(scenario: Scenario, *, seed: int = 0, epsilon: float = 0.02) -> Evaluation:
    """Run both policies on the same tasks and compute the bound."""
    tasks = make_tasks(scenario, seed)
    history = simulated_history(scenario, seed=seed + 1000)
    size = simulate(scenario, SizePolicy(), seed=seed, tasks=tasks, run_id="size")
    policy = TelemetryPolicy(
        PolicyModel(history),
        seed=seed,
        error_budget=scenario.error_budget,
        epsilon=epsilon,
        record_metrics=False,
    )
    telemetry = simulate(scenario, policy, seed=seed, tasks=tasks, run_id="telemetry")
    return Evaluation(
        scenario=scenario.name,
        tasks=len(tasks),
        error_budget=scenario.error_budget,
        size=Outcome.of(size, scenario.error_budget),
        telemetry=Outcome.of(telemetry, scenario.error_budget),
        lower_bound=lower_bound(scenario, tasks),
        history_rows=len(history),
    )


def format_table(evaluations: list[Evaluation]) -> str:
    """A readable table: makespan and error proxy of each policy and the bound, per scenario."""
    head = (
        f"{'scenario':<12} {'tasks':>6} {'size s':>10} {'telem s':>9} {'bound s':>9} "
        f"{'t/size':>7} {'t/bound':>7} {'err size':>8} {'err tel':>8} {'viol s/t':>9} {'held':>5}"
    )
    lines = [head, "-" * len(head)]
    for e in evaluations:
        s = e.summary()
        lines.append(
            f"{e.scenario:<12} {e.tasks:>6} {e.size.makespan:>10.3f} {e.telemetry.makespan:>9.3f} "
            f"{e.lower_bound:>9.3f} {s['makespan_ratio_vs_size']:>7.3f} "
            f"{s['makespan_ratio_vs_lower_bound']:>7.3f} {e.size.mean_error:>8.3f} "
            f"{e.telemetry.mean_error:>8.3f} {e.size.violations:>4}/{e.telemetry.violations:<4} "
            f"{'yes' if s['error_budget_held'] else 'NO':>5}"
        )
    return "\n".join(lines)
