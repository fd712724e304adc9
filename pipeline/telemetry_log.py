"""``telemetry.jsonl`` made whole: one row per stored result, even after a kill -9.

Each result's telemetry row is written twice: inside its sealed result record, then appended to
``telemetry.jsonl`` (per result, not per batch). A process killed between the two writes leaves a
result without its row; :func:`backfill` (run by reconstruction, so by every resumed run and by
the cluster's reconstruct step) appends the rows that are missing, so the file ends with exactly
one successful row per result however the run was interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipeline.store import ArtifactStore
from qubelet import klog

log = klog.get_logger("qubelet.pipeline")


def logged_results(store: ArtifactStore) -> set[tuple[str, str]]:
    """``(key, task_id)`` of every successful row already in ``telemetry.jsonl`` (torn lines skipped)."""
    path = store.telemetry_path
    if not path.exists():
        return set()
    seen: set[tuple[str, str]] = set()
    for line in path.read_bytes().split(b"\n"):
        try:
            row = json.loads(line)
        except ValueError:  # torn, NUL-filled or empty: not a row
            continue
        if isinstance(row, dict) and row.get("success") is True:
            seen.add((str(row.get("key")), str(row.get("task_id"))))
    return seen


def backfill(store: ArtifactStore, records: Mapping[str, dict[str, Any]]) -> int:
    """Append the telemetry rows of ``records`` (key -> result record) missing from the log.

    Returns how many rows were appended.
    """
    seen = logged_results(store)
    missing = [
        dict(row)
        for record in records.values()
        if isinstance(row := record.get("telemetry"), dict)
        and (str(row.get("key")), str(row.get("task_id"))) not in seen
    ]
    if missing:
        store.append_telemetry(missing)
        log.info("telemetry rows restored from result records", rows=len(missing))
    return len(missing)
