"""How every qubelet process exposes Prometheus metrics: one convention, applied in one place.

- No ``_created`` series. prometheus_client adds a ``<name>_created`` timestamp beside every
  counter and histogram (and each of their label sets), which doubles the series count for
  information Prometheus 2 does not use. Every metrics module calls :func:`configure` at import.
- Base units (seconds, not milliseconds) and ``qubelet_`` names; ``docs/metrics.md`` is generated
  from the code (``python -m qubelet.metrics_doc``) and a test keeps it current.
"""

from __future__ import annotations

from prometheus_client import disable_created_metrics

__all__ = ["configure"]


def configure() -> None:
    """Apply the exposition convention to this process (idempotent, cheap)."""
    disable_created_metrics()
