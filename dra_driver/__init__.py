"""The DRA driver ``qpu.quantum.example.com``: QPUs as ``resource.k8s.io/v1`` devices.

Node side (``kubelet_plugin``): plugin registration, the ``DRAPlugin`` services (v1 and
v1beta1), claim preparation (``driver``, ``cdi``, ``checkpoint``, ``state``), resource health
and the node's ResourceSlice (``slices``, ``reconcile``). Cluster side (``controller``): the
leader-elected publisher of cloud QPU pools. ``client`` is the API client wrapper that turns the
Kubernetes client's errors into :mod:`qubelet.errors`. See docs/dra-driver.md.
"""

__all__ = [
    "cdi",
    "checkpoint",
    "cli",
    "client",
    "constants",
    "controller",
    "devices",
    "driver",
    "grpc_server",
    "health",
    "kubelet_plugin",
    "metrics",
    "reconcile",
    "registration",
    "services",
    "slices",
    "state",
]
