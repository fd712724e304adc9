"""Backend selection for cutting subexperiments: the paper's size rule and a telemetry policy.

``policy`` sees circuits (as :class:`~policy.interface.CircuitFeatures`) and backend state
(:class:`~policy.interface.BackendState`), never the pipeline's workers; the pipeline imports
``policy``, not the other way round.
"""

__all__ = [
    "admin",
    "bounds",
    "cli",
    "cluster_health",
    "decide",
    "evaluate",
    "features",
    "interface",
    "live",
    "loop",
    "metrics",
    "models",
    "probe",
    "registry",
    "scenario_files",
    "scenarios",
    "simulator",
    "size_rule",
    "telemetry",
    "telemetry_sources",
    "trace",
]
