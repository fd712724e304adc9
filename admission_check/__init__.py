"""``qubelet admission-check``: a Kueue AdmissionCheck controller that gates QPU work on telemetry.

Kueue holds a Workload whose ClusterQueue lists the ``qubelet`` AdmissionCheck (for the ``qpu``
flavor) until this controller sets the check ``Ready``; ``Retry`` sends it back to the queue
and ``Rejected`` deactivates it. See docs/admission-check.md.
"""

__all__ = ["cli", "controller", "decide", "kueue", "metrics", "names", "telemetry"]
