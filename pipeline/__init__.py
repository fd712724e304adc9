"""The hybrid circuit-cutting pipeline: circuit → cut → select → execute → reconstruct → report.

The same stages (:mod:`pipeline.stages`) back the embedded local executor (``qubelet run``) and
the containers of the Argo workflow (``qubelet task``), so a laptop run and a cluster run read
and write identical, content-addressed artifacts.
"""

__all__ = [
    "backends",
    "circuits",
    "cli",
    "cluster",
    "config",
    "cutting",
    "errors",
    "executor",
    "metrics",
    "planning",
    "reconstruct",
    "report",
    "stages",
    "store",
    "telemetry_log",
]
