"""The scheduling loop: re-plan what is left, hand work to free workers, learn from what finished.

This is the one loop both the pipeline's executor (``pipeline/executor.py``: thread pools, the
wall clock, real backends) and the simulator (``policy/simulator.py``: simulated backends, a
virtual clock) run. Both build a :class:`SchedulingLoop` over the run's subexperiments and call
:meth:`SchedulingLoop.dispatch` whenever workers are free and :meth:`SchedulingLoop.complete` /
:meth:`SchedulingLoop.fail` whenever a batch ends, so what ``qubelet policy eval`` measures is
what ``qubelet run`` does.

Cadence (the cost is bounded):

* **Re-plan**: the policy is asked where *every* not-yet-dispatched subexperiment should run,
  given the backends' current states (our own in-flight work counted as their
  ``queue_depth``), at the first dispatch, after any failed batch, as soon as a backend the
  last plan still holds work for is reported unhealthy, and whenever
  ``replan_fraction`` (default 10 %) of the subexperiments pending at the last plan have
  finished since. That is about ``ln(n) / replan_fraction`` plans per run (~90 for 10^4
  subexperiments), each one ``select`` over what is left: the whole loop costs about
  ``1 / replan_fraction`` one-shot plans.
* **Hand-out**: between plans, a free worker gets ``floor(share / (workers × rounds))`` of the
  subexperiments the last plan gave its backend (at least 1, at most ``batch_size``), so each
  backend's share leaves in about ``rounds`` (default 4) hand-outs per worker and later ones
  follow a re-plan with what has been learned. Rounded down, not up: late in a run, when a
  worker's share is a few long subexperiments, one too many handed out at once is the run's
  straggler (a CPU given two 12 s subexperiments when the plan was already wrong). Work only
  this backend can run leaves first, then the longest first: work another backend could also
  run stays re-plannable to the end, instead of leaving the backend's exclusive work for a tail
  no other backend can help with. Batches are a few times more numerous than with a one-shot
  plan: the price of reacting to a backend that slows, fails or drifts. With a single healthy
  backend there is nothing to react with, and its share leaves in ``ceil(share / workers)``:
  one hand-out per worker (batches as a one-shot plan makes them).
* **Refit**: rows of finished subexperiments reach the policy at once (``observe`` with
  ``refit=False``: prediction-error metrics, rows appended); the model is refit before a re-plan
  once ``refit_rows`` (default 20) new rows have arrived since the last fit, so at most one fit
  per re-plan, each over the model's capped rows.

Retries: a failed batch's subexperiments go back to the pending set and are re-planned (with the
backend marked unhealthy by the caller if it keeps failing); one that has failed ``max_attempts``
times is given up and reported by :attr:`SchedulingLoop.given_up`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from policy.interface import BackendState, CircuitFeatures, Decision, SelectionPolicy, TelemetryRow

DEFAULT_ROUNDS = 4
DEFAULT_REFIT_ROWS = 20
#: consecutive failed batches after which a backend is offered as unhealthy for the rest of the run
UNHEALTHY_AFTER = 2


@dataclass(frozen=True)
class LoopSettings:
    """The loop's knobs (admin-tunable, see ``policy/admin.py``)."""

    batch_size: int = 64
    rounds: int = DEFAULT_ROUNDS
    refit_rows: int = DEFAULT_REFIT_ROWS
    max_attempts: int = 3
    replan_fraction: float = 0.1


@dataclass
class Dispatch:
    """Subexperiments handed to one free worker of ``backend`` as one batch."""

    seq: int
    backend: str
    decisions: list[Decision]
    #: a probe-only job (no subexperiment): the mirror circuit of this one (``policy.probe``),
    #: asked for by the policy's ``error_probe`` for a QPU its calibration alone keeps idle
    probe: CircuitFeatures | None = None

    @property
    def keys(self) -> list[str]:
        """The subexperiments' keys, in hand-out order."""
        return [d.key for d in self.decisions]


def _hand_out_order(decision: Decision) -> tuple[int, float]:
    """Work only this backend can run first, then the longest first.

    Work another backend could also run is handed out last, so that a later re-plan can still
    move it if this backend falls behind; were it handed out first, the work nothing else can
    run would be left for the end of the run, when no other backend can help.
    """
    return (len(decision.alternatives), -(decision.predicted_seconds or 0.0))


class SchedulingLoop:
    """Plan the remaining subexperiments, dispatch to free workers, feed back what finished."""

    def __init__(
        self,
        policy: SelectionPolicy,
        tasks: Sequence[CircuitFeatures],
        settings: LoopSettings | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings or LoopSettings()
        self._features: dict[str, CircuitFeatures] = {t.key: t for t in tasks}
        self.pending: dict[str, CircuitFeatures] = dict(self._features)
        self.in_flight: dict[int, Dispatch] = {}
        #: the decision each subexperiment was last dispatched under (what plan.json records)
        self.decisions: dict[str, Decision] = {}
        self.attempts: dict[str, int] = {}
        #: subexperiments that failed ``max_attempts`` times -> the last error
        self.given_up: dict[str, str] = {}
        #: backend a subexperiment last failed on (a dispatch elsewhere counts as a move)
        self.failed_on: dict[str, str] = {}
        self.consecutive_failures: dict[str, int] = {}
        #: backends that failed ``UNHEALTHY_AFTER`` batches in a row: offered as unhealthy
        self.unhealthy: set[str] = set()
        self.replans = 0
        self.refits = 0
        self.moved = 0
        self._unfitted_rows = 0
        self._seq = 0
        self._plan: dict[str, list[Decision]] | None = None
        self._chunk: dict[str, int] = {}
        self._pending_at_plan = 0
        self._done_since_plan = 0
        #: (backend, calibration time) already given a probe-only job this run
        self._probed: set[tuple[str, float | None]] = set()

    @property
    def done(self) -> bool:
        """Nothing pending and nothing in flight."""
        return not self.pending and not self.in_flight

    def _in_flight_on(self, backend: str) -> int:
        return sum(len(d.decisions) for d in self.in_flight.values() if d.backend == backend)

    def observed_states(self, states: Sequence[BackendState]) -> list[BackendState]:
        """The states as the policy sees them: our own in-flight work queued ahead, run health."""
        return [
            replace(
                s,
                queue_depth=s.queue_depth + self._in_flight_on(s.name),
                healthy=s.healthy and s.name not in self.unhealthy,
            )
            for s in states
        ]

    def dispatch(self, states: Sequence[BackendState], free: Mapping[str, int]) -> list[Dispatch]:
        """Re-plan every pending subexperiment and hand batches to the free workers.

        ``free`` is the number of idle workers per backend name. Raises the policy's
        ``NoUsableBackendError`` when a pending subexperiment fits no healthy backend.
        """
        if not self.pending or not any(n > 0 for n in free.values()):
            return []
        due = max(1.0, self.settings.replan_fraction * self._pending_at_plan)
        if self._plan is None or self._done_since_plan >= due or self._planned_on_unhealthy(states):
            self._replan(states)
        assert self._plan is not None
        out: list[Dispatch] = []
        for backend, planned in self._plan.items():
            for _ in range(max(int(free.get(backend, 0)), 0)):
                chunk = planned[: self._chunk[backend]]
                if not chunk:
                    break
                del planned[: len(chunk)]
                out.append(self._hand_out(backend, chunk))
        out.extend(self._error_probes(states, free, out))
        return out

    def _error_probes(
        self, states: Sequence[BackendState], free: Mapping[str, int], handed: Sequence[Dispatch]
    ) -> list[Dispatch]:
        """Probe-only jobs for idle QPUs whose predicted error alone keeps them idle.

        The policy's optional ``error_probe(pending, state)`` names a subexperiment whose mirror
        circuit is worth one job; at most one per backend and calibration, only on a backend
        with a free worker and no work planned, handed out or in flight (that work is probed).
        """
        wanted = getattr(self.policy, "error_probe", None)
        if wanted is None or not self.pending:
            return []
        busy = {d.backend for d in handed} | {d.backend for d in self.in_flight.values()}
        out: list[Dispatch] = []
        for state in self.observed_states(states):
            mark = (state.name, state.calibration_time)
            planned = (self._plan or {}).get(state.name)
            if state.name in busy or planned or free.get(state.name, 0) <= 0 or mark in self._probed:
                continue
            task = wanted(list(self.pending.values()), state)
            if task is None:
                continue
            self._probed.add(mark)
            self._seq += 1
            dispatch = Dispatch(self._seq, state.name, [], probe=task)
            self.in_flight[dispatch.seq] = dispatch
            out.append(dispatch)
        return out

    def _planned_on_unhealthy(self, states: Sequence[BackendState]) -> bool:
        """Whether the last plan still holds work for a backend now reported unhealthy."""
        if self._plan is None:
            return False
        down = {s.name for s in states if not s.healthy}
        return any(planned and backend in down for backend, planned in self._plan.items())

    def _replan(self, states: Sequence[BackendState]) -> None:
        self._maybe_refit()
        observed = self.observed_states(states)
        decisions = self.policy.select(list(self.pending.values()), observed)
        self.replans += 1
        self._pending_at_plan = len(self.pending)
        self._done_since_plan = 0
        plan: dict[str, list[Decision]] = {}
        for decision in decisions:
            plan.setdefault(decision.backend, []).append(decision)
        workers = {s.name: max(s.workers, 1) for s in observed}
        # with one healthy backend there is nothing to move work between: no extra hand-outs
        alternatives = sum(1 for s in observed if s.healthy) > 1
        rounds = max(self.settings.rounds, 1) if alternatives else 1
        for backend, planned in plan.items():
            planned.sort(key=_hand_out_order)
            share = len(planned) / (workers.get(backend, 1) * rounds)
            # rounded down when re-plans follow (never more than 1/rounds of a worker's share:
            # one long subexperiment too many, handed out late, is the run's straggler)
            per = math.floor(share) if rounds > 1 else math.ceil(share)
            self._chunk[backend] = min(max(per, 1), self.settings.batch_size)
        self._plan = plan

    def _hand_out(self, backend: str, chunk: list[Decision]) -> Dispatch:
        self._seq += 1
        dispatch = Dispatch(self._seq, backend, chunk)
        moved = False
        for decision in chunk:
            del self.pending[decision.key]
            self.decisions[decision.key] = decision
            self.attempts[decision.key] = self.attempts.get(decision.key, 0) + 1
            previous = self.failed_on.pop(decision.key, None)
            moved = moved or (previous is not None and previous != backend)
        self.moved += int(moved)
        self.in_flight[dispatch.seq] = dispatch
        return dispatch

    def complete(self, seq: int, rows: Sequence[TelemetryRow], *, unfinished: Sequence[str] = ()) -> None:
        """Dispatch ``seq`` finished; ``rows`` are its telemetry (what the policy learns from).

        ``unfinished`` keys (none, normally) go back to the pending set.
        """
        dispatch = self.in_flight.pop(seq)
        self.consecutive_failures[dispatch.backend] = 0
        self._done_since_plan += len(dispatch.decisions) - len(unfinished)
        self._observe(rows)
        if dispatch.probe is not None:  # new knowledge of a QPU's error: refit and re-plan
            self._unfitted_rows = max(self._unfitted_rows, self.settings.refit_rows)
            self._plan = None
        by_key = {d.key: d for d in dispatch.decisions}
        for key in unfinished:
            self._requeue(by_key[key], "not finished")
        if unfinished:
            self._plan = None

    def fail(self, seq: int, error: str, rows: Sequence[TelemetryRow] = ()) -> bool:
        """Dispatch ``seq`` failed: its subexperiments are re-planned, or given up after max attempts.

        Returns whether this failure made its backend unhealthy (``UNHEALTHY_AFTER`` in a row).
        """
        dispatch = self.in_flight.pop(seq)
        self._observe(rows)
        self._plan = None  # re-plan what failed (and what was planned around it)
        for decision in dispatch.decisions:
            self.failed_on[decision.key] = dispatch.backend
            self._requeue(decision, error)
        count = self.consecutive_failures.get(dispatch.backend, 0) + 1
        self.consecutive_failures[dispatch.backend] = count
        if count >= UNHEALTHY_AFTER and dispatch.backend not in self.unhealthy:
            self.unhealthy.add(dispatch.backend)
            return True
        return False

    def _observe(self, rows: Sequence[TelemetryRow]) -> None:
        observe = getattr(self.policy, "observe", None)
        if observe is not None and rows:
            observe(list(rows), refit=False)
            self._unfitted_rows += len(rows)

    def _requeue(self, decision: Decision, error: str) -> None:
        if self.attempts.get(decision.key, 0) >= self.settings.max_attempts:
            self.given_up[decision.key] = error
            return
        self.pending[decision.key] = self._features[decision.key]

    def _maybe_refit(self) -> None:
        if self._unfitted_rows < max(self.settings.refit_rows, 1):
            return
        refit = getattr(self.policy, "refit", None)
        if refit is not None:
            refit()
            self.refits += 1
        self._unfitted_rows = 0
