"""An advisory lock on a run directory, so two runs never write into one directory at once.

Why: a run directory is resumable, so a second ``qubelet run --run-dir D`` started while the
first is still going used to pass the manifest check, run the same subexperiment keys and mix
the two runs' results (different shot counts in one reconstruction). ``qubelet run`` and
``qubelet task generate`` now take the lock exclusively; ``task execute`` and ``task
reconstruct`` take it shared, because a workflow runs many execute steps of one run at once.

The lock is ``flock(2)`` on ``<run_dir>/.qubelet.lock``: the kernel drops it when the holder
dies (kill -9 included), so there is never a stale lock to clean up. The exclusive holder writes
its pid and start time into the file, only to make the refusal message useful. Within one
process the lock is re-entrant (flock would otherwise conflict with itself on a second open).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import RunDirBusyError, StorageError
from qubelet import klog

log = klog.get_logger("qubelet.pipeline")

LOCK_NAME = ".qubelet.lock"
_POLL_SECONDS = 0.1

_held_lock = threading.Lock()
#: resolved lock path -> (fd, mode, depth) for the locks this process holds
_held: dict[str, tuple[int, int, int]] = {}


def storage_error(path: Path | str, exc: OSError, action: str = "cannot write") -> StorageError:
    """One-line error for a filesystem fault, naming the path and the reason (never a traceback)."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.EEXIST or exc.errno == errno.ENOTDIR:
        reason = f"{reason} (a file is in the way of the run directory)"
    return StorageError(f"{path}: {action}: {reason}")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        since = time.strftime("%H:%M:%S UTC", time.gmtime(float(info["since"])))
        return f" (pid {int(info['pid'])} since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _open_lock_file(run_dir: Path) -> int:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except FileExistsError as exc:
        raise storage_error(run_dir, exc, "not a directory") from None
    except OSError as exc:
        raise storage_error(exc.filename or run_dir, exc) from None


@contextmanager
def run_dir_lock(run_dir: Path, *, shared: bool = False, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the run directory's lock for the ``with`` block; refuse in one line if it is taken.

    Args:
        run_dir: the run directory (created if missing).
        shared: take a shared lock (parallel workflow steps of one run) instead of an exclusive one.
        wait_seconds: how long to wait for the holder to finish before refusing (0: refuse now).

    Raises:
        RunDirBusyError: another process holds a conflicting lock after ``wait_seconds``.
        StorageError: the directory cannot be created or the lock file cannot be opened.
    """
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    path = Path(run_dir) / LOCK_NAME
    key = os.path.realpath(path)
    with _held_lock:
        held = _held.get(key)
        if held is not None and (held[1] == fcntl.LOCK_EX or mode == fcntl.LOCK_SH):
            _held[key] = (held[0], held[1], held[2] + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_lock:
                fd, held_mode, depth = _held[key]
                _held[key] = (fd, held_mode, depth - 1)
        return
    fd = _open_lock_file(Path(run_dir))
    deadline = time.monotonic() + max(0.0, wait_seconds)
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                # A filesystem without flock (some network mounts): run unlocked rather than not
                # at all; result validation on resume still catches a mixed directory.
                log.warning(
                    "run directory cannot be locked, continuing unlocked", path=str(path), err=str(exc)
                )
                break
            if time.monotonic() >= deadline:
                os.close(fd)
                waited = f" after waiting {wait_seconds:g} s" if wait_seconds > 0 else ""
                raise RunDirBusyError(
                    f"{run_dir} is in use by another run{_holder(path)}{waited}; wait for it to "
                    "finish (--lock-wait SECONDS) or use another --run-dir"
                ) from None
            time.sleep(_POLL_SECONDS)
    if mode == fcntl.LOCK_EX:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode(), 0)
        except OSError:
            pass  # the pid is only a courtesy for the refusal message
    with _held_lock:
        _held[key] = (fd, mode, 1)
    try:
        yield
    finally:
        with _held_lock:
            del _held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
