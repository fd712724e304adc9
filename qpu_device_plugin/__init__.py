"""The kubelet device plugin for QPUs: ``quantum.example.com/qpu`` over the v1beta1 gRPC API.

``server`` answers kubelet's ``DevicePlugin`` calls, ``plugin`` serves, registers and follows
kubelet restarts, ``metrics`` exports ``qubelet_device_plugin_*``, ``cli`` is the
``qubelet device-plugin`` verb. The inventory (config, devices, health probes) is shared with
the DRA driver and lives in :mod:`qubelet.inventory`; see docs/device-plugin.md.
"""

__all__ = ["cli", "constants", "metrics", "plugin", "server"]
