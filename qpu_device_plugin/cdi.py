"""The static CDI spec behind the CDI names the device plugin returns (``flags.cdiEnabled``).

With ``cdiEnabled`` Allocate names one CDI device per QPU, ``qpu.quantum.example.com/qpu=<qpu>``.
The container runtime refuses a container whose CDI device no spec defines, so before serving
the plugin writes ``<cdi-dir>/qpu.quantum.example.com-device-plugin.json`` defining exactly the
QPUs it advertises, each with the QPU's environment (the same values Allocate sets; the token
stays an Allocate mount, which exists only when its file does). It is one file, rewritten
atomically at every start, so a QPU removed from the inventory leaves no stale device, and its
name cannot collide with the DRA driver's per-claim specs (``…-<claim uid>.json``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from qubelet.inventory import Config, qpu_env
from qubelet.inventory.names import CDI_KIND, CDI_VERSION, DRIVER_NAME, ENV_IQM_TOKENS_FILE

SPEC_FILE = f"{DRIVER_NAME}-device-plugin.json"
DEFAULT_CDI_DIR = "/var/run/cdi"


def cdi_name(qpu_name: str) -> str:
    """The fully qualified CDI device name Allocate returns for one QPU."""
    return f"{CDI_KIND}={qpu_name}"


def build_spec(config: Config) -> dict[str, Any]:
    """One CDI device per QPU of ``config``, named after the QPU, carrying its environment."""
    devices = []
    for qpu in config.qpus:
        env = qpu_env(qpu)
        env.pop(ENV_IQM_TOKENS_FILE, None)  # set by Allocate together with the mount, or not at all
        devices.append(
            {"name": qpu.name, "containerEdits": {"env": [f"{k}={v}" for k, v in sorted(env.items())]}}
        )
    return {"cdiVersion": CDI_VERSION, "kind": CDI_KIND, "devices": devices}


def write_spec(cdi_dir: str | os.PathLike[str], config: Config) -> Path:
    """Write the spec atomically (readers see the old file or the new one); returns its path."""
    path = Path(cdi_dir) / SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(build_spec(config), fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
