"""The QPU inventory every component shares: config model, validation, devices, health, names.

The device plugin, the DRA driver (kubelet plugin and controller), the policy and the Argo
renderer all read the same ``qpus.yaml`` through :func:`load_config` and name things with the
constants in :mod:`qubelet.inventory.names`, so no daemon imports another daemon to learn them
(the same reason NVIDIA's device plugin keeps config and constants in one ``api/config/v1``).
"""

from __future__ import annotations

from qubelet.inventory.config import (
    MAX_DEVICE_ID_LENGTH,
    Config,
    ConfigError,
    Flags,
    ProbeConfig,
    QPUConfig,
    ReservationConfig,
    load_config,
    parse_config,
)
from qubelet.inventory.devices import Device, device_id, devices_for, qpu_env
from qubelet.inventory.health import HealthMonitor, ProbeResult, probe_once

__all__ = [
    "MAX_DEVICE_ID_LENGTH",
    "Config",
    "ConfigError",
    "Device",
    "Flags",
    "HealthMonitor",
    "ProbeConfig",
    "ProbeResult",
    "QPUConfig",
    "ReservationConfig",
    "device_id",
    "devices_for",
    "load_config",
    "parse_config",
    "probe_once",
    "qpu_env",
]
