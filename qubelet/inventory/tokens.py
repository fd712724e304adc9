"""Token files handed to containers: confined to the tokens Secret's mount, copied 0440.

A QPU's ``tokensFile`` (or its namespace's entry in ``tenantTokens``) is read by a root daemon
and bind-mounted into every pod given that QPU. Were any node path allowed, whoever edits the
inventory ConfigMap could read ``/etc/shadow`` from a QPU pod. So a token path resolves
(symlinks included, as the Secret volume's own ``..data`` links are) only inside ``root``, the
directory where the tokens Secret is mounted; anything else is refused in one line.

A staged copy (the runtime cannot see the daemon's Secret volume, so the token is copied to a
hostPath it can mount) is mode 0440, owned by root and by the step pods' group (``gid``): the
pod's user reads it through its group, nobody else on the node does. Token contents are never
logged.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qubelet.errors import QubeletError
from qubelet.inventory.names import TOKENS_MOUNT_PATH

__all__ = [
    "STAGED_MODE",
    "TOKENS_GID",
    "TOKENS_ROOT",
    "TokenMounts",
    "TokenRefused",
    "add_token_flags",
    "confine",
    "stage",
]

#: Where the daemons mount the tokens Secret (the directory of the containers' token path).
TOKENS_ROOT = os.path.dirname(TOKENS_MOUNT_PATH)
#: The group the pipeline image's user runs as (images/pipeline/Dockerfile, runAsGroup).
TOKENS_GID = 10001
#: Mode of a staged token copy: owner and group read, nothing else.
STAGED_MODE = 0o440


class TokenRefused(QubeletError):
    """A token path outside the tokens Secret's mount, or a namespace that has no token."""


def confine(path: str, root: str | Path, what: str = "tokensFile") -> Path:
    """The real path of token file ``path`` (relative: under ``root``), refused outside ``root``.

    Raises:
        TokenRefused: the path resolves (after symlinks) outside ``root``.
    """
    candidate = Path(path) if os.path.isabs(path) else Path(root) / path
    real = Path(os.path.realpath(candidate))
    real_root = Path(os.path.realpath(root))
    if real_root not in real.parents:
        raise TokenRefused(f"{what} {path} resolves outside the tokens Secret mount {root}: refused")
    return real


def stage(data: bytes, target: Path, gid: int | None = None) -> None:
    """Write ``data`` to ``target`` atomically, mode 0440, group ``gid`` (unchanged: no write).

    The directory is created 0700 (only root walks into it; the runtime bind-mounts the file).
    """
    try:
        st = target.stat()
        current = target.read_bytes()
    except FileNotFoundError:
        current, st = None, None
    if (
        current == data
        and st is not None
        and (st.st_mode & 0o777) == STAGED_MODE
        and (gid is None or st.st_gid == gid)
    ):
        return
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if gid is not None:
                os.fchown(fh.fileno(), -1, gid)
            os.fchmod(fh.fileno(), STAGED_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class TokenMounts:
    """Where a daemon finds token files (``root``) and, in a pod, where it stages them.

    ``staging_dir`` is a hostPath mounted at the same path in the daemon's container, so the
    path handed to the runtime exists on the node; None when the daemon runs on the host and the
    runtime can mount the file itself.
    """

    root: Path = Path(TOKENS_ROOT)
    staging_dir: Path | None = None
    gid: int | None = None

    def host_path(self, qpu_name: str, source: str) -> str | None:
        """The node path to bind-mount ``qpu_name``'s token from; None when the file is absent.

        Raises:
            TokenRefused: ``source`` resolves outside ``root``.
            OSError: the file cannot be read, or the copy cannot be written.
        """
        real = confine(source, self.root, what=f"QPU {qpu_name} tokensFile")
        try:
            data = real.read_bytes()
        except FileNotFoundError:
            return None
        if self.staging_dir is None:
            return str(real)
        target = self.staging_dir / f"{qpu_name}.json"
        stage(data, target, self.gid)
        return str(target)


def add_token_flags(parser: argparse.ArgumentParser) -> None:
    """``--tokens-root`` and ``--tokens-gid``, the same for both node daemons."""
    parser.add_argument(
        "--tokens-root",
        default=TOKENS_ROOT,
        help="where the tokens Secret is mounted: token files resolving anywhere else are refused",
    )
    parser.add_argument(
        "--tokens-gid",
        type=int,
        default=TOKENS_GID,
        help="group of the staged token copies (mode 0440): the step pods' runAsGroup",
    )
