"""Names the DRA driver shares with kubelet and its own manifests.

The driver name itself, the CDI kind and the extended resource are shared with the device
plugin and the renderer, so they live in :mod:`qubelet.inventory.names`; everything here is
derived from them or specific to the DRA kubelet plugin protocol.
"""

from __future__ import annotations

from qubelet.inventory.names import CDI_VERSION as CDI_VERSION  # re-exported: one home in names
from qubelet.inventory.names import DRIVER_NAME

#: Service names as kubelet expects them in PluginInfo.supported_versions
#: (k8s.io/kubelet/pkg/apis/dra/v1.DRAPluginService, v1beta1.DRAPluginService, and the
#: dra-health v1 and v1alpha1 DRAResourceHealthService names, listed the way the 1.37
#: kubeletplugin.Start lists them). kubelet 1.37 watches the newest health service listed
#: (v1); 1.34-1.36 know only v1alpha1, which 1.37-1.39 keep as a transition.
DRA_V1_SERVICE = "v1.DRAPlugin"
DRA_V1BETA1_SERVICE = "v1beta1.DRAPlugin"
DRA_HEALTH_V1_SERVICE = "v1.DRAResourceHealth"
DRA_HEALTH_V1ALPHA1_SERVICE = "v1alpha1.DRAResourceHealth"
SUPPORTED_VERSIONS: tuple[str, ...] = (
    DRA_V1_SERVICE,
    DRA_V1BETA1_SERVICE,
    DRA_HEALTH_V1_SERVICE,
    DRA_HEALTH_V1ALPHA1_SERVICE,
)

#: PluginInfo.type for DRA drivers (k8s.io/kubelet/pkg/apis/pluginregistration/v1.DRAPlugin).
PLUGIN_TYPE = "DRAPlugin"
#: File names as kubeletplugin.Start derives them (no rolling-update UID).
REGISTRATION_SOCKET = f"{DRIVER_NAME}-reg.sock"
DRA_SOCKET = "dra.sock"
CHECKPOINT_FILE = "checkpoint.json"

DEFAULT_PLUGINS_DIR = "/var/lib/kubelet/plugins"
DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
DEFAULT_CDI_DIR = "/var/run/cdi"

#: Label on every slice we publish; its value says which publisher owns it, so the node plugin
#: and the controller never delete each other's slices.
PUBLISHER_LABEL = f"{DRIVER_NAME}/publisher"
CONTROLLER_PUBLISHER = "controller"

#: Taint key used when unhealthy devices are kept in the slice with a DeviceTaint.
UNHEALTHY_TAINT_KEY = f"{DRIVER_NAME}/unhealthy"

#: Lease for the controller's leader election.
LEASE_NAMESPACE = "qubelet-system"
LEASE_NAME = f"{DRIVER_NAME.replace('.', '-')}-controller"

#: DRA binding conditions (KEP-5007) of a QPU reserved before binding: published on its devices
#: (``bindingConditions`` / ``bindingFailureConditions``, qualified names as the API validates
#: them) and set in the claim's ``status.devices[].conditions`` by the reservation controller.
RESERVED_CONDITION = f"{DRIVER_NAME}/reserved"
RESERVATION_FAILED_CONDITION = f"{DRIVER_NAME}/reservation-failed"
