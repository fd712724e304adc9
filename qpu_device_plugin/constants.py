"""Names fixed by the kubelet device plugin contract (upstream ``v1beta1/constants.go``).

Names shared with the DRA driver, the manifests and the workloads (the resource name, the CDI
kind) live in :mod:`qubelet.inventory.names`.
"""

from __future__ import annotations

from qubelet.inventory.names import DRIVER_NAME

#: Directory kubelet watches for device plugin sockets (hostPath in the DaemonSet).
DEVICE_PLUGIN_PATH = "/var/lib/kubelet/device-plugins/"
#: Kubelet's Registration socket file name inside :data:`DEVICE_PLUGIN_PATH`.
KUBELET_SOCKET = "kubelet.sock"
#: The only device plugin API version kubelet supports today.
VERSION = "v1beta1"
#: Device health strings as kubelet expects them.
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"

#: Our socket file name inside the device-plugins dir (the Register ``endpoint``).
PLUGIN_SOCKET = f"{DRIVER_NAME}.sock"
