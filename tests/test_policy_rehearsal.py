"""The dry run's rehearsal of the scheduling loop (``policy/rehearsal.py``).

Oracle: the simulator runs the same loop on the same cluster. When the simulated backends cost
exactly what the policy predicts (no noise, no failures, no other tenants), the rehearsal must
hand out exactly the batches the simulated run did, in the same order, and end when it ended.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from policy.baselines import GreedyPolicy
from policy.interface import OBSERVED_ERROR_MAX_WIDTH
from policy.loop import LoopSettings
from policy.models import PRIOR_COSTS, PolicyModel
from policy.rehearsal import batch_seconds, rehearse
from policy.scenarios import SCENARIOS
from policy.simulator import _Backend, make_tasks, simulate


@pytest.mark.parametrize("name", ["wide", "qpu_only_wide"])
def test_rehearsal_is_the_loop_under_exact_predictions(name: str) -> None:
    import numpy as np

    scenario = SCENARIOS[name].scaled(160)
    exact = tuple(
        replace(b, cost=PRIOR_COSTS[b.kind], noise_sigma=0.0, failure_prob=0.0, error_scale=1.0)
        for b in scenario.backends
    )
    scenario = replace(scenario, backends=exact)
    tasks = make_tasks(scenario, seed=3)
    settings = LoopSettings(batch_size=scenario.wave_size, max_attempts=10**6)
    simulated = simulate(scenario, GreedyPolicy(record_metrics=False), seed=3, tasks=tasks, settings=settings)

    states = [_Backend(spec, np.random.default_rng(0)).state(0.0, 0.0, 0.0) for spec in scenario.backends]
    model = PolicyModel()
    rehearsal = rehearse(
        GreedyPolicy(record_metrics=False),
        tasks,
        states,
        settings,
        predict=lambda work, state: batch_seconds(model, work, state, OBSERVED_ERROR_MAX_WIDTH),
    )
    batches: dict[str, list[str]] = {}
    for row in simulated.rows:
        batches.setdefault(str(row["task_id"]).split("/")[0], []).append(str(row["backend"]))
    simulated_backends = [group[0] for group in batches.values()]
    assert [d.backend for d in rehearsal.dispatches] == simulated_backends
    assert len(set(simulated_backends)) > 1, "the loop spreads this work over several backends"
    assert sum(len(d.keys) for d in rehearsal.dispatches) == len(tasks)
    assert rehearsal.makespan == pytest.approx(simulated.makespan, rel=1e-6)
    assert rehearsal.batches() == {b: simulated_backends.count(b) for b in set(simulated_backends)}
