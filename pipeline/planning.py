"""From policy decisions to batches: the unit of work a worker pool (or an Argo step) runs.

Submitting one job per subexperiment lets per-job overhead dominate (a QPU job costs a transpile
and a round trip; an Aer job a start-up). So each backend's subexperiments are grouped into
batches of at most ``batch_size``, and into at least as many batches as the backend has workers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from policy.interface import BackendKind, BackendState, Decision
from policy.loop import LoopSettings
from qubelet import serde

if TYPE_CHECKING:
    from pipeline.config import RunConfig


@dataclass
class Batch:
    """Subexperiments that run as one job on one backend."""

    id: str
    backend: str
    kind: BackendKind
    keys: list[str]
    min_qubits: int | None = None
    min_fidelity_2q: float | None = None
    #: QPU batches: the QPUs the policy would take, best first (``qpu_choices``), for the claim
    choices: list[dict[str, Any]] = field(default_factory=list)

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
        """The batch called ``batch_id`` (KeyError naming a few known ones if absent)."""
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


def qpu_choices(
    members: Sequence[Decision], states: Mapping[str, BackendState], min_fidelity_2q: float | None
) -> list[dict[str, Any]]:
    """The QPUs a batch could run on, best first: the policy's pick, then by predicted finish.

    A QPU qualifies when the policy found it wide enough for every member (it appears in each
    member's ``alternatives``) and its published two-qubit fidelity meets the batch's floor (the
    same test the claim's CEL selector makes). Each entry names the backend, its model and the
    predicted seconds to finish the batch there (its wait plus the members' run times).
    """
    chosen = members[0].backend

    def finish(name: str) -> float:
        rows = [d.alternatives.get(name, {}) for d in members]
        return max((r.get("wait", 0.0) for r in rows), default=0.0) + sum(r.get("seconds", 0.0) for r in rows)

    candidates = [
        name
        for name, state in states.items()
        if state.kind == "qpu"
        and state.healthy
        and (name == chosen or all(name in d.alternatives for d in members))
        and (min_fidelity_2q is None or state.fidelity_2q is None or state.fidelity_2q >= min_fidelity_2q)
    ]
    ranked = sorted(candidates, key=lambda name: (name != chosen, finish(name), name))
    return [
        {"backend": name, "model": states[name].model, "predicted_seconds": round(finish(name), 6)}
        for name in ranked
    ]


def batch_decisions(
    decisions: Sequence[Decision],
    batch_size: int,
    workers: dict[str, int],
    prefix: str = "",
    states: Sequence[BackendState] = (),
) -> list[Batch]:
    """Group decisions by backend into near-equal batches (order of first appearance kept).

    With ``states`` a QPU batch also carries its ranked :func:`qpu_choices`, and its fidelity
    floor is dropped when the chosen QPU's published fidelity is below it (the policy found no
    QPU within the error budget and knowingly took the least-error one).
    """
    by_name = {s.name: s for s in states}
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
            floor = max(fidelities) if fidelities else None
            picked = by_name.get(backend)
            if floor is not None and picked is not None and (picked.fidelity_2q or 1.0) < floor:
                # no QPU met the budget and the policy took the least-error one: a floor above
                # its own fidelity would make the claim unsatisfiable, so there is none
                floor = None
            choices = qpu_choices(members, by_name, floor) if members[0].kind == "qpu" and by_name else []
            batches.append(
                Batch(
                    id=f"{prefix}{slug}-{index:03d}",
                    backend=backend,
                    kind=members[0].kind,
                    keys=[d.key for d in members],
                    min_qubits=max(qubits) if qubits else None,
                    min_fidelity_2q=floor,
                    choices=choices,
                )
            )
    return batches


def decision_record(
    decision: Decision, states: Sequence[BackendState], error_budget: float | None
) -> dict[str, Any]:
    """One decision as ``plan.json`` keeps it: the winner, and every candidate and why it lost.

    Each candidate backend the run offered carries the policy's predicted run time, queue wait
    and error for this subexperiment (where the policy predicts them: ``size`` and ``all_cpu``
    do not) and, for the losers, the reason: unhealthy (with the signal that said so:
    ``unhealthy: <reason>``) or too narrow, over the error budget, or a later predicted finish.
    """
    chosen = decision.alternatives.get(decision.backend, {})
    chosen_finish = chosen.get("wait", 0.0) + chosen.get("seconds", 0.0) if chosen else None
    candidates = []
    for state in states:
        prediction = decision.alternatives.get(state.name)
        entry: dict[str, Any] = {"backend": state.name, "kind": state.kind}
        if prediction is not None:
            finish = prediction.get("wait", 0.0) + prediction.get("seconds", 0.0)
            entry.update(
                run_seconds=round(prediction.get("seconds", 0.0), 6),
                queue_wait_seconds=round(prediction.get("wait", 0.0), 6),
                error=round(prediction.get("error", 0.0), 6),
                finish_seconds=round(finish, 6),
            )
        if state.name == decision.backend:
            entry["chosen"] = True
        elif not state.healthy:
            entry["lost_because"] = (
                f"unhealthy: {state.unhealthy_reason}" if state.unhealthy_reason else "unhealthy"
            )
        elif prediction is None and decision.alternatives:
            entry["lost_because"] = "too narrow or down"
        elif prediction is None:
            entry["lost_because"] = f"not this policy's choice ({decision.reason})"
        elif error_budget is not None and prediction.get("error", 0.0) > error_budget:
            entry["lost_because"] = f"predicted error {prediction['error']:.3g} > budget {error_budget}"
        elif chosen_finish is not None and entry["finish_seconds"] > chosen_finish:
            entry["lost_because"] = (
                f"later predicted finish ({entry['finish_seconds']:.3g}s vs {chosen_finish:.3g}s)"
            )
        else:
            entry["lost_because"] = "its workers were busy with earlier work of this plan"
        candidates.append(entry)
    return {
        "backend": decision.backend,
        "reason": decision.reason,
        "predicted_seconds": decision.predicted_seconds,
        "predicted_error": decision.predicted_error,
        "candidates": candidates,
    }


def loop_settings_for(config: RunConfig, policy: object) -> LoopSettings:
    """The loop's cadence for a run (the executor's loop and the dry run's rehearsal of it).

    Batch size and attempts come from ``config``, the rest from the policy's admin config when
    it has one.
    """
    base = LoopSettings(batch_size=config.batch_size, max_attempts=config.max_attempts)
    admin = getattr(policy, "admin", None)
    return base if admin is None else admin.loop_settings(base)
