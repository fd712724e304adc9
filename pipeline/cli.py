"""``qubelet run``: the hybrid cutting job on this machine, on the embedded backends."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from qubelet.daemon import add_metrics_port_flag
from qubelet.inventory.names import DEFAULT_QPU_SPEC

DEFAULT_POLICY = "telemetry"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that define a run; ``qubelet render`` and ``qubelet task generate`` reuse them."""
    parser.add_argument("--qubits", type=int, default=10, help="ansatz width N (default 10)")
    parser.add_argument(
        "--cuts", type=int, default=3, help="CNOTs across the A|B cut, K (default 3: 216 terms)"
    )
    parser.add_argument("--shots", type=int, default=4096, help="shots per subexperiment (default 4096)")
    parser.add_argument("--seed", type=int, default=7, help="seed for parameters and sampling (default 7)")
    parser.add_argument(
        "--policy",
        default=DEFAULT_POLICY,
        help=f"backend selection: size|telemetry (default {DEFAULT_POLICY})",
    )
    parser.add_argument("--policy-model", type=Path, help="fitted telemetry model (qubelet policy fit)")
    parser.add_argument(
        "--error-budget",
        type=float,
        help="telemetry policy: largest predicted error per subexperiment (default 0.35)",
    )
    parser.add_argument(
        "--backends",
        default="cpu,gpu,qpu",
        help="backend classes to use, comma-separated (default cpu,gpu,qpu)",
    )
    parser.add_argument(
        "--observables",
        help="comma-separated: Pauli labels (ZIIZ), indexed products (Z0Z9) or sumZ "
        "(default: Z..Z, Z0Z{N-1}, the two boundary qubits, sumZ)",
    )
    parser.add_argument(
        "--circuit", type=Path, help="user circuit (.qpy or OpenQASM 3) instead of the ansatz"
    )
    parser.add_argument("--partition", help="partition labels for --circuit, one per qubit (e.g. AAABBB)")
    parser.add_argument(
        "--qpu-backend",
        default=DEFAULT_QPU_SPEC,
        help=f"embedded QPU when IQM_SERVER_URL is unset (default {DEFAULT_QPU_SPEC})",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="max subexperiments per job (default 64)")


def config_from_args(args: argparse.Namespace, run_dir: Path) -> Any:
    """Build a RunConfig, turning bad flags into one-line usage errors."""
    from pipeline.config import RunConfig
    from pipeline.errors import PipelineError
    from qubelet.errors import UsageError

    try:
        return RunConfig(
            qubits=args.qubits,
            cuts=args.cuts,
            shots=args.shots,
            seed=args.seed,
            policy=args.policy,
            policy_model=args.policy_model,
            error_budget=args.error_budget,
            backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
            run_dir=run_dir,
            observables=tuple(o.strip() for o in args.observables.split(",")) if args.observables else None,
            circuit_file=args.circuit,
            partition=args.partition,
            qpu_backend=args.qpu_backend,
            batch_size=args.batch_size,
            max_attempts=getattr(args, "max_attempts", 3),
        )
    except PipelineError as exc:
        raise UsageError(str(exc)) from None


class TqdmProgress:
    """Progress bar on stderr while subexperiments complete."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="subexp", desc="executing", file=sys.stderr, leave=False)

    def advance(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline import metrics, report
    from pipeline.errors import PipelineError
    from pipeline.executor import LocalExecutor
    from qubelet.errors import UsageError

    run_dir = args.run_dir or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    config = config_from_args(args, run_dir)
    metrics.serve(args.metrics_port)
    try:
        executor = LocalExecutor(
            config,
            progress=TqdmProgress(not args.no_progress and sys.stderr.isatty()),
            lock_wait=args.lock_wait,
        )
        summary, execution = executor.run()
        timeline = report.plot_timeline(
            report.load_events(run_dir),
            run_dir / "timeline.png",
            title=f"{summary['qubits']} qubits, {summary['cuts']} cuts, policy {summary['policy']}",
        )
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # a filesystem fault outside the store's own checks: still one line
        raise UsageError(f"{exc.filename or run_dir}: {exc.strerror or exc}") from None
    subexp = ", ".join(
        f"{label}: {count} ({summary['distinct_subexperiments'][label]} distinct)"
        for label, count in summary["subexperiments"].items()
    )
    print(
        f"qubelet run: {summary['qubits']} qubits, {summary['cuts']} cuts "
        f"({summary['coefficient_terms']} coefficient terms), {summary['shots']} shots, "
        f"policy {summary['policy']}"
    )
    print(f"subexperiments per partition: {subexp}")
    if summary.get("resumed_subexperiments"):
        print(f"resumed: {summary['resumed_subexperiments']} subexperiments already had results")
    if summary.get("recomputed_invalid"):
        invalid = summary["recomputed_invalid"]
        key, reason = next(iter(invalid.items()))
        print(
            f"recomputed: {len(invalid)} stored results were invalid and set aside "
            f"(first {key[:12]}: {reason})"
        )
    print()
    print(report.results_table(summary))
    print()
    print(report.backends_table(summary))
    print()
    print(f"wall time {summary['wall_seconds']:.2f} s; retried batches {execution.retried}")
    print(f"outputs: {run_dir}/summary.json, {timeline}, {run_dir}/telemetry.jsonl")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the hybrid circuit-cutting job locally",
        description="Cut an N-qubit ansatz with K gate cuts, run the subexperiments on the "
        "cpu/gpu/qpu backends chosen by the policy, reconstruct and report.",
    )
    add_run_arguments(parser)
    parser.add_argument("--run-dir", type=Path, help="output directory; an existing one is resumed")
    add_metrics_port_flag(parser)
    parser.add_argument("--max-attempts", type=int, default=3, help="attempts per batch (default 3)")
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run holding --run-dir to finish (default 0: refuse)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_run)
