"""What makes a stored result trustworthy on resume: its identity, its shape, and a checksum.

Why: a resumed run skips every subexperiment whose result file exists, so a file that exists
but is wrong (truncated, edited, another key's record copied in, or sampled with other shots,
seed or QPU by an earlier run in the same directory) silently changes the reconstructed value.
Every result record therefore carries everything that changes its counts (key, shots, sampling
seed, number of classical bits, the QPU backend and mitigation options) and a sha256 over its canonical JSON.
On resume, a record is trusted only if all of those match what this run would produce; any
other record is set aside and recomputed, and the run says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

#: bumped when the record layout changes; records of another version are recomputed
RECORD_VERSION = 2
CHECKSUM_FIELD = "checksum"


@dataclass(frozen=True)
class ExpectedRecord:
    """What a valid result record of one subexperiment must say, for this run's configuration."""

    key: str
    shots: int
    seed: int
    num_clbits: int
    #: the run's ``--qpu-backend``; checked only on records a QPU produced
    qpu_backend: str | None = None
    #: the run's mitigation level, and the ZNE scale factors whose folded counts a QPU record
    #: must carry (empty unless the level is ``zne``); checked only on QPU records
    mitigation: str | None = None
    folded_scales: tuple[int, ...] = ()
    #: the run asked for exact distributions (``--backends exact``): its records hold
    #: probabilities, and a sampled record is not valid for it (nor an exact one for a shot run)
    exact: bool = False


def checksum_of(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON, without its own checksum field."""
    body = {k: v for k, v in record.items() if k != CHECKSUM_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its version and checksum set, ready to be written."""
    sealed = {**record, "record_version": RECORD_VERSION}
    sealed[CHECKSUM_FIELD] = checksum_of(sealed)
    return sealed


def problem_with(record: Any, expected: ExpectedRecord) -> str | None:
    """Why ``record`` is not a valid result for ``expected``, or None if it is.

    The reasons are short phrases for a log line ("shots 64, this run uses 4096").
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("record_version") != RECORD_VERSION:
        return f"record version {record.get('record_version')!r}, expected {RECORD_VERSION}"
    if record.get(CHECKSUM_FIELD) != checksum_of(record):
        return "checksum mismatch (edited or damaged)"
    if record.get("key") != expected.key:
        return f"holds the record of key {str(record.get('key'))[:12]}"
    if record.get("shots") != expected.shots:
        return f"shots {record.get('shots')}, this run uses {expected.shots}"
    if record.get("seed") != expected.seed:
        return "sampling seed differs from this run's"
    if record.get("num_clbits") != expected.num_clbits:
        return f"{record.get('num_clbits')} classical bits, the circuit has {expected.num_clbits}"
    if (
        expected.qpu_backend is not None
        and record.get("kind") == "qpu"
        and record.get("qpu_backend") != expected.qpu_backend
    ):
        return f"measured on QPU {record.get('qpu_backend')}, this run uses {expected.qpu_backend}"
    if record.get("kind") == "qpu" and expected.mitigation is not None:
        if record.get("mitigation") != expected.mitigation:
            return f"mitigation {record.get('mitigation')}, this run uses {expected.mitigation}"
        folded = record.get("folded") or []
        scales = tuple(sorted(int(f.get("scale", 0)) for f in folded if isinstance(f, dict)))
        if scales != tuple(sorted(expected.folded_scales)):
            return f"folded ZNE scales {list(scales)}, this run needs {list(expected.folded_scales)}"
    if bool(record.get("exact", False)) != expected.exact:
        return (
            "an exact distribution, this run samples shots"
            if not expected.exact
            else ("sampled shots, this run asks for exact distributions")
        )
    if expected.exact:
        return _distribution_problem(record, expected)
    return _counts_problem(record, expected)


#: how far an exact record's probabilities may sum from 1 (float rounding of a statevector)
_PROBABILITY_TOLERANCE = 1e-9


def _distribution_problem(record: dict[str, Any], expected: ExpectedRecord) -> str | None:
    outcomes, probabilities = record.get("outcomes"), record.get("counts")
    if (
        not isinstance(outcomes, list)
        or not isinstance(probabilities, list)
        or len(outcomes) != len(probabilities)
    ):
        return "outcomes and probabilities missing or of different lengths"
    if set(map(type, outcomes)) - {int} or (
        outcomes and (min(outcomes) < 0 or max(outcomes) >= 1 << expected.num_clbits)
    ):
        return f"an outcome outside {expected.num_clbits} classical bits"
    if set(map(type, probabilities)) - {float, int} or (probabilities and min(probabilities) < 0):
        return "a probability that is not a non-negative number"
    total = sum(probabilities)
    if abs(total - 1.0) > _PROBABILITY_TOLERANCE:
        return f"probabilities sum to {total!r}, not 1"
    return None


def _counts_problem(record: dict[str, Any], expected: ExpectedRecord) -> str | None:
    outcomes, counts = record.get("outcomes"), record.get("counts")
    if not isinstance(outcomes, list) or not isinstance(counts, list) or len(outcomes) != len(counts):
        return "outcomes and counts missing or of different lengths"
    # type() over map() and min/max run in C: a 20-qubit run checks ~10^5 values per record.
    if set(map(type, outcomes)) - {int} or (
        outcomes and (min(outcomes) < 0 or max(outcomes) >= 1 << expected.num_clbits)
    ):
        return f"an outcome outside {expected.num_clbits} classical bits"
    if set(map(type, counts)) - {int} or (counts and min(counts) <= 0):
        return "a count that is not a positive integer"
    total = sum(counts)
    if total != expected.shots:
        return f"counts sum to {total}, not {expected.shots} shots"
    return None
