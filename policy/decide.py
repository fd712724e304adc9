"""The decision: list scheduling for earliest expected completion within an error budget.

Given predicted run times ``T[i, b]`` (seconds, already inflated for expected retries) and
predicted errors ``E[i, b]``, tasks are taken most-constrained first (fewest eligible backends:
a task only the QPU can run is placed before work a simulator could take instead), then
longest-first (by their best eligible time, the LPT order that keeps list scheduling within 4/3
of optimal on identical machines), and each goes to the backend whose earliest free worker would
finish it first::

    finish(i, b) = max(start_b, earliest free worker of b) + T[i, b]

where ``start_b`` is the backend's queue wait. A backend is eligible for a task when it is up,
wide enough, and its predicted error is within the budget; simulators (error 0) always are. If no
backend meets the budget the least-error eligible one is used and the reason says so, because a
run must not stall. With probability ``epsilon`` a different eligible backend is tried, but only
one that finishes the task within the schedule's current makespan (``explore_slack`` 0: idle
time the plan has anyway), so exploration never lengthens the plan; it stops by itself at the
end of a run, where a slow backend's subexperiment would be the straggler (a 10 % allowance let
an explored QPU subexperiment stretch a 0.58 s run by 7 %).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from qubelet.errors import QubeletError


class UnschedulableTaskError(QubeletError, ValueError):
    """Task ``index`` fits no healthy backend."""

    def __init__(self, index: int) -> None:
        super().__init__(f"task {index}: no healthy backend is wide enough")
        self.index = index


@dataclass(frozen=True)
class Assignment:
    """Where task ``task`` goes and why."""

    task: int
    backend: int
    finish: float
    within_budget: bool
    explored: bool


def list_schedule(
    seconds: np.ndarray,
    errors: np.ndarray,
    fits: np.ndarray,
    start: np.ndarray,
    workers: np.ndarray,
    *,
    budget: float,
    rng: np.random.Generator,
    epsilon: float = 0.0,
    explore_slack: float = 0.0,
    latest_start: np.ndarray | None = None,
) -> list[Assignment]:
    """Assign every task (row) to a backend (column); ``fits[i, b]`` marks up-and-wide-enough.

    ``latest_start[i, b]`` (optional, seconds from now) is the last moment task ``i`` may start
    on backend ``b`` within the budget (a QPU whose errors rise with time): a backend whose
    earliest free worker is later is not eligible for it, unless no eligible backend is left.

    Returns one :class:`Assignment` per task, in the order tasks were scheduled (longest first).
    Raises :class:`UnschedulableTaskError` for the first task no backend can run.
    """
    n_tasks, n_backends = seconds.shape
    within = fits & (errors <= budget)
    for i in range(n_tasks):
        if not fits[i].any():
            raise UnschedulableTaskError(i)
    least_error = np.where(fits, errors, np.inf).min(axis=1, keepdims=True)
    fallback = fits & (errors <= least_error + 1e-12)
    eligible = np.where(within.any(axis=1, keepdims=True), within, fallback)
    masked = np.where(eligible, seconds, np.inf)
    # most constrained first (a task only one backend can run must not find that backend filled
    # by work others could have taken), then longest first (LPT) among equally constrained ones
    choices = eligible.sum(axis=1)
    order = sorted(range(n_tasks), key=lambda i: (int(choices[i]), -float(masked[i].min()), i))
    free: list[list[float]] = [[float(start[b])] * max(int(workers[b]), 1) for b in range(n_backends)]
    for heap in free:
        heapq.heapify(heap)
    makespan = 0.0
    out: list[Assignment] = []
    explore_draws = np.asarray(rng.random(n_tasks), dtype=float)
    for i in order:
        begin = np.array([free[b][0] for b in range(n_backends)])
        row, late = masked[i], np.zeros(n_backends, dtype=bool)
        if latest_start is not None:
            late = begin > latest_start[i]
            if np.isfinite(np.where(late, np.inf, row)).any():
                row = np.where(late, np.inf, row)
        finish = begin + row
        best = int(np.argmin(finish))
        chosen, explored = best, False
        if epsilon > 0 and explore_draws[i] < epsilon:
            horizon = max(makespan, float(finish[best])) * (1.0 + explore_slack)
            options = [b for b in range(n_backends) if b != best and np.isfinite(finish[b])]
            options = [b for b in options if finish[b] <= horizon]
            if options:
                chosen, explored = int(options[int(rng.integers(len(options)))]), True
        end = float(finish[chosen])
        heapq.heapreplace(free[chosen], end)
        makespan = max(makespan, end)
        out.append(Assignment(i, chosen, end, bool(within[i, chosen] and not late[chosen]), explored))
    return out
