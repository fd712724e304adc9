"""Names fixed across qubelet's components, each defined once.

Every name here is a contract with something outside one component: kubelet, the scheduler, the
manifests, Kueue quotas or the workload inside a pod. The device plugin, the DRA driver, the
policy and the Argo renderer all import them from here so they can never disagree.
"""

from __future__ import annotations

__all__ = [
    "CDI_CLASS",
    "CDI_KIND",
    "CDI_VERSION",
    "DEFAULT_QPU_SPEC",
    "DEVICE_CLASS_NAME",
    "DRIVER_NAME",
    "ENV_IQM_SERVER_URL",
    "ENV_IQM_TOKENS_FILE",
    "ENV_QPU_BACKEND",
    "ENV_QPU_NAME",
    "ENV_RESERVATION_END",
    "ENV_RESERVATION_ID",
    "ENV_RESERVATION_START",
    "MIN_FIDELITY_ANNOTATION",
    "QUBELET_ENV",
    "RESOURCE_NAME",
    "TOKENS_MOUNT_PATH",
]

#: The extended resource pods request (device plugin; the DRA DeviceClass maps it too).
RESOURCE_NAME = "quantum.example.com/qpu"
#: DRA driver name: DeviceClass name, ResourceSlice ``spec.driver``, attribute domain, CDI vendor.
DRIVER_NAME = "qpu.quantum.example.com"
#: The DeviceClass QPU claims name (manifests/dra/deviceclass.yaml); it is the driver name.
DEVICE_CLASS_NAME = DRIVER_NAME
#: CDI class; the CDI kind is ``<vendor>/<class>`` and CDI device names ``<kind>=<qpu name>``.
CDI_CLASS = "qpu"
CDI_KIND = f"{DRIVER_NAME}/{CDI_CLASS}"
#: CDI spec version written by the DRA driver and the device plugin (the version the upstream
#: kubeletplugin helper writes for its specs).
CDI_VERSION = "0.5.0"

#: The embedded QPU a run uses when no real QPU is configured: IQM's noisy fake Apollo.
DEFAULT_QPU_SPEC = "fake:IQMFakeApollo"

#: Env a container given a QPU sees (whichever front end handed it out); see ``qpu_env``.
ENV_QPU_NAME = "QUBELET_QPU_NAME"
ENV_QPU_BACKEND = "QUBELET_QPU_BACKEND"
ENV_IQM_SERVER_URL = "IQM_SERVER_URL"
ENV_IQM_TOKENS_FILE = "IQM_TOKENS_FILE"
#: Env of a claim whose QPU was reserved before the pod bound (docs/dra-driver.md, "Reservations"):
#: the provider's reservation id and its window (RFC 3339, UTC). The IQM backend submits within it.
ENV_RESERVATION_ID = "QUBELET_RESERVATION_ID"
ENV_RESERVATION_START = "QUBELET_RESERVATION_START"
ENV_RESERVATION_END = "QUBELET_RESERVATION_END"
#: Every env name a QPU workload may be given, in a stable order.
QUBELET_ENV: tuple[str, ...] = (ENV_QPU_NAME, ENV_QPU_BACKEND, ENV_IQM_SERVER_URL, ENV_IQM_TOKENS_FILE)

#: Where containers see the (read-only) IQM token file; the host path comes from ``tokensFile``.
TOKENS_MOUNT_PATH = "/var/run/secrets/qubelet/iqm/tokens.json"

#: Pod annotation on a rendered QPU step: the batch's two-qubit fidelity floor, which the Kueue
#: admission check compares with the QPUs' live calibration (docs/admission-check.md).
MIN_FIDELITY_ANNOTATION = "qubelet.quantum.example.com/min-fidelity-2q"
