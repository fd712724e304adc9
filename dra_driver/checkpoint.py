"""The checkpoint: what this plugin has prepared, on disk, so a restart forgets nothing.

kubelet may call NodeUnprepareResources after the plugin restarted, and after the claim is
gone from the API server, so unprepare must work from local state alone. The file is JSON
(never pickle), versioned, and carries a sha256 over its canonical payload; it is written
atomically. A file that does not parse, has another version or a wrong checksum is logged as
one clear error and ignored (start empty) rather than crashing the daemon: kubelet re-sends
prepare for claims still in use, and prepare is idempotent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dra_driver.cdi import atomic_write_json
from qubelet import klog

CHECKPOINT_VERSION = "v1"
log = klog.get_logger("qubelet.dra.checkpoint")


class CheckpointError(ValueError):
    """The checkpoint file exists but cannot be trusted (one-line message)."""


@dataclass(frozen=True)
class PreparedDevice:
    """One device handed to kubelet for a claim (mirrors the gRPC ``Device`` message)."""

    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    share_id: str | None = None


@dataclass(frozen=True)
class PreparedClaim:
    """A claim this plugin prepared: enough to answer prepare again and to unprepare."""

    namespace: str
    name: str
    uid: str
    devices: tuple[PreparedDevice, ...] = field(default_factory=tuple)


def _canonical(claims: dict[str, Any]) -> bytes:
    return json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()


def encode(claims: dict[str, PreparedClaim]) -> dict[str, Any]:
    """The checkpoint document for a set of prepared claims."""
    payload = {uid: asdict(c) for uid, c in sorted(claims.items())}
    return {
        "version": CHECKPOINT_VERSION,
        "checksum": hashlib.sha256(_canonical(payload)).hexdigest(),
        "claims": payload,
    }


def decode(doc: Any) -> dict[str, PreparedClaim]:
    """Parse and verify a checkpoint document; raises CheckpointError."""
    if not isinstance(doc, dict):
        raise CheckpointError("checkpoint is not a JSON object")
    if doc.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint version {doc.get('version')!r} is not {CHECKPOINT_VERSION!r}")
    payload = doc.get("claims")
    if not isinstance(payload, dict):
        raise CheckpointError("checkpoint has no 'claims' object")
    if hashlib.sha256(_canonical(payload)).hexdigest() != doc.get("checksum"):
        raise CheckpointError("checkpoint checksum mismatch")
    try:
        return {
            uid: PreparedClaim(
                namespace=c["namespace"],
                name=c["name"],
                uid=c["uid"],
                devices=tuple(
                    PreparedDevice(
                        request_names=tuple(d["request_names"]),
                        pool_name=d["pool_name"],
                        device_name=d["device_name"],
                        cdi_device_ids=tuple(d["cdi_device_ids"]),
                        share_id=d.get("share_id"),
                    )
                    for d in c["devices"]
                ),
            )
            for uid, c in payload.items()
        }
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint claim entry malformed: {exc!r}") from exc


class Checkpoint:
    """Reads and writes the checkpoint file of one plugin instance."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, PreparedClaim]:
        """Prepared claims from disk; empty (and one error logged) when missing or corrupt."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            return decode(json.loads(raw))
        except (json.JSONDecodeError, CheckpointError) as exc:
            log.error("ignoring unusable checkpoint, starting empty", err=str(exc), path=str(self.path))
            return {}

    def save(self, claims: dict[str, PreparedClaim]) -> None:
        """Persist the prepared claims atomically."""
        atomic_write_json(self.path, encode(claims))
