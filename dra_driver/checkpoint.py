"""The checkpoint: what this plugin has prepared, on disk, so a restart forgets nothing.

kubelet may call NodeUnprepareResources after the plugin restarted, and after the claim is
gone from the API server, so unprepare must work from local state alone. The file is JSON
(never pickle), versioned, and carries a sha256 over its canonical payload; it is written
atomically. A checkpoint that cannot be used (not UTF-8, not JSON, nested too deep, another
version, a wrong checksum, a malformed entry, or a path that is a directory or unreadable) is
logged as one line, moved aside to ``<name>.bad-<UTC time>.<ns>-<random>`` (unique even for two
in the same second; only the newest :data:`MAX_SET_ASIDE` are kept) so an operator can inspect it
and the next save does not trip over it, and the plugin starts without it rather than
crash-looping. kubelet does not prepare again a claim it has already prepared, so starting
*empty* would lose the running pods' devices: the driver then rebuilds the checkpoint from the
CDI specs on disk (:meth:`dra_driver.driver.QPUDriver.restore`), marking those entries
``recovered`` (uid and devices known, the claim's name and request names not).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dra_driver.cdi import atomic_write_json
from qubelet import klog
from qubelet.errors import QubeletError

CHECKPOINT_VERSION = "v1"
#: How many set-aside copies of unusable checkpoints are kept (the oldest go first).
MAX_SET_ASIDE = 5
log = klog.get_logger("qubelet.dra.checkpoint")


class CheckpointError(QubeletError, ValueError):
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
    #: rebuilt from a CDI spec after the checkpoint was lost: enough to unprepare and to keep
    #: the spec, not to answer prepare (that reads the claim again)
    recovered: bool = False


def _canonical(claims: dict[str, Any]) -> bytes:
    return json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()


def _entry(claim: PreparedClaim) -> dict[str, Any]:
    entry = asdict(claim)
    if not claim.recovered:
        del entry["recovered"]  # the v1 format as before for every ordinary claim
    return entry


def encode(claims: dict[str, PreparedClaim]) -> dict[str, Any]:
    """The checkpoint document for a set of prepared claims."""
    payload = {uid: _entry(c) for uid, c in sorted(claims.items())}
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
                recovered=bool(c.get("recovered", False)),
            )
            for uid, c in payload.items()
        }
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint claim entry malformed: {exc!r}") from exc


class Checkpoint:
    """Reads and writes the checkpoint file of one plugin instance."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: the last :meth:`load` found a file it could not use (and set it aside)
        self.unusable = False

    def load(self) -> dict[str, PreparedClaim]:
        """Prepared claims from disk; empty when missing, or when unusable (then set aside).

        Never raises: every way the file can be bad ends in one error line and an empty start,
        because a daemon that exits on a bad checkpoint crash-loops and prepares nothing.
        """
        self.unusable = False
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:  # a directory, unreadable, I/O error
            self._set_aside(f"cannot read: {exc.strerror or exc}")
            return {}
        try:
            return decode(json.loads(raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            self._set_aside(f"not UTF-8 at byte {exc.start}")
        except json.JSONDecodeError as exc:
            self._set_aside(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        except RecursionError:
            self._set_aside("JSON nested too deeply")
        except CheckpointError as exc:
            self._set_aside(str(exc))
        return {}

    def _set_aside(self, why: str) -> None:
        """Log the unusable checkpoint in one line and rename it out of the way (bounded)."""
        self.unusable = True
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now / 1e9))
        aside = self.path.with_name(
            f"{self.path.name}.bad-{stamp}.{now % 1_000_000_000:09d}-{secrets.token_hex(3)}"
        )
        try:
            if aside.exists():  # 24 random bits in the same nanosecond: refuse to overwrite
                raise FileExistsError(17, "set-aside name taken", str(aside))
            os.replace(self.path, aside)
        except OSError as exc:
            log.error(
                "ignoring unusable checkpoint, starting empty; could not move it aside",
                err=why,
                path=str(self.path),
                moveErr=exc.strerror or str(exc),
            )
            return
        log.error(
            "ignoring unusable checkpoint, starting empty", err=why, path=str(self.path), movedTo=str(aside)
        )
        self._prune_set_aside()

    def _prune_set_aside(self) -> None:
        """Keep the newest :data:`MAX_SET_ASIDE` set-aside copies (names sort by time)."""
        copies = sorted(self.path.parent.glob(f"{self.path.name}.bad-*"))
        for old in copies[:-MAX_SET_ASIDE]:
            try:
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
            except OSError as exc:
                log.warning(
                    "could not remove old set-aside checkpoint", path=str(old), err=exc.strerror or str(exc)
                )

    def save(self, claims: dict[str, PreparedClaim]) -> None:
        """Persist the prepared claims atomically."""
        atomic_write_json(self.path, encode(claims))
