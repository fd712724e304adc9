"""Policies by name, as the CLI's ``--policy`` flag spells them."""

from __future__ import annotations

from pathlib import Path

from policy.interface import SelectionPolicy
from policy.size_rule import SizePolicy

POLICY_NAMES = ("size", "telemetry", "greedy", "all_cpu")


def make_policy(
    name: str, *, seed: int = 0, model_path: Path | None = None, error_budget: float | None = None
) -> SelectionPolicy:
    """Build the policy called ``name``.

    ``model_path`` is a fitted telemetry model (optional: priors when absent) and
    ``error_budget`` the largest predicted error a subexperiment may take on (telemetry only).
    """
    if name == "size":
        return SizePolicy()
    if name == "all_cpu":
        from policy.baselines import AllCpuPolicy

        return AllCpuPolicy()
    if name == "greedy":
        from policy.baselines import GreedyPolicy

        return (
            GreedyPolicy(seed=seed)
            if error_budget is None
            else GreedyPolicy(seed=seed, error_budget=error_budget)
        )
    if name == "telemetry":
        from policy.telemetry import TelemetryPolicy

        if error_budget is None:
            return TelemetryPolicy.load_or_prior(model_path, seed=seed)
        return TelemetryPolicy.load_or_prior(model_path, seed=seed, error_budget=error_budget)
    raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
