"""A lower bound on any schedule's makespan, for judging policies in the simulator.

The LP relaxation of scheduling on unrelated machines (R||Cmax): tasks are grouped into classes
of identical features, ``y[k, b]`` of class ``k`` go to backend ``b`` (fractionally), and backend
``b`` with ``w_b`` workers that starts at ``s_b`` (its queue wait) can do ``w_b · (T − s_b)`` seconds
of work by time ``T``. Also ``T`` is at least the time any single task needs on its best backend.
A schedule only uses backends that start before its makespan, so the bound is the minimum of the
LP over every prefix of backends sorted by start. Times are the true means inflated by the
expected retries ``1 / (1 − p_fail)``; eligibility uses the initial calibration and the budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linprog

from policy.interface import CircuitFeatures
from policy.scenarios import Scenario
from policy.simulator import true_error, true_seconds


def lower_bound(scenario: Scenario, tasks: Sequence[CircuitFeatures]) -> float:
    """max(LP relaxation, longest task) minimised over backend prefixes (seconds)."""
    classes: dict[tuple[int, int, int, int, int], list[CircuitFeatures]] = {}
    for t in tasks:
        classes.setdefault((t.num_qubits, t.depth, t.num_2q_gates, t.num_clbits, t.shots), []).append(t)
    reps = [group[0] for group in classes.values()]
    counts = np.array([len(group) for group in classes.values()], dtype=float)
    specs = [s for s in scenario.backends if s.healthy]
    k, m = len(reps), len(specs)
    times = np.zeros((k, m))
    ok = np.zeros((k, m), dtype=bool)
    for b, spec in enumerate(specs):
        times[:, b] = true_seconds(reps, spec) / (1.0 - spec.failure_prob)
        wide = np.array([spec.max_qubits is None or r.num_qubits <= spec.max_qubits for r in reps])
        ok[:, b] = wide & (true_error(reps, spec, 0.0) <= scenario.error_budget)
    starts = np.array([s.queue_wait_seconds for s in specs])
    best = float("inf")
    for cut in sorted(set(starts.tolist())):
        use = starts <= cut
        allowed = ok & use[None, :]
        if not allowed.any(axis=1).all():
            continue
        pairs = [(i, b) for i in range(k) for b in range(m) if allowed[i, b]]
        n_var = len(pairs) + 1  # y for each allowed pair, then T
        c = np.zeros(n_var)
        c[-1] = 1.0
        a_eq = np.zeros((k, n_var))
        for v, (i, _) in enumerate(pairs):
            a_eq[i, v] = 1.0
        a_ub = np.zeros((m, n_var))
        b_ub = np.zeros(m)
        for v, (i, b) in enumerate(pairs):
            a_ub[b, v] = times[i, b]
        for b, spec in enumerate(specs):
            a_ub[b, -1] = -max(spec.workers, 1)
            b_ub[b] = -max(spec.workers, 1) * starts[b] if use[b] else 0.0
        longest = max(float(np.min(np.where(allowed[i], starts + times[i], np.inf))) for i in range(k))
        bounds = [(0, None)] * len(pairs) + [(max(cut, longest), None)]
        res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=counts, bounds=bounds, method="highs")
        if res.status == 0 and res.x is not None:
            best = min(best, float(res.x[-1]))
    return best
