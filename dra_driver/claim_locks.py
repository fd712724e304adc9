"""Per-claim locks: two calls about the same claim run one after the other, others never wait.

kubelet may call NodePrepareResources and NodeUnprepareResources concurrently, for different
pods and so for different claims. A single driver-wide lock made one slow ResourceClaim read
stall every call on the node; here each claim uid has its own lock, created on first use and
dropped when nobody holds or waits for it (so the table does not grow with every claim ever
seen). A call about several claims takes their locks in sorted order, so two such calls can
never deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class ClaimLocks:
    """A lock per claim uid, reference counted."""

    def __init__(self) -> None:
        """Start with no locks."""
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def _ref(self, uid: str) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(uid, (threading.Lock(), 0))
            self._locks[uid] = (lock, users + 1)
            return lock

    def _unref(self, uid: str) -> None:
        with self._guard:
            lock, users = self._locks[uid]
            if users == 1:
                del self._locks[uid]
            else:
                self._locks[uid] = (lock, users - 1)

    @contextmanager
    def hold(self, uids: Iterable[str]) -> Iterator[None]:
        """Hold the locks of ``uids`` (each once, in sorted order) for the ``with`` body."""
        ordered = sorted(set(uids))
        held: list[tuple[str, threading.Lock]] = []
        try:
            for uid in ordered:
                lock = self._ref(uid)
                try:
                    lock.acquire()
                except BaseException:
                    self._unref(uid)
                    raise
                held.append((uid, lock))
            yield
        finally:
            for uid, lock in reversed(held):
                lock.release()
                self._unref(uid)

    def __len__(self) -> int:
        """How many claims currently have a lock (held or waited for)."""
        with self._guard:
            return len(self._locks)
