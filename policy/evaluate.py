"""Compare ``telemetry`` with the baselines and the lower bound on a simulated scenario.

Every policy runs in the same :class:`policy.loop.SchedulingLoop` the pipeline's executor runs
(``policy/simulator.py`` drives it on a virtual clock), so the figures are those of the loop a
real run executes: re-planning as batches finish, refitting at the loop's cadence.

Baselines (``policy/baselines.py``, ``policy/size_rule.py``): ``all_cpu``, ``greedy`` (the same
scheduler on priors, never learning), ``greedy_sim`` (greedy offered the simulators only) and
``size`` (the paper's width rule). The best baseline is the fastest one that held the error
budget (a schedule that breaks the budget is not a valid answer), and it is named; when none
held it, the fastest one.

Honesty rules: the telemetry policy is fitted only on *simulated history* — a smaller run, half
by the size rule and half by a cold-start telemetry policy that explores, on
:func:`history_variant` of the cluster: another seed *and* another draw of its timed events
(busy windows, drift, sharing and cloud queue shifted and stretched at random), so the history
never replays the run being evaluated — never on the scenario's true cost parameters; during the
evaluated run it learns online from rows of tasks that have finished. Every policy sees the same
tasks, the same cluster and the same backend state (published calibration, jobs ahead; never the
true wait).

The reconstruction-error proxy is the mean realised error of the subexperiments (each
subexperiment's error feeds the quasi-probability reconstruction); the budget counts as held when
at most 1 % of subexperiments exceed the per-subexperiment budget (a calibration that drops
mid-run can catch a few tasks already queued on that QPU).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from policy.admin import PolicyConfig
from policy.baselines import GreedyPolicy, GreedySimulatorsPolicy
from policy.bounds import lower_bound
from policy.interface import SelectionPolicy, TelemetryRow
from policy.loop import LoopSettings
from policy.models import PolicyModel
from policy.scenarios import BackendSpec, Scenario
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


BASELINES = ("all_cpu", "greedy", "greedy_sim", "size")


@dataclass
class Evaluation:
    """``telemetry`` vs every baseline vs the lower bound on one scenario."""

    scenario: str
    tasks: int
    error_budget: float
    outcomes: dict[str, Outcome]  #: by policy name: the baselines and ``telemetry``
    lower_bound: float
    history_rows: int
    replans: int = 0  #: the telemetry run's re-plans (one per dispatch round)
    refits: int = 0  #: the telemetry run's refits (at the loop's cadence)

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
            "replans": self.replans,
            "refits": self.refits,
            "lower_bound_s": round(self.lower_bound, 4),
            "makespan_ratio_vs_lower_bound": round(telemetry.makespan / self.lower_bound, 4),
            "error_budget_held": self.held("telemetry"),
            "telemetry_tasks_per_backend": telemetry.tasks_per_backend,
        }


def history_variant(scenario: Scenario, seed: int) -> Scenario:
    """The cluster on another day: every timed event shifted and stretched by a seeded draw.

    Start times are scaled by U(0.5, 1.5), durations by another U(0.5, 1.5), a cloud queue's
    wait by U(0.5, 1.5): the same kind of trouble, never at the same moments as the evaluated run.
    """
    rng = np.random.default_rng(seed)

    def u() -> float:
        return float(rng.uniform(0.5, 1.5))

    def vary(spec: BackendSpec) -> BackendSpec:
        windows = []
        for start, end in spec.busy_windows:
            begin = start * u()
            windows.append((begin, begin + (end - start) * u()))
        slowdowns = []
        for start, end, factor in spec.slowdowns:
            begin = start * u()
            slowdowns.append((begin, begin + (end - start) * u(), factor))
        drift_at, drift_until = spec.drift_at_seconds, spec.drift_until_seconds
        if drift_at is not None:
            begin = drift_at * u()
            drift_until = None if drift_until is None else begin + (drift_until - drift_at) * u()
            drift_at = begin
        return replace(
            spec,
            busy_windows=tuple(windows),
            slowdowns=tuple(slowdowns),
            drift_at_seconds=drift_at,
            drift_until_seconds=drift_until,
            queue_wait_seconds=spec.queue_wait_seconds * u(),
        )

    return replace(scenario, backends=tuple(vary(b) for b in scenario.backends))


def simulated_history(scenario: Scenario, seed: int, tasks: int = HISTORY_TASKS) -> list[TelemetryRow]:
    """Telemetry of a small earlier run on another draw of the cluster (what ``policy fit`` reads)."""
    small = history_variant(scenario.scaled(tasks), seed)
    day = 86_400.0
    rows = simulate(small, SizePolicy(), seed=seed, run_id="history-size", start_time=-2 * day).rows
    explorer = TelemetryPolicy(
        seed=seed, error_budget=scenario.error_budget, epsilon=0.3, record_metrics=False
    )
    rows += simulate(small, explorer, seed=seed + 1, run_id="history-telemetry", start_time=-day).rows
    return rows


def evaluate(
    scenario: Scenario,
    *,
    seed: int = 0,
    epsilon: float = 0.02,
    history: list[TelemetryRow] | None = None,
    admin: PolicyConfig | None = None,
) -> Evaluation:
    """Run the baselines and the telemetry policy on the same tasks and compute the bound.

    ``history`` is what the telemetry policy is fitted on (default: :func:`simulated_history`);
    ``admin`` the admin's knobs for the telemetry policy and its loop (``policy.admin``).
    """
    from policy.registry import make_policy

    tasks = make_tasks(scenario, seed)
    if history is None:
        history = simulated_history(scenario, seed=seed + 1000)
    outcomes: dict[str, Outcome] = {}
    for name in BASELINES:
        if name == "greedy":
            baseline: SelectionPolicy = GreedyPolicy(
                seed=seed, error_budget=scenario.error_budget, record_metrics=False
            )
        elif name == "greedy_sim":
            baseline = GreedySimulatorsPolicy(
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
        admin=admin,
    )
    settings = None
    if admin is not None:
        settings = admin.loop_settings(LoopSettings(batch_size=scenario.wave_size, max_attempts=10**6))
    telemetry = simulate(
        scenario, policy, seed=seed, tasks=tasks, run_id=f"telemetry-{seed}", settings=settings
    )
    if isinstance(history, list):
        history.extend(telemetry.rows)  # a sequence of runs keeps what this one taught
    outcomes["telemetry"] = Outcome.of(telemetry, scenario.error_budget)
    return Evaluation(
        scenario=scenario.name,
        tasks=len(tasks),
        error_budget=scenario.error_budget,
        outcomes=outcomes,
        lower_bound=lower_bound(scenario, tasks),
        history_rows=len(history),
        replans=telemetry.replans,
        refits=telemetry.refits,
    )


def format_table(evaluations: list[Evaluation]) -> str:
    """A readable table: makespan of every policy, the bound, and the budget, per scenario."""
    names = (*BASELINES, "telemetry")
    head = (
        f"{'scenario':<21} {'tasks':>6} "
        + " ".join(f"{n + ' s':>11}" for n in names)
        + f" {'bound s':>9} {'best':>10} {'t/best':>7} {'t/bound':>7} {'held (a/g/gs/s/t)':>18}"
    )
    lines = [head, "-" * len(head)]
    for e in evaluations:
        s = e.summary()
        held = "/".join("y" if e.held(n) else "N" for n in names)
        lines.append(
            f"{e.scenario:<21} {e.tasks:>6} "
            + " ".join(f"{e.outcomes[n].makespan:>11.3f}" for n in names)
            + f" {e.lower_bound:>9.3f} {s['best_baseline']:>10} {s['makespan_ratio_vs_best_baseline']:>7.3f}"
            f" {s['makespan_ratio_vs_lower_bound']:>7.3f} {held:>18}"
        )
    return "\n".join(lines)


def seed_table(by_scenario: dict[str, list[Evaluation]]) -> tuple[str, dict[str, Any]]:
    """Per scenario over seeds: telemetry / best budget-holding baseline (median, min, max).

    Returns the table and its figures (for the JSON line and docs/benchmarks.md).
    """
    head = (
        f"{'scenario':<21} {'seeds':>5} {'median':>7} {'min':>7} {'max':>7} {'held':>6} "
        f"{'best baselines (seeds)':<34}"
    )
    lines = [head, "-" * len(head)]
    figures: dict[str, Any] = {}
    for name, evaluations in by_scenario.items():
        ratios = [e.summary()["makespan_ratio_vs_best_baseline"] for e in evaluations]
        held = sum(e.held("telemetry") for e in evaluations)
        best: dict[str, int] = {}
        for e in evaluations:
            b = e.best_baseline()
            best[b] = best.get(b, 0) + 1
        named = ", ".join(f"{b} ({n})" for b, n in sorted(best.items(), key=lambda kv: -kv[1]))
        figures[name] = {
            "ratios": ratios,
            "median": float(np.median(ratios)),
            "min": float(np.min(ratios)),
            "max": float(np.max(ratios)),
            "budget_held_seeds": held,
            "seeds": len(evaluations),
            "best_baselines": best,
        }
        lines.append(
            f"{name:<21} {len(evaluations):>5} {np.median(ratios):>7.3f} {min(ratios):>7.3f} "
            f"{max(ratios):>7.3f} {held:>3}/{len(evaluations):<2} {named:<34}"
        )
    return "\n".join(lines), figures


def learning_sequence(scenario: Scenario, *, runs: int = 5, seed: int = 0) -> list[Evaluation]:
    """``runs`` runs in a row, each on a new draw of the cluster, learning across them.

    Run 0 starts cold (priors); before each later run the model is refit on every earlier run's
    telemetry (what ``qubelet policy fit`` over their telemetry.jsonl does). Each run is judged
    against the baselines on its own draw.
    """
    rows: list[TelemetryRow] = []
    out = []
    for k in range(runs):
        day = history_variant(scenario, seed * 1000 + k) if k else scenario
        out.append(evaluate(day, seed=seed + k, history=rows))
    return out
