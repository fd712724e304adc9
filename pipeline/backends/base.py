"""The backend contract and the counts format every backend returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from qiskit import QuantumCircuit

from pipeline.mitigation.readout import ReadoutError
from policy.interface import BackendKind, BackendState


@dataclass(frozen=True)
class Counts:
    """Sampled outcomes of one circuit: outcome integers (bit i = clbit i) and their counts."""

    outcomes: np.ndarray  # int64, sorted, unique
    counts: np.ndarray  # int64, same length, sums to shots (float64 probabilities when exact)
    num_clbits: int
    #: per clbit, the readout error of the physical qubit measured into it (QPU results only)
    readout: tuple[ReadoutError | None, ...] | None = None
    #: zero-noise extrapolation: counts of the same circuit with two-qubit gates folded ``scale`` x
    folded: tuple[tuple[int, Counts], ...] = ()
    #: the exact outcome distribution (the ``exact`` backend): ``counts`` holds probabilities,
    #: and the estimates built from it carry no shot noise
    exact: bool = False

    def with_mitigation_data(
        self,
        readout: Sequence[ReadoutError | None] | None,
        folded: Sequence[tuple[int, Counts]] = (),
    ) -> Counts:
        """The same counts, carrying what the CPU needs to mitigate them later."""
        return replace(self, readout=tuple(readout) if readout is not None else None, folded=tuple(folded))

    @property
    def shots(self) -> int:
        """Total shots the counts add up to (1 for an exact distribution: its weights sum to 1)."""
        if self.exact:
            return 1
        return int(self.counts.sum())

    @classmethod
    def from_distribution(cls, outcomes: np.ndarray, probabilities: np.ndarray, num_clbits: int) -> Counts:
        """An exact distribution (outcome integers may repeat: their probabilities are summed)."""
        merged = np.zeros(1 << num_clbits) if num_clbits <= 24 else None
        if merged is not None:
            np.add.at(merged, np.asarray(outcomes, dtype=np.int64), np.asarray(probabilities, dtype=float))
            nonzero = np.flatnonzero(merged > 0)
            return cls(nonzero.astype(np.int64), merged[nonzero], num_clbits, exact=True)
        table: dict[int, float] = {}
        for outcome, p in zip(np.asarray(outcomes).tolist(), np.asarray(probabilities).tolist(), strict=True):
            table[outcome] = table.get(outcome, 0.0) + p
        keys = sorted(k for k, p in table.items() if p > 0)
        return cls(
            np.array(keys, dtype=np.int64),
            np.array([table[k] for k in keys], dtype=float),
            num_clbits,
            exact=True,
        )

    @classmethod
    def from_samples(cls, histogram: np.ndarray, num_clbits: int) -> Counts:
        """From a dense histogram indexed by outcome integer."""
        nonzero = np.flatnonzero(histogram)
        return cls(nonzero.astype(np.int64), histogram[nonzero].astype(np.int64), num_clbits)

    @classmethod
    def from_qiskit(cls, counts: dict[str, int], num_clbits: int) -> Counts:
        """From qiskit's ``{"0 10110": n}`` counts (registers separated by spaces, MSB first)."""
        merged: dict[int, int] = {}
        for bitstring, n in counts.items():
            value = int(bitstring.replace(" ", ""), 2)
            merged[value] = merged.get(value, 0) + int(n)
        keys = sorted(merged)
        return cls(
            np.array(keys, dtype=np.int64), np.array([merged[k] for k in keys], dtype=np.int64), num_clbits
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form; mitigation data only where a QPU recorded it."""
        data: dict[str, Any] = {
            "num_clbits": self.num_clbits,
            "outcomes": self.outcomes.tolist(),
            "counts": self.counts.tolist(),
        }
        if self.readout is not None:
            data["readout_errors"] = [
                None if e is None else [e.p1_given_0, e.p0_given_1] for e in self.readout
            ]
        if self.folded:
            data["folded"] = [{"scale": scale, **counts.to_json()} for scale, counts in self.folded]
        if self.exact:
            data["exact"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counts:
        """Inverse of :meth:`to_json` (records without mitigation data read as raw counts)."""
        readout = data.get("readout_errors")
        exact = bool(data.get("exact", False))
        return cls(
            np.asarray(data["outcomes"], dtype=np.int64),
            np.asarray(data["counts"], dtype=float if exact else np.int64),
            int(data["num_clbits"]),
            readout=None
            if readout is None
            else tuple(None if e is None else ReadoutError(float(e[0]), float(e[1])) for e in readout),
            folded=tuple((int(f["scale"]), cls.from_json(f)) for f in data.get("folded", ())),
            exact=exact,
        )


class Backend(Protocol):
    """A place subexperiments run. ``run_batch`` is one job: per-job overhead is paid once."""

    name: str
    kind: BackendKind

    def state(self) -> BackendState:
        """Capacity, health and calibration as the selection policy sees them."""
        ...

    def run_batch(self, circuits: Sequence[QuantumCircuit], shots: int, seeds: Sequence[int]) -> list[Counts]:
        """Run every circuit with ``shots`` shots; ``seeds[i]`` makes circuit i reproducible."""
        ...
