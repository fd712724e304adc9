"""Devices advertised for the configured QPUs, and what a container given one of them sees.

A QPU is shared by time-slicing, like NVIDIA's ``sharing.timeSlicing``: one QPU with
``replicas: R`` is advertised as R devices ``<name>-r0 .. <name>-r{R-1}``, so R pods can hold it
at once while the QPU's own job queue serialises their circuits. The env and token path here are
the contract (:mod:`qubelet.inventory.names`) every QPU workload reads, whichever front end
(device plugin or DRA driver) handed the QPU out.
"""

from __future__ import annotations

from dataclasses import dataclass

from qubelet.inventory.config import Config, QPUConfig
from qubelet.inventory.names import (
    ENV_IQM_SERVER_URL,
    ENV_IQM_TOKENS_FILE,
    ENV_QPU_BACKEND,
    ENV_QPU_NAME,
    TOKENS_MOUNT_PATH,
)

__all__ = ["Device", "device_id", "devices_for", "qpu_env"]


def qpu_env(qpu: QPUConfig) -> dict[str, str]:
    """Env for a container given ``qpu``; the token file is passed by path, never by value."""
    env = {ENV_QPU_NAME: qpu.name, ENV_QPU_BACKEND: qpu.backend}
    if qpu.endpoint:
        env[ENV_IQM_SERVER_URL] = qpu.endpoint
    if qpu.tokens_file:
        env[ENV_IQM_TOKENS_FILE] = TOKENS_MOUNT_PATH
    return env


@dataclass(frozen=True)
class Device:
    """One advertised device: replica ``replica`` of ``qpu`` (id like ``adonis-onprem-r0``)."""

    id: str
    qpu: QPUConfig
    replica: int


def device_id(qpu_name: str, replica: int) -> str:
    """The stable device id kubelet checkpoints for replica ``replica`` of a QPU."""
    return f"{qpu_name}-r{replica}"


def devices_for(config: Config) -> list[Device]:
    """All devices of ``config``, replicas expanded, in config order."""
    return [
        Device(id=device_id(qpu.name, replica), qpu=qpu, replica=replica)
        for qpu in config.qpus
        for replica in range(qpu.replicas)
    ]
