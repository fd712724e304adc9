"""qubelet: QPUs as schedulable Kubernetes resources, and a hybrid circuit-cutting pipeline.

This top-level package holds only what every part shares: the CLI entry point, klog-style
logging, the error tree, daemon plumbing, the Kubernetes client and the QPU inventory (see
docs/architecture.md). It imports nothing heavy at import time so node-side images stay small.
It does note when the process started (:mod:`qubelet.proctime`), so commands report the whole
wait.
"""

from qubelet import proctime as _proctime  # noqa: F401  (first import: records the start)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cli",
    "daemon",
    "errors",
    "exposition",
    "healthz",
    "inventory",
    "klog",
    "kube",
    "metrics_doc",
    "proctime",
    "prometheus",
    "protos",
    "serde",
]
