"""The scheduling loop rehearsed on predicted run times: what ``qubelet run --dry-run`` estimates.

A real run does not execute a one-shot plan: :class:`policy.loop.SchedulingLoop` hands batches
to workers as they free up and re-plans as work completes, so it submits more (smaller) batches
than a one-shot plan has, and work can move between backends. A dry run that costed the one-shot
plan would count neither. :func:`rehearse` drives the same loop on a virtual clock where every
batch takes what the model predicts — its backend's queue wait before the first, then the
subexperiments' predicted seconds plus the per-job overhead — and nothing fails and nothing is
learned (no telemetry exists yet). What comes out is the loop's own split and batch count under
the predictions, and the makespan they imply.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from policy.interface import BackendState, CircuitFeatures, SelectionPolicy
from policy.loop import Dispatch, LoopSettings, SchedulingLoop
from policy.models import PolicyModel
from policy.probe import batch_mirror

#: predicted seconds of ``tasks`` run one after another on ``state`` (the caller's cost model)
Predictor = Callable[[Sequence[CircuitFeatures], BackendState], float]


def batch_seconds(
    model: PolicyModel, tasks: Sequence[CircuitFeatures], state: BackendState, exact_max_width: int
) -> float:
    """Predicted seconds of one batch: its subexperiments, and on a QPU the mirror probe it carries."""
    seconds = float(model.predict_seconds(tasks, state).sum())
    mirror = batch_mirror(list(tasks), exact_max_width) if state.kind == "qpu" else None
    if mirror is not None:
        seconds += float(model.predict_seconds([mirror], state)[0])
    return seconds


@dataclass(frozen=True)
class Rehearsal:
    """The loop's dispatches under the predictions, and when the last one would end."""

    dispatches: list[Dispatch]
    makespan: float
    replans: int

    def assignment(self) -> dict[str, str]:
        """Subexperiment key → the backend the loop dispatched it to."""
        return {key: d.backend for d in self.dispatches for key in d.keys}

    def batches(self) -> dict[str, int]:
        """Batches (jobs) per backend."""
        out: dict[str, int] = {}
        for d in self.dispatches:
            out[d.backend] = out.get(d.backend, 0) + 1
        return out


def rehearse(
    policy: SelectionPolicy,
    tasks: Sequence[CircuitFeatures],
    states: Sequence[BackendState],
    settings: LoopSettings,
    predict: Predictor,
    queue_wait: Callable[[BackendState], float] = lambda _state: 0.0,
) -> Rehearsal:
    """Run ``tasks`` through a :class:`SchedulingLoop` over ``policy`` on predicted times."""
    loop = SchedulingLoop(policy, tasks, settings)
    by_name = {s.name: s for s in states}
    free = {s.name: max(s.workers, 1) for s in states}
    ready = {s.name: queue_wait(s) for s in states}  # a backend's queue before its first job
    features = {t.key: t for t in tasks}
    events: list[tuple[float, int, Dispatch]] = []
    dispatches: list[Dispatch] = []
    now = makespan = 0.0
    while not loop.done:
        for dispatch in loop.dispatch(states, free):
            state = by_name[dispatch.backend]
            free[dispatch.backend] -= 1
            seconds = predict([features[k] for k in dispatch.keys], state) + state.job_overhead_seconds
            end = max(now, ready[dispatch.backend]) + seconds
            heapq.heappush(events, (end, dispatch.seq, dispatch))
            dispatches.append(dispatch)
        if not events:
            break
        now, _, done = heapq.heappop(events)
        makespan = max(makespan, now)
        free[done.backend] += 1
        loop.complete(done.seq, [])
    return Rehearsal(dispatches=dispatches, makespan=makespan, replans=loop.replans)
