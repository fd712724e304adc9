"""Policies by name, as the CLI's ``--policy`` flag spells them."""

from __future__ import annotations

from pathlib import Path

from policy.interface import SelectionPolicy
from policy.size_rule import SizePolicy

POLICY_NAMES = ("size", "telemetry", "greedy", "all_cpu")


def make_policy(
    name: str,
    *,
    seed: int = 0,
    model_path: Path | None = None,
    error_budget: float | None = None,
    policy_config: Path | None = None,
) -> SelectionPolicy:
    """Build the policy called ``name``.

    ``model_path`` is a fitted telemetry model (optional: priors when absent),
    ``error_budget`` the largest predicted error a subexperiment may take on (telemetry and
    greedy) and ``policy_config`` the admin's knobs file (``policy.admin``; a bad one raises a
    one-line ``ConfigError``, a ``ValueError``).
    """
    admin = None
    if policy_config is not None:
        from policy.admin import load_policy_config

        admin = load_policy_config(policy_config)
    if name == "size":
        return SizePolicy()
    if name == "all_cpu":
        from policy.baselines import AllCpuPolicy

        return AllCpuPolicy()
    if name == "greedy":
        from policy.baselines import GreedyPolicy

        return (
            GreedyPolicy(seed=seed, admin=admin)
            if error_budget is None
            else GreedyPolicy(seed=seed, error_budget=error_budget, admin=admin)
        )
    if name == "telemetry":
        from policy.telemetry import TelemetryPolicy

        if error_budget is None:
            return TelemetryPolicy.load_or_prior(model_path, seed=seed, admin=admin)
        return TelemetryPolicy.load_or_prior(model_path, seed=seed, error_budget=error_budget, admin=admin)
    raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
