"""The check's verdict for one Workload from a telemetry snapshot: pure, so it is easy to trust.

- Telemetry unavailable or empty → ``Retry`` (never admit QPU work blind).
- No QPU's live two-qubit fidelity meets the Workload's floor (the weakest fidelity that keeps
  its subexperiments within the error budget; calibration drifted below it) → ``Rejected`` when
  the controller may reject (Argo's retry or a CPU fallback template takes over), else ``Retry``.
- QPUs that meet it are all down → ``Retry``.
- The best of them would make the work wait longer than ``max_wait_seconds`` (queue depth ×
  recent latency) → ``Retry`` after about that wait.
- Otherwise ``Ready``, naming the QPU and the numbers.

The message is what ``kubectl describe workload`` shows under Admission Checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from admission_check.telemetry import QPUTelemetry

State = Literal["Ready", "Retry", "Rejected"]
RETRY_AFTER_SECONDS = 60
MAX_RETRY_AFTER_SECONDS = 600


@dataclass(frozen=True)
class Verdict:
    """A check state with its reason; ``requeue_after_seconds`` only for ``Retry``."""

    state: State
    message: str
    requeue_after_seconds: int | None = None


def decide(
    snapshot: dict[str, QPUTelemetry] | None,
    min_fidelity_2q: float | None,
    *,
    max_wait_seconds: float,
    reject_unmeetable: bool,
    telemetry_error: str = "",
) -> Verdict:
    """The verdict for a Workload needing ``min_fidelity_2q`` (None: no floor)."""
    if snapshot is None:
        return Verdict("Retry", f"QPU telemetry unavailable: {telemetry_error}", RETRY_AFTER_SECONDS)
    if not snapshot:
        return Verdict("Retry", "Prometheus has no QPU series yet", RETRY_AFTER_SECONDS)
    floor = f"2q fidelity >= {min_fidelity_2q:g}" if min_fidelity_2q is not None else "no fidelity floor"
    meeting = [
        q
        for q in snapshot.values()
        if min_fidelity_2q is None or (q.fidelity_2q is not None and q.fidelity_2q >= min_fidelity_2q)
    ]
    if not meeting:
        known = [q for q in snapshot.values() if q.fidelity_2q is not None]
        best = max(known, key=lambda q: q.fidelity_2q or 0.0) if known else None
        detail = f"best {best.name} at {best.fidelity_2q:g}" if best else "no fidelity reported"
        message = f"no QPU meets the error budget ({floor}; {detail}): calibration drifted below it"
        if reject_unmeetable:
            return Verdict("Rejected", message)
        return Verdict("Retry", message, MAX_RETRY_AFTER_SECONDS)
    up = [q for q in meeting if q.up is not False]
    if not up:
        names = ", ".join(sorted(q.name for q in meeting))
        return Verdict("Retry", f"every QPU meeting {floor} is down ({names})", RETRY_AFTER_SECONDS)
    best = min(up, key=lambda q: (q.expected_wait_seconds(), q.name))
    wait = best.expected_wait_seconds()
    fidelity = f"2q fidelity {best.fidelity_2q:g}" if best.fidelity_2q is not None else "2q fidelity unknown"
    numbers = f"{fidelity} ({floor}), queue {best.queue_depth:g} jobs (~{wait:.3g} s)"
    if wait > max_wait_seconds:
        after = int(min(max(wait - max_wait_seconds, RETRY_AFTER_SECONDS), MAX_RETRY_AFTER_SECONDS))
        return Verdict(
            "Retry", f"shortest QPU queue too long: {best.name} {numbers} > {max_wait_seconds:g} s", after
        )
    return Verdict("Ready", f"{best.name} up, {numbers}")
