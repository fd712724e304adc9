"""CDI spec files: how a prepared claim's QPU reaches the container.

One transient spec per claim, ``<cdi-dir>/qpu.quantum.example.com-<claim uid>.json``, with one
CDI device per allocated device named ``<claim uid>-<device>`` (the naming dra-example-driver
uses, so two claims on the same QPU replica never collide). Its container edits carry the
QPU's environment (``qpu_env``) and, when the QPU has a tokens file, a read-only bind mount of it
at ``TOKENS_MOUNT_PATH``. The container runtime reads these files; a torn file would fail the
pod's start, so they are written atomically (tmp + fsync + rename).

The runtime bind-mounts a *host* path. When the plugin runs in a pod the token file usually
comes from a Secret mounted into the plugin's container, which the runtime cannot see; with
``tokens_dir`` set (a hostPath such as the plugin's data directory) the token is staged there
(copied when it changed, mode 0440 for the step pods' group, inside a 0700 directory) and that
copy is mounted instead. The token file resolves only inside the tokens Secret's mount, and a
QPU with ``tenantTokens`` gives each namespace its own token (:mod:`qubelet.inventory.tokens`).
The token's content is never logged.

The mount never names a file that does not exist (the runtime would fail the container): a
``fake:`` backend needs no token, so when its file is absent the claim is prepared without the
mount and without ``IQM_TOKENS_FILE``; a real backend without its token fails that one claim
with :class:`MissingTokenError`, which names the Secret the admin must create.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dra_driver.constants import CDI_VERSION
from dra_driver.devices import QPUDevice
from qubelet.errors import QubeletError
from qubelet.inventory import qpu_env
from qubelet.inventory.health import needs_no_token
from qubelet.inventory.names import CDI_KIND, DRIVER_NAME, ENV_IQM_TOKENS_FILE, TOKENS_MOUNT_PATH
from qubelet.inventory.tokens import TOKENS_ROOT, TokenRefused, confine, stage

#: The Secret the manifests mount at the tokens path (``<namespace>/<name>``, key tokens.json).
DEFAULT_TOKENS_SECRET = "qubelet-system/qubelet-iqm-tokens"


class MissingTokenError(QubeletError):
    """A real QPU's token file is absent; the message names the Secret that provides it."""


def spec_path(cdi_dir: str | Path, claim_uid: str) -> Path:
    """Where the spec of one claim lives."""
    return Path(cdi_dir) / f"{DRIVER_NAME}-{claim_uid}.json"


def cdi_device_name(claim_uid: str, device: str) -> str:
    """The CDI device name of one allocated device within a claim."""
    return f"{claim_uid}-{device}"


def cdi_device_id(claim_uid: str, device: str) -> str:
    """Fully qualified CDI device id ``<vendor>/<class>=<name>`` returned to kubelet."""
    return f"{CDI_KIND}={cdi_device_name(claim_uid, device)}"


def container_edits(
    device: QPUDevice, host_tokens_path: str | None = None, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Env and mounts that give a container one QPU (token mounted from ``host_tokens_path``).

    Without ``host_tokens_path`` the container gets no token: no mount, no ``IQM_TOKENS_FILE``.
    ``extra_env`` is what the claim's status adds (its reservation, dra_driver/reservations).
    """
    env = {**qpu_env(device.qpu), **(extra_env or {})}
    if host_tokens_path is None:
        env.pop(ENV_IQM_TOKENS_FILE, None)
    edits: dict[str, Any] = {"env": [f"{k}={v}" for k, v in sorted(env.items())]}
    if host_tokens_path is not None:
        edits["mounts"] = [
            {
                "hostPath": host_tokens_path,
                "containerPath": TOKENS_MOUNT_PATH,
                "options": ["ro", "nosuid", "nodev", "bind"],
            }
        ]
    return edits


def build_spec(
    claim_uid: str,
    devices: list[QPUDevice],
    host_tokens: dict[str, str] | None = None,
    extra_env: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The CDI spec document for one claim; ``host_tokens`` maps QPU name → staged token path.

    ``extra_env`` maps a device name to env only that device's containers get.
    """
    host_tokens = host_tokens or {}
    extra_env = extra_env or {}
    return {
        "cdiVersion": CDI_VERSION,
        "kind": CDI_KIND,
        "devices": [
            {
                "name": cdi_device_name(claim_uid, d.name),
                "containerEdits": container_edits(d, host_tokens.get(d.qpu.name), extra_env.get(d.name)),
            }
            for d in devices
        ],
    }


def atomic_write_json(path: Path, doc: Any) -> None:
    """Write JSON so readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CDIWriter:
    """Writes and removes the per-claim CDI specs in one directory."""

    def __init__(
        self,
        cdi_dir: str | Path,
        tokens_dir: str | Path | None = None,
        tokens_secret: str = DEFAULT_TOKENS_SECRET,
        tokens_root: str | Path = TOKENS_ROOT,
        tokens_gid: int | None = None,
    ) -> None:
        self.cdi_dir = Path(cdi_dir)
        self.tokens_dir = Path(tokens_dir) if tokens_dir else None
        self.tokens_secret = tokens_secret
        #: token files resolve only inside this directory (the tokens Secret's mount)
        self.tokens_root = Path(tokens_root)
        #: group of the staged copies (the step pods' group); None: left as created
        self.tokens_gid = tokens_gid

    def stage_token(self, device: QPUDevice, namespace: str = "") -> str | None:
        """The host path to mount the QPU's token from, for a claim in ``namespace``.

        None when the QPU has no token file, or a fake backend's file is absent. The file is the
        namespace's ``tenantTokens`` entry when the QPU lists tenants (a namespace it does not
        list is refused), else ``tokensFile``; it must resolve inside ``tokens_root``
        (:func:`qubelet.inventory.tokens.confine`). Staged when ``tokens_dir`` is set.

        Raises:
            TokenRefused: outside the Secret's mount, or no token for this namespace.
            MissingTokenError: a real backend's file is absent (names the Secret).
            OSError: other read or write errors.
        """
        qpu = device.qpu
        source = qpu.token_for(namespace)
        if source is None and qpu.tenant_tokens:
            listed = ", ".join(ns for ns, _ in qpu.tenant_tokens)
            raise TokenRefused(
                f"QPU {qpu.name} has no token for namespace {namespace} (tenantTokens lists {listed})"
            )
        if not source:
            return None
        real = confine(source, self.tokens_root, what=f"QPU {qpu.name} tokensFile")
        try:
            data = real.read_bytes()
        except FileNotFoundError:
            if needs_no_token(qpu):
                return None  # a simulator: nothing to authenticate, prepare without a token
            secret_ns, _, name = self.tokens_secret.rpartition("/")
            raise MissingTokenError(
                f"QPU {qpu.name} needs its token file {source}, which is absent: "
                f"create Secret {name} in namespace {secret_ns or 'default'} (key tokens.json)"
            ) from None
        if self.tokens_dir is None:
            return str(real)  # the plugin runs on the host: the runtime can mount the file itself
        suffix = f".{namespace}" if qpu.tenant_tokens else ""
        target = self.tokens_dir / f"{qpu.name}{suffix}.json"
        stage(data, target, self.tokens_gid)
        return str(target)

    def write_claim(
        self,
        claim_uid: str,
        devices: list[QPUDevice],
        namespace: str = "",
        extra_env: dict[str, dict[str, str]] | None = None,
    ) -> list[str]:
        """Write the claim's spec; returns the CDI device ids, in the order of ``devices``.

        ``extra_env``: per device name, env from the claim's status (its reservation).
        """
        staged = {d.qpu.name: p for d in devices if (p := self.stage_token(d, namespace)) is not None}
        spec = build_spec(claim_uid, devices, staged, extra_env)
        atomic_write_json(spec_path(self.cdi_dir, claim_uid), spec)
        return [cdi_device_id(claim_uid, d.name) for d in devices]

    def claim_specs(self) -> dict[str, Path]:
        """Every spec of this driver in the directory, by claim uid (other drivers' are skipped)."""
        prefix, suffix = f"{DRIVER_NAME}-", ".json"
        try:
            names = os.listdir(self.cdi_dir)
        except FileNotFoundError:
            return {}
        return {
            name[len(prefix) : -len(suffix)]: self.cdi_dir / name
            for name in names
            if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix)
        }

    def spec_device_names(self, claim_uid: str) -> list[str] | None:
        """The device names a claim's spec on disk carries; None when it cannot be read as ours."""
        try:
            doc = json.loads(spec_path(self.cdi_dir, claim_uid).read_text(encoding="utf-8"))
            names = [str(d["name"]) for d in doc["devices"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        prefix = f"{claim_uid}-"
        if not all(n.startswith(prefix) for n in names):
            return None
        return [n[len(prefix) :] for n in names]

    def has_spec(self, claim_uid: str) -> bool:
        """Whether the claim's spec file exists."""
        return spec_path(self.cdi_dir, claim_uid).exists()

    def sweep(self, owned: set[str]) -> list[str]:
        """Delete the specs of claims not in ``owned``, and temp files a kill left behind.

        After a kill -9 between writing a spec and persisting the checkpoint (or between
        persisting an unprepare and deleting the spec) a spec stays that no checkpointed claim
        owns; the runtime would keep offering its device. Run at start-up, before serving, so
        no prepare is in flight. Returns the claim uids whose specs were removed.
        """
        removed = []
        for uid, path in sorted(self.claim_specs().items()):
            if uid not in owned:
                path.unlink(missing_ok=True)
                removed.append(uid)
        for tmp in self.cdi_dir.glob(f".{DRIVER_NAME}-*.json.*.tmp"):
            tmp.unlink(missing_ok=True)
        return removed

    def remove_claim(self, claim_uid: str) -> bool:
        """Delete the claim's spec; False when there was none (idempotent unprepare)."""
        path = spec_path(self.cdi_dir, claim_uid)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
