"""The fixed names this controller and its manifests share (one home per name)."""

from __future__ import annotations

from qubelet.inventory.names import MIN_FIDELITY_ANNOTATION

__all__ = [
    "CONTROLLER_NAME",
    "KUEUE_GROUP",
    "KUEUE_VERSION",
    "LEASE_NAME",
    "LEASE_NAMESPACE",
    "MIN_FIDELITY_ANNOTATION",
    "QUEUE_PREFIX",
]

#: ``spec.controllerName`` of the AdmissionChecks this controller serves (manifests/kueue).
CONTROLLER_NAME = "quantum.example.com/qubelet-admission-check"
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
#: Lease for leader election (namespace of the Deployment).
LEASE_NAME = "qubelet-admission-check"
LEASE_NAMESPACE = "qubelet-system"
#: LocalQueue names are ``qubelet-<backend kind>`` (manifests/kueue/localqueues.yaml).
QUEUE_PREFIX = "qubelet-"
