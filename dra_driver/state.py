"""What is prepared on this node: the in-memory set, backed by the checkpoint.

Every change goes to disk before the gRPC call returns, so a crash right after kubelet got an
answer never loses a claim. A change is persisted *first* and published in memory only after
the write succeeded: when the write fails (disk full, read-only file system) memory still equals
the checkpoint, so a retried prepare does not answer from an entry that was never saved (whose
CDI spec the error path removed), and a failed unprepare does not forget a claim that a restart
would bring back. One lock serialises changes (kubelet may call concurrently).
"""

from __future__ import annotations

import threading
from pathlib import Path

from dra_driver.checkpoint import Checkpoint, PreparedClaim


class PreparedClaims:
    """Thread-safe prepared-claim registry persisted through a :class:`Checkpoint`."""

    def __init__(self, checkpoint_path: str | Path) -> None:
        """Load the checkpoint (an unusable one is set aside and we start empty)."""
        self._checkpoint = Checkpoint(checkpoint_path)
        self._lock = threading.Lock()
        self._claims: dict[str, PreparedClaim] = self._checkpoint.load()
        #: the checkpoint on disk could not be used (set aside): what was prepared is unknown
        self.checkpoint_lost = self._checkpoint.unusable
        #: there was no checkpoint file at all (first start, or someone removed it)
        self.checkpoint_missing = not self._checkpoint.unusable and not self._checkpoint.path.exists()

    def get(self, uid: str) -> PreparedClaim | None:
        """The prepared claim with this uid, or None."""
        with self._lock:
            return self._claims.get(uid)

    def uids(self) -> list[str]:
        """Every prepared claim uid, sorted."""
        with self._lock:
            return sorted(self._claims)

    def add_many(self, claims: list[PreparedClaim]) -> None:
        """Persist newly prepared claims (one write per batch), then publish them.

        Raises:
            OSError: the checkpoint could not be written; nothing changed, on disk or in memory.
        """
        if not claims:
            return
        with self._lock:
            updated = dict(self._claims)
            updated.update((c.uid, c) for c in claims)
            self._checkpoint.save(updated)
            self._claims = updated

    def remove_many(self, uids: list[str]) -> list[PreparedClaim]:
        """Persist the claims' removal, then forget them; returns those that were known.

        Raises:
            OSError: the checkpoint could not be written; the claims stay prepared.
        """
        with self._lock:
            removed = [self._claims[u] for u in dict.fromkeys(uids) if u in self._claims]
            if removed:
                updated = {u: c for u, c in self._claims.items() if u not in set(uids)}
                self._checkpoint.save(updated)
                self._claims = updated
            return removed
