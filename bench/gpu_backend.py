"""The ``gpu`` backend (qiskit-aer-gpu) against the ``cpu`` backend (qiskit-aer) on one machine.

Two questions, both answered in one run with the CPU as the baseline:

1. Correctness: on the paper's cutting subexperiments (N=10, K=3) the GPU's exact outcome
   distributions equal the CPU's (max |Δp|), and sampled counts agree.
2. Where the GPU wins: wall time of one statevector job on random circuits of growing width,
   GPU vs CPU (this is what the ``size`` rule's "> 20 qubits → GPU" presumes).

On a machine without a CUDA device it reports the GPU as unavailable and prints CPU figures.

    python bench/gpu_backend.py [--subexperiments RUN_DIR/subexperiments] [--widths 16,20,24,26,28]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load_subexperiments(directory: Path | None) -> list:  # type: ignore[type-arg]
    """The stored subexperiments of a run directory, or freshly cut ones when None."""
    from qiskit import qpy

    if directory is None:
        from pipeline import stages
        from pipeline.config import RunConfig

        scratch = Path(tempfile.mkdtemp())
        stages.prepare(RunConfig(qubits=10, cuts=3, backends=("cpu",), run_dir=scratch))
        directory = scratch / "subexperiments"
    circuits = []
    for path in sorted(directory.glob("*.qpy")):
        with path.open("rb") as handle:
            circuits.extend(qpy.load(handle))
    return circuits


def exact_probabilities(circuits: list, device: str) -> tuple[list[np.ndarray], float]:  # type: ignore[type-arg]
    """Exact outcome probabilities of ``circuits`` on Aer ``device`` and the seconds it took."""
    from qiskit_aer import AerSimulator

    from pipeline.backends.deferred import add_save_probabilities, defer_measurements

    prepared = []
    for circuit in circuits:
        flat, sources = defer_measurements(circuit)
        add_save_probabilities(flat, [q for q in sources if q >= 0])
        prepared.append(flat)
    simulator = AerSimulator(method="statevector", device=device)
    start = time.perf_counter()
    result = simulator.run(prepared, shots=1).result()
    seconds = time.perf_counter() - start
    return [np.asarray(result.data(i)["probabilities"]) for i in range(len(prepared))], seconds


def random_circuit_seconds(width: int, device: str, repeats: int = 3) -> float:
    """Median wall time of one job: a 20-layer brickwork circuit, 1000 sampled shots."""
    from qiskit import QuantumCircuit
    from qiskit_aer import AerSimulator

    rng = np.random.default_rng(width)
    circuit = QuantumCircuit(width)
    for layer in range(20):
        for q in range(width):
            circuit.ry(float(rng.uniform(0, np.pi)), q)
        for q in range(layer % 2, width - 1, 2):
            circuit.cx(q, q + 1)
    circuit.measure_all()
    simulator = AerSimulator(method="statevector", device=device)
    simulator.run(circuit, shots=10).result()  # warm-up: allocation, CUDA context
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        simulator.run(circuit, shots=1000, seed_simulator=1).result()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> int:
    """Compare the CPU and GPU backends on the same subexperiments; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subexperiments", type=Path, help="folder of *.qpy subexperiments")
    parser.add_argument("--widths", default="16,20,24,26,28")
    args = parser.parse_args()

    import qiskit_aer

    from pipeline.backends.simulators import AerStatevectorBackend, gpu_devices_available

    gpu = gpu_devices_available()
    print(f"qiskit-aer {qiskit_aer.__version__}; GPU available: {gpu}")
    circuits = load_subexperiments(args.subexperiments)
    cpu_probs, cpu_exact_s = exact_probabilities(circuits, "CPU")
    figures: dict[str, object] = {"gpu_available": gpu, "subexperiments": len(circuits)}
    print(f"\n{len(circuits)} distinct cutting subexperiments (N=10, K=3), exact distributions:")
    print(f"  cpu: {cpu_exact_s:.3f} s")
    if gpu:
        gpu_probs, gpu_exact_s = exact_probabilities(circuits, "GPU")
        max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(cpu_probs, gpu_probs, strict=True))
        seeds = list(range(len(circuits)))
        cpu_counts = AerStatevectorBackend("cpu").run_batch(circuits, 4096, seeds)
        gpu_counts = AerStatevectorBackend("gpu").run_batch(circuits, 4096, seeds)
        identical = sum(
            1
            for a, b in zip(cpu_counts, gpu_counts, strict=True)
            if np.array_equal(a.outcomes, b.outcomes) and np.array_equal(a.counts, b.counts)
        )
        print(f"  gpu: {gpu_exact_s:.3f} s; max |p_gpu - p_cpu| = {max_diff:.2e}")
        print(f"  sampled counts identical for {identical}/{len(circuits)} (same seeds)")
        figures.update(
            subexp_cpu_s=round(cpu_exact_s, 4),
            subexp_gpu_s=round(gpu_exact_s, 4),
            max_probability_diff=max_diff,
            identical_counts=identical,
        )
    print(f"\n{'qubits':>6}{'cpu s':>10}{'gpu s':>10}{'cpu/gpu':>9}")
    scaling = {}
    for width in (int(w) for w in args.widths.split(",")):
        cpu_s = random_circuit_seconds(width, "CPU")
        gpu_s = random_circuit_seconds(width, "GPU") if gpu else float("nan")
        ratio = cpu_s / gpu_s if gpu else float("nan")
        scaling[str(width)] = {
            "cpu_s": round(cpu_s, 4),
            "gpu_s": round(gpu_s, 4) if gpu else None,
            "speedup": round(ratio, 2) if gpu else None,
        }
        print(f"{width:>6}{cpu_s:>10.3f}{gpu_s:>10.3f}{ratio:>9.1f}")
    figures["scaling"] = scaling
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
