"""The reference cutting flows, as a user of qiskit-addon-cutting writes them (no qubelet imports).

Two flavours, both on the circuit a qubelet run saved (``<run dir>/circuit.qpy``):

- ``tutorial``: the library's tutorial flow — ``partition_problem``,
  ``generate_cutting_experiments``, one qiskit-aer ``SamplerV2`` job per partition (shot by
  shot: the subexperiments carry mid-circuit measurements), ``reconstruct_expectation_values``
  on the per-shot bit arrays.
- ``competent``: what a careful user adds in a few lines — Aer's ``shot_branching_enable`` (the
  simulator branches the state at each mid-circuit measurement instead of re-running every shot)
  and reconstruction from counts (one quasi-distribution per subexperiment) instead of per-shot
  bit arrays.

``bench/pipeline.py`` runs this file as its own process (that is the point: the whole process
is timed, imports included) and also calls :func:`run_flow` in-process. The last line printed
is one JSON object: the value of every Pauli, in the order given, and per-stage seconds.

    python bench/reference_flow.py RUN_DIR/circuit.qpy --partition AAAAABBBBB \
        --paulis ZZZZZZZZZZ,ZIIIIIIIIZ --shots 4096 --seed 7 --flavour competent
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

FLAVOURS = ("tutorial", "competent")


def _quasi_distributions(result: Any) -> Any:
    """Per-subexperiment counts (observable bits low, QPD bits high) as quasi-distributions."""
    import numpy as np
    from qiskit.primitives import SamplerResult
    from qiskit.result import QuasiDistribution

    quasi = []
    for pub in result:
        obs = pub.data.observable_measurements
        qpd = pub.data.qpd_measurements
        low = obs.to_bool_array(order="little") @ (1 << np.arange(obs.num_bits))
        high = qpd.to_bool_array(order="little") @ (1 << np.arange(qpd.num_bits))
        outcomes, counts = np.unique(low | (high << obs.num_bits), return_counts=True)
        shots = counts.sum()
        quasi.append(QuasiDistribution(dict(zip(outcomes.tolist(), (counts / shots).tolist(), strict=True))))
    return SamplerResult(quasi_dists=quasi, metadata=[{} for _ in quasi])


def run_flow(
    circuit: Any, partition: str, paulis: Sequence[str], shots: int, seed: int, flavour: str
) -> tuple[dict[str, float], list[float]]:
    """Cut, sample and reconstruct ``paulis`` on ``circuit``; (seconds per stage, values)."""
    import numpy as np
    from qiskit.quantum_info import PauliList
    from qiskit_addon_cutting import (
        generate_cutting_experiments,
        partition_problem,
        reconstruct_expectation_values,
    )
    from qiskit_aer.primitives import SamplerV2

    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r}: one of {', '.join(FLAVOURS)}")
    times: dict[str, float] = {}
    start = time.perf_counter()
    problem = partition_problem(circuit=circuit, partition_labels=partition, observables=PauliList(paulis))
    subexperiments, coefficients = generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf
    )
    times["cut"] = time.perf_counter() - start
    start = time.perf_counter()
    options = {"backend_options": {"shot_branching_enable": True}} if flavour == "competent" else None
    sampler = SamplerV2(default_shots=shots, seed=seed, options=options)
    assert isinstance(subexperiments, dict)
    results = {
        label: sampler.run(circuits, shots=shots).result() for label, circuits in subexperiments.items()
    }
    times["execute"] = time.perf_counter() - start
    start = time.perf_counter()
    if flavour == "competent":
        results = {label: _quasi_distributions(result) for label, result in results.items()}
    values = reconstruct_expectation_values(results, coefficients, problem.subobservables)
    times["reconstruct"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    return times, [float(v) for v in values]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one flavour on a saved circuit and print its values and timings as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("circuit", help="QPY file with one circuit (a qubelet run's circuit.qpy)")
    parser.add_argument("--partition", required=True, help="one label per qubit, e.g. AAAAABBBBB")
    parser.add_argument("--paulis", required=True, help="comma-separated Pauli labels")
    parser.add_argument("--shots", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--flavour", choices=FLAVOURS, default="tutorial")
    args = parser.parse_args(argv)
    from qiskit import qpy

    with open(args.circuit, "rb") as handle:
        (circuit,) = qpy.load(handle)
    times, values = run_flow(
        circuit, args.partition, args.paulis.split(","), args.shots, args.seed, args.flavour
    )
    print(json.dumps({"flavour": args.flavour, "values": values, "seconds": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
