"""End-to-end cutting run: ``qubelet run`` against the reference flows, in-process and as processes.

What is measured, all in one run, on the same circuit (the HEA ansatz, K=3 cut CNOTs, 4096 shots):

(a) in-process, N=10: qubelet's pipeline (``pipeline.api.execute``, warmed up, default flags)
    against the reference flows' own stage timings (taken inside their process, after imports).
(b) whole processes, N=10: ``qubelet run`` with its default flags as a subprocess, against each
    reference flow as a subprocess (``bench/reference_flow.py``) reading the run directory's
    ``circuit.qpy``. This is the wait a user sees, start-up included.
(c) two references: the library's *tutorial* flow and a *competent* one (Aer's
    ``shot_branching_enable``, reconstruction from counts). Speedups are quoted against the
    faster of the two.
(d) N=20: qubelet in-process against the reference flows (the tutorial one takes minutes).

Every flow's answers are checked against the exact values: within 4 standard errors (qubelet's
propagated standard error; the references draw the same shots). The last line is one JSON object:
``*_vs_reference`` keys compare with the tutorial flow, except ``process_speedup_vs_reference``,
which is quoted against the faster reference process; ``*_competent_*`` and ``*_better_*`` keys
name their reference.

    python bench/pipeline.py [--qubits 10] [--n20-qubits 20] [--n20-flavours tutorial,competent]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REFERENCE_SCRIPT = ROOT / "bench" / "reference_flow.py"
FLAVOURS = ("tutorial", "competent")
SIGMA_LIMIT = 4.0


def _config(qubits: int, cuts: int, shots: int, seed: int, run_dir: Path) -> Any:
    from pipeline.config import RunConfig

    return RunConfig(qubits=qubits, cuts=cuts, shots=shots, seed=seed, run_dir=run_dir)


def ours_in_process(qubits: int, cuts: int, shots: int, seed: int, run_dir: Path) -> dict[str, Any]:
    """Qubelet's pipeline in this process with the default flags: stage seconds and answers."""
    from pipeline import api

    start = time.perf_counter()
    result = api.execute(_config(qubits, cuts, shots, seed, run_dir))
    total = time.perf_counter() - start
    stages = dict(result.summary["timing"]["stages"])
    return {"seconds": {**stages, "total": total}, "observables": result.summary["observables"]}


def _qubelet_command() -> list[str]:
    script = Path(sys.executable).with_name("qubelet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qubelet"]


def ours_process(qubits: int, cuts: int, shots: int, seed: int, run_dir: Path) -> dict[str, Any]:
    """``qubelet run`` as a new process (default flags besides size and run directory)."""
    command = [
        *_qubelet_command(),
        "run",
        f"--qubits={qubits}",
        f"--cuts={cuts}",
        f"--shots={shots}",
        f"--seed={seed}",
        f"--run-dir={run_dir}",
        "--no-progress",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"qubelet run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    match = re.search(r"wall time ([0-9.]+) s", proc.stdout)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "process_seconds": wall,
        "printed_seconds": float(match.group(1)) if match else None,
        "stages": summary["timing"]["stages"],
        "observables": summary["observables"],
        "backends": summary["backends"],
    }


def reference_process(circuit_file: Path, target: Any, shots: int, seed: int, flavour: str) -> dict[str, Any]:
    """One reference flow as its own process: process wall time, its inner stage times, values."""
    command = [
        sys.executable,
        str(REFERENCE_SCRIPT),
        str(circuit_file),
        f"--partition={target.partition}",
        f"--paulis={','.join(target.pauli_names)}",
        f"--shots={shots}",
        f"--seed={seed}",
        f"--flavour={flavour}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"reference flow {flavour} failed: {proc.stderr.strip()[-500:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"process_seconds": wall, "seconds": report["seconds"], "paulis": report["values"]}


def observable_values(target: Any, paulis: list[float]) -> dict[str, float]:
    """Each named observable as the weighted sum of its Paulis' values."""
    values = {}
    for name in target.observable_names:
        terms = target.observable_terms[name]
        weights = target.observable_weights.get(name) or (1.0,) * len(terms)
        values[name] = sum(w * paulis[p] for p, w in zip(terms, weights, strict=True))
    return values


def ensure_circuit_file(run_dir: Path, target: Any) -> Path:
    """The run directory's ``circuit.qpy`` (written here if the run did not save one)."""
    path = run_dir / "circuit.qpy"
    if not path.exists():
        from qiskit import qpy

        with path.open("wb") as handle:
            qpy.dump(target.circuit, handle)
    return path


def check_answers(
    label: str, values: dict[str, float], observables: list[dict[str, Any]]
) -> tuple[bool, float]:
    """Whether every value lies within SIGMA_LIMIT standard errors of exact; the worst |err|/se."""
    worst = 0.0
    for obs in observables:
        if obs["exact"] is None or obs["stderr"] <= 0:
            continue
        worst = max(worst, abs(values[obs["name"]] - obs["exact"]) / obs["stderr"])
    return worst <= SIGMA_LIMIT, worst


def _ours_values(observables: list[dict[str, Any]]) -> dict[str, float]:
    return {o["name"]: o["value"] for o in observables}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def table(rows: list[tuple[str, ...]]) -> str:
    """``rows`` as a text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


def main() -> int:
    """Run both flows on the same circuit and print the ratio; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=10)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--shots", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--n20-qubits", type=int, default=20, help="width of part (d); 0 skips it")
    parser.add_argument(
        "--n20-flavours", default="tutorial,competent", help="reference flows to run at that width"
    )
    args = parser.parse_args()
    n20_flavours = [f for f in args.n20_flavours.split(",") if f]
    for flavour in n20_flavours:
        if flavour not in FLAVOURS:
            parser.error(f"--n20-flavours: unknown flavour {flavour!r}")

    from pipeline.stages import build_cut_target

    checks: dict[str, tuple[bool, float]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="qubelet-bench-"))
    try:
        # (b) first, on a cold machine state: the whole qubelet process with default flags.
        proc_dir = scratch / "process"
        ours_proc = ours_process(args.qubits, args.cuts, args.shots, args.seed, proc_dir)
        target = build_cut_target(_config(args.qubits, args.cuts, args.shots, args.seed, proc_dir))
        circuit_file = ensure_circuit_file(proc_dir, target)
        refs = {f: reference_process(circuit_file, target, args.shots, args.seed, f) for f in FLAVOURS}
        checks["qubelet process"] = check_answers(
            "qubelet process", _ours_values(ours_proc["observables"]), ours_proc["observables"]
        )
        for flavour, ref in refs.items():
            checks[f"{flavour} N={args.qubits}"] = check_answers(
                flavour, observable_values(target, ref["paulis"]), ours_proc["observables"]
            )
        # (a) in-process, warmed up.
        ours_in_process(6, 1, 64, 0, scratch / "warm")
        ours = ours_in_process(args.qubits, args.cuts, args.shots, args.seed, scratch / "inproc")
        checks["qubelet in-process"] = check_answers(
            "qubelet", _ours_values(ours["observables"]), ours["observables"]
        )
        # (d) the wide run.
        wide: dict[str, Any] = {}
        if args.n20_qubits:
            wide_dir = scratch / "wide"
            wide["ours"] = ours_in_process(args.n20_qubits, args.cuts, args.shots, args.seed, wide_dir)
            wide_target = build_cut_target(
                _config(args.n20_qubits, args.cuts, args.shots, args.seed, wide_dir)
            )
            wide_circuit = ensure_circuit_file(wide_dir, wide_target)
            checks[f"qubelet N={args.n20_qubits}"] = check_answers(
                "qubelet", _ours_values(wide["ours"]["observables"]), wide["ours"]["observables"]
            )
            for flavour in n20_flavours:
                wide[flavour] = reference_process(wide_circuit, wide_target, args.shots, args.seed, flavour)
                checks[f"{flavour} N={args.n20_qubits}"] = check_answers(
                    flavour,
                    observable_values(wide_target, wide[flavour]["paulis"]),
                    wide["ours"]["observables"],
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    best = min(FLAVOURS, key=lambda f: refs[f]["seconds"]["total"])
    best_process = min(FLAVOURS, key=lambda f: refs[f]["process_seconds"])
    speedup_tutorial = refs["tutorial"]["seconds"]["total"] / ours["seconds"]["total"]
    speedup_competent = refs["competent"]["seconds"]["total"] / ours["seconds"]["total"]
    speedup_best = refs[best]["seconds"]["total"] / ours["seconds"]["total"]
    process_speedup = refs[best_process]["process_seconds"] / ours_proc["process_seconds"]
    print(
        f"cutting pipeline benchmark: N={args.qubits}, K={args.cuts}, {args.shots} shots; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print("\n(a) in-process seconds (references timed inside their own process, after imports)")
    rows = [("stage", "tutorial", "competent", "qubelet")]
    for stage in ("cut", "plan", "execute", "reconstruct", "total"):
        rows.append(
            (
                stage,
                f"{refs['tutorial']['seconds'].get(stage, 0.0):.3f}",
                f"{refs['competent']['seconds'].get(stage, 0.0):.3f}",
                f"{ours['seconds'].get(stage, 0.0):.3f}",
            )
        )
    print(table(rows))
    print(
        f"speedup: {speedup_tutorial:.1f}x vs tutorial, {speedup_competent:.1f}x vs competent "
        f"(better reference: {best})"
    )
    print("\n(b) whole processes, seconds of wall time")
    rows = [("process", "wall s")]
    for flavour in FLAVOURS:
        rows.append((f"reference ({flavour})", f"{refs[flavour]['process_seconds']:.2f}"))
    rows.append(("qubelet run (default flags)", f"{ours_proc['process_seconds']:.2f}"))
    print(table(rows))
    from pipeline.timing import STAGES

    stages = ", ".join(f"{k} {ours_proc['stages'][k]:.2f}" for k in STAGES if k in ours_proc["stages"])
    print(f"qubelet run printed wall time {ours_proc['printed_seconds']:.2f} s ({stages})")
    used = ", ".join(f"{kind} {usage['tasks']}" for kind, usage in ours_proc["backends"].items())
    print(f"qubelet run subexperiments per backend: {used}")
    print(f"speedup vs the better reference ({best_process}): {process_speedup:.1f}x")
    speedup_wide = speedup_wide_tutorial = speedup_wide_competent = None
    if wide:
        print(f"\n(d) N={args.n20_qubits}, in-process seconds")
        rows = [("flow", "cut", "execute", "reconstruct", "total")]
        for flavour in n20_flavours:
            s = wide[flavour]["seconds"]
            rows.append((flavour, *(f"{s[k]:.2f}" for k in ("cut", "execute", "reconstruct", "total"))))
        s = wide["ours"]["seconds"]
        rows.append(
            ("qubelet", *(f"{s.get(k, 0.0):.2f}" for k in ("cut", "execute", "reconstruct", "total")))
        )
        print(table(rows))
        if n20_flavours:
            best_wide = min(n20_flavours, key=lambda f: wide[f]["seconds"]["total"])
            speedup_wide = wide[best_wide]["seconds"]["total"] / s["total"]
            print(f"speedup vs the better reference ({best_wide}): {speedup_wide:.1f}x")
            if "tutorial" in wide:
                speedup_wide_tutorial = wide["tutorial"]["seconds"]["total"] / s["total"]
                print(f"speedup vs the tutorial reference: {speedup_wide_tutorial:.1f}x")
            if "competent" in wide:
                speedup_wide_competent = wide["competent"]["seconds"]["total"] / s["total"]
    print("\nanswers: worst |value - exact| / stderr per flow (limit 4)")
    for label, (ok, worst) in checks.items():
        print(f"  {label:<22} {worst:5.2f}  {'ok' if ok else 'OUT OF BOUNDS'}")
    agree = all(ok for ok, _ in checks.values())
    printed_ratio = (ours_proc["printed_seconds"] or 0.0) / ours_proc["process_seconds"]
    print(
        json.dumps(
            {
                "speedup_vs_reference": round(speedup_tutorial, 2),
                "speedup_vs_competent_reference": round(speedup_competent, 2),
                "speedup_vs_better_reference": round(speedup_best, 2),
                "process_speedup_vs_reference": round(process_speedup, 2),
                "process_speedup_vs_tutorial_reference": round(
                    refs["tutorial"]["process_seconds"] / ours_proc["process_seconds"], 2
                ),
                "speedup_n20_vs_reference": _rounded(speedup_wide_tutorial),
                "speedup_n20_vs_competent_reference": _rounded(speedup_wide_competent),
                "speedup_n20_vs_better_reference": _rounded(speedup_wide),
                "startup_seconds": ours_proc["stages"].get("startup"),
                "qubelet_process_seconds": round(ours_proc["process_seconds"], 3),
                "qubelet_printed_seconds": ours_proc["printed_seconds"],
                "printed_over_process_wall": round(printed_ratio, 3),
                "reference_process_seconds": {f: round(refs[f]["process_seconds"], 3) for f in FLAVOURS},
                "qubelet_seconds": round(ours["seconds"]["total"], 3),
                "reference_seconds": {f: round(refs[f]["seconds"]["total"], 3) for f in FLAVOURS},
                "n20_seconds": {k: round(v["seconds"]["total"], 3) for k, v in wide.items()},
                "answers_agree": agree,
                "load_average": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
