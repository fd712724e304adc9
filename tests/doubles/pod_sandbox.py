"""PodSandbox: what the container runtime does to start one container, minus the image (no runtime here).

Run as root inside ``unshare -m --propagation private`` (a private mount namespace), with one
argument: a JSON file describing the container, already resolved from the rendered manifest::

    {"mounts": [{"source": host path, "target": mountPath, "readOnly": bool}, ...],
     "scratch": a directory for overlay upper/work dirs,
     "readOnlyRootFilesystem": bool,
     "uid": int, "gid": int, "capabilities": ["CAP_X", ...],
     "env": {...}, "argv": [...]}

It bind-mounts every volume at its ``mountPath`` (a path missing on this machine is created in a
throwaway overlay of its nearest existing parent, so the host's own directories are never
touched), makes the root filesystem read-only when asked, and then execs the command through
``setpriv`` as the container's uid/gid with exactly the listed capabilities (bounding set, no
inheritable or ambient ones, no_new_privs), as runc does for ``allowPrivilegeEscalation: false``.
Volumes mounted at ``/tmp`` go last: the fake node's files live under the host's /tmp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _deepest_existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _make_target(target: Path, is_dir: bool, scratch: Path, overlaid: set[Path]) -> Path:
    """Create ``target`` (mount point), overlaying its nearest existing parent if needed."""
    parent = _deepest_existing(target)
    real = Path(os.path.realpath(parent)) / target.relative_to(parent)
    if not real.exists():
        writable = [b for b in overlaid if real.is_relative_to(b)]
        base = writable[0] if writable else _deepest_existing(real)
        if base not in overlaid:
            n = len(overlaid)
            upper, work = scratch / f"upper{n}", scratch / f"work{n}"
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            _run(
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={base},upperdir={upper},workdir={work}",
                str(base),
            )
            overlaid.add(base)
        if is_dir:
            real.mkdir(parents=True, exist_ok=True)
        else:
            real.parent.mkdir(parents=True, exist_ok=True)
            real.touch()
    return real


def main(spec_path: str) -> None:
    """Mount the volumes, then become the container's user with its capabilities and exec."""
    spec = json.loads(Path(spec_path).read_text())
    scratch = Path(spec["scratch"])
    overlaid: set[Path] = set()
    mounts = sorted(spec["mounts"], key=lambda m: m["target"] == "/tmp")
    for mount in mounts:
        source = Path(mount["source"])
        target = _make_target(Path(mount["target"]), source.is_dir(), scratch, overlaid)
        _run("mount", "--bind", str(source), str(target))
        if mount.get("readOnly"):
            _run("mount", "-o", "remount,bind,ro", str(target))
    if spec.get("readOnlyRootFilesystem"):
        for base in [Path("/"), *sorted(overlaid)]:
            _run("mount", "-o", "remount,bind,ro", str(base))
    caps = ",".join(["-all", *(f"+{c.lower().removeprefix('cap_')}" for c in spec["capabilities"])])
    os.chdir("/")
    argv = [
        "setpriv",
        f"--reuid={spec['uid']}",
        f"--regid={spec['gid']}",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        f"--bounding-set={caps}",
        "--no-new-privs",
        "--",
        *spec["argv"],
    ]
    os.execvpe("setpriv", argv, spec["env"])


if __name__ == "__main__":
    main(sys.argv[1])
