"""From policy decisions to batches: the unit of work a worker pool (or an Argo step) runs.

Submitting one job per subexperiment lets per-job overhead dominate (a QPU job costs a transpile
and a round trip; an Aer job a start-up). So each backend's subexperiments are grouped into
batches of at most ``batch_size``, and into at least as many batches as the backend has workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from policy.interface import BackendKind, Decision
from qubelet import serde


@dataclass
class Batch:
    """Subexperiments that run as one job on one backend."""

    id: str
    backend: str
    kind: BackendKind
    keys: list[str]
    min_qubits: int | None = None
    min_fidelity_2q: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The batch as stored in ``plan.json``."""
        data: dict[str, Any] = serde.to_json(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        """Read :meth:`to_json` output back."""
        return serde.from_json(cls, data)


@dataclass
class Plan:
    """The batches of a run, persisted as ``plan.json``."""

    run_id: str
    policy: str
    batches: list[Batch]
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    #: keys whose stored result was invalid at planning time (set aside, recomputed) -> why
    invalid: dict[str, str] = field(default_factory=dict)

    def batch(self, batch_id: str) -> Batch:
        for batch in self.batches:
            if batch.id == batch_id:
                return batch
        known = ", ".join(b.id for b in self.batches[:5])
        raise KeyError(f"no batch {batch_id!r} in the plan (batches: {known}...)")

    def to_json(self) -> dict[str, Any]:
        """The plan as stored in ``plan.json``."""
        data: dict[str, Any] = serde.to_json(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """Read :meth:`to_json` output back (missing optional keys take their defaults)."""
        return serde.from_json(cls, data)


def batch_decisions(
    decisions: Sequence[Decision], batch_size: int, workers: dict[str, int], prefix: str = ""
) -> list[Batch]:
    """Group decisions by backend into near-equal batches (order of first appearance kept)."""
    by_backend: dict[str, list[Decision]] = {}
    for decision in decisions:
        by_backend.setdefault(decision.backend, []).append(decision)
    batches: list[Batch] = []
    for backend, chosen in by_backend.items():
        count = max(math.ceil(len(chosen) / batch_size), min(workers.get(backend, 1), len(chosen)))
        per_batch = math.ceil(len(chosen) / count)
        slug = backend.replace(":", "-")
        for index in range(count):
            members = chosen[index * per_batch : (index + 1) * per_batch]
            if not members:
                continue
            qubits = [d.min_qubits for d in members if d.min_qubits is not None]
            fidelities = [d.min_fidelity_2q for d in members if d.min_fidelity_2q is not None]
            batches.append(
                Batch(
                    id=f"{prefix}{slug}-{index:03d}",
                    backend=backend,
                    kind=members[0].kind,
                    keys=[d.key for d in members],
                    min_qubits=max(qubits) if qubits else None,
                    min_fidelity_2q=max(fidelities) if fidelities else None,
                )
            )
    return batches
