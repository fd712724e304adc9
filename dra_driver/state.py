"""What is prepared on this node: the in-memory set, backed by the checkpoint.

Every change goes to disk before the gRPC call returns, so a crash right after kubelet got an
answer never loses a claim. One lock serialises changes (kubelet may call concurrently).
"""

from __future__ import annotations

import threading
from pathlib import Path

from dra_driver.checkpoint import Checkpoint, PreparedClaim


class PreparedClaims:
    """Thread-safe prepared-claim registry persisted through a :class:`Checkpoint`."""

    def __init__(self, checkpoint_path: str | Path) -> None:
        self._checkpoint = Checkpoint(checkpoint_path)
        self._lock = threading.Lock()
        self._claims: dict[str, PreparedClaim] = self._checkpoint.load()

    def get(self, uid: str) -> PreparedClaim | None:
        with self._lock:
            return self._claims.get(uid)

    def uids(self) -> list[str]:
        with self._lock:
            return sorted(self._claims)

    def add_many(self, claims: list[PreparedClaim]) -> None:
        """Record newly prepared claims and persist them (one write for a whole batch)."""
        if not claims:
            return
        with self._lock:
            for c in claims:
                self._claims[c.uid] = c
            self._checkpoint.save(self._claims)

    def remove_many(self, uids: list[str]) -> list[PreparedClaim]:
        """Forget claims and persist; returns those that were known."""
        with self._lock:
            removed = [self._claims.pop(u) for u in uids if u in self._claims]
            if removed:
                self._checkpoint.save(self._claims)
            return removed
