"""A fitted model read under other backend names (laptop names → the cluster's).

Why: the model's per-backend figures (run-time level, queue wait, error factors) are keyed by
backend name; a model fitted on a laptop knows ``qpu:apollo``, a cluster plans for
``qpu:apollo-cloud``. :func:`qubelet.inventory.aliases.telemetry_aliases` gives the mapping;
this renames the training rows and snapshots and refits, so nothing learned is lost.
"""

from __future__ import annotations

from collections.abc import Mapping

from policy.models import PolicyModel


def renamed(model: PolicyModel, aliases: Mapping[str, str]) -> PolicyModel:
    """``model`` with every backend in ``aliases`` renamed (rows of both names pool)."""
    if not aliases:
        return model
    rows = [
        {**row, "backend": aliases.get(str(row.get("backend")), row.get("backend"))} for row in model.rows
    ]
    snapshots = {aliases.get(name, name): snap for name, snap in model.snapshots.items()}
    return PolicyModel(rows, snapshots, model.hyper)  # type: ignore[arg-type]
