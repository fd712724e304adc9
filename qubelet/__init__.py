"""qubelet: QPUs as schedulable Kubernetes resources, and a hybrid circuit-cutting pipeline.

This top-level package holds only what every part shares (the CLI entry point and klog-style
logging). It imports nothing heavy at import time so node-side images stay small.
"""

__version__ = "0.1.0"
