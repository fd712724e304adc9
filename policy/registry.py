"""Policies by name, as the CLI's ``--policy`` flag spells them."""

from __future__ import annotations

from pathlib import Path

from policy.interface import SelectionPolicy
from policy.size_rule import SizePolicy

POLICY_NAMES = ("size", "telemetry")


def make_policy(name: str, *, seed: int = 0, model_path: Path | None = None) -> SelectionPolicy:
    """Build the policy called ``name``; ``model_path`` is a fitted telemetry model (optional)."""
    if name == "size":
        return SizePolicy()
    if name == "telemetry":
        from policy.telemetry import TelemetryPolicy

        return TelemetryPolicy.load_or_prior(model_path, seed=seed)
    raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
