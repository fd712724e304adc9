"""Names fixed by the kubelet device plugin contract (upstream ``v1beta1/constants.go``) and ours."""

from __future__ import annotations

#: Directory kubelet watches for device plugin sockets (hostPath in the DaemonSet).
DEVICE_PLUGIN_PATH = "/var/lib/kubelet/device-plugins/"
#: Kubelet's Registration socket file name inside :data:`DEVICE_PLUGIN_PATH`.
KUBELET_SOCKET = "kubelet.sock"
#: The only device plugin API version kubelet supports today.
VERSION = "v1beta1"
#: Device health strings as kubelet expects them.
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"

#: The extended resource pods request (DESIGN.md fixed name).
RESOURCE_NAME = "quantum.example.com/qpu"
#: Our socket file name inside the device-plugins dir (the Register ``endpoint``).
PLUGIN_SOCKET = "qpu.quantum.example.com.sock"
#: CDI kind of the QPU devices; CDI names are ``<CDI_KIND>=<qpu name>``.
CDI_KIND = "qpu.quantum.example.com/qpu"
