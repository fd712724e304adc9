"""A cluster run's inputs travel with its Workflow: one ConfigMap, mounted into the generate step.

Why a ConfigMap: the circuit (QPY), the observables, the parameter sets and a fitted policy
model are small files a workflow author has on her laptop. A laptop path in a step's arguments
means nothing in a pod; an Argo artifact needs an artifact repository the cluster may lack. A
ConfigMap is created by the same API call path as the Workflow, is mounted read-only by the
kubelet, and is bounded (etcd stores objects up to about 1.5 MiB; the API server refuses a
ConfigMap above 1 MiB), so :data:`MAX_INPUTS_BYTES` is checked before anything is created.

The step sees the files under :data:`INPUTS_MOUNT` and is given their paths relative to its
working directory ``/`` (``inputs/circuit.qpy``), so the same command line works in any clean
directory that holds ``inputs/``: what the tests do.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qubelet.errors import UsageError

#: Where the generate step's container mounts the inputs, and its working directory.
INPUTS_MOUNT = "/inputs"
STEP_WORKDIR = "/"
#: The same directory as the step's arguments name it (relative to :data:`STEP_WORKDIR`).
INPUTS_DIR = "inputs"
INPUTS_VOLUME = "inputs"
#: The API server refuses ConfigMaps over 1 MiB (data plus binaryData); leave room for metadata.
MAX_INPUTS_BYTES = 1024 * 1024 - 16 * 1024
CONFIGMAP_PREFIX = "qubelet-inputs-"
INPUTS_LABEL = "qubelet.quantum.example.com/inputs"

CIRCUIT = "circuit.qpy"
OBSERVABLES = "observables.json"
PARAMETERS = "parameters.json"
POLICY_MODEL = "policy-model.json"
INVENTORY = "inventory.yaml"


@dataclass(frozen=True)
class RunInputs:
    """The files a cluster run needs besides its flags, by name (text files and binary QPY)."""

    files: dict[str, bytes] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.files)

    @property
    def size(self) -> int:
        """Bytes the ConfigMap will hold (base64 makes binaryData a third larger on the wire)."""
        return sum(len(v) if _is_text(k) else 4 * ((len(v) + 2) // 3) for k, v in self.files.items())

    @property
    def digest(self) -> str:
        """sha256 over names and contents: the ConfigMap's name, so equal inputs share one."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()

    @property
    def configmap_name(self) -> str:
        """``qubelet-inputs-<digest prefix>``: content-addressed, so a re-submit reuses it."""
        return CONFIGMAP_PREFIX + self.digest[:16]

    def path(self, name: str) -> str:
        """The file's path as the step's arguments give it."""
        return f"{INPUTS_DIR}/{name}"

    def configmap(self, namespace: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The ConfigMap (immutable: its name is its content); text as ``data``, QPY as ``binaryData``."""
        import base64

        data = {k: v.decode() for k, v in sorted(self.files.items()) if _is_text(k)}
        binary = {k: base64.b64encode(v).decode() for k, v in sorted(self.files.items()) if not _is_text(k)}
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.configmap_name,
                "namespace": namespace,
                "labels": {**(labels or {}), INPUTS_LABEL: "true"},
            },
            "immutable": True,
        }
        if data:
            body["data"] = data
        if binary:
            body["binaryData"] = binary
        return body

    def check_size(self, limit: int = MAX_INPUTS_BYTES) -> None:
        """Refuse, in one line naming the largest file, inputs a ConfigMap cannot hold."""
        if self.size <= limit:
            return
        largest = max(self.files, key=lambda k: len(self.files[k]))
        raise UsageError(
            f"run inputs are {self.size / 1024:.0f} KiB, above the {limit / 1024:.0f} KiB a ConfigMap "
            f"holds (largest: {largest}, {len(self.files[largest]) / 1024:.0f} KiB): use a smaller "
            "circuit or observable file, or fewer parameter sets per submit"
        )


def _is_text(name: str) -> bool:
    return name.endswith((".json", ".yaml"))


def circuit_qpy(path: Path) -> bytes:
    """The user's circuit file (QPY or OpenQASM) as QPY bytes: one format for the cluster to read."""
    from qiskit import qpy

    from pipeline.circuits import load_circuit_file

    circuit = load_circuit_file(path)
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return buffer.getvalue()


def collect(
    *,
    circuit: Path | None = None,
    observables: tuple[str, ...] | None = None,
    parameters: list[Any] | None = None,
    policy_model: Path | None = None,
    inventory: Path | None = None,
) -> RunInputs:
    """Read the laptop files a run names into :class:`RunInputs` (one-line errors).

    ``observables`` are the resolved specs (from ``--observables`` and ``--observables-file``);
    they travel as a file so a long Hamiltonian does not become a command line.
    """
    files: dict[str, bytes] = {}
    if circuit is not None:
        files[CIRCUIT] = circuit_qpy(circuit)
    if observables:
        files[OBSERVABLES] = json.dumps(list(observables), indent=1).encode()
    if parameters is not None:
        files[PARAMETERS] = json.dumps(parameters).encode()
    if policy_model is not None:
        try:
            text = policy_model.read_bytes()
            json.loads(text)
        except FileNotFoundError:
            raise UsageError(f"--policy-model {policy_model}: no such file") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--policy-model {policy_model}: not a JSON model ({exc})") from None
        files[POLICY_MODEL] = text
    if inventory is not None:
        files[INVENTORY] = inventory.read_bytes()  # already loaded and validated by the caller
    inputs = RunInputs(files)
    inputs.check_size()
    return inputs


def materialise(configmap: Mapping[str, Any], directory: Path) -> Path:
    """Write a ConfigMap's files under ``directory/inputs`` as the kubelet's volume would; return it.

    The kubelet writes ``data`` as UTF-8 and ``binaryData`` decoded: what a test (or a person
    debugging a step on a laptop) needs to run the step's command as the pod would.
    """
    import base64

    target = directory / INPUTS_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name, text in (configmap.get("data") or {}).items():
        (target / name).write_text(text)
    for name, encoded in (configmap.get("binaryData") or {}).items():
        (target / name).write_bytes(base64.b64decode(encoded))
    return target
