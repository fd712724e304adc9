"""``qubelet run``: the hybrid cutting job on this machine, on the embedded backends."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import RunConfig
from policy.registry import POLICY_NAMES
from qubelet import serde
from qubelet.daemon import add_metrics_port_flag

#: The flag defaults are RunConfig's declared defaults (one home for each).
RUN_DEFAULTS = serde.defaults(RunConfig)
DEFAULT_POLICY = RUN_DEFAULTS["policy"]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that define a run; ``qubelet render`` and ``qubelet task generate`` reuse them."""
    d = RUN_DEFAULTS
    # Default None: given with --circuit they are refused, not silently ignored (config_from_args).
    parser.add_argument(
        "--qubits", type=int, default=None, help=f"built-in ansatz width N (default {d['qubits']})"
    )
    parser.add_argument(
        "--cuts",
        type=int,
        default=None,
        help=f"built-in ansatz: CNOTs across the A|B cut, K (default {d['cuts']})",
    )
    parser.add_argument(
        "--shots", type=int, default=d["shots"], help=f"shots per subexperiment (default {d['shots']})"
    )
    parser.add_argument(
        "--seed", type=int, default=d["seed"], help=f"seed for parameters and sampling (default {d['seed']})"
    )
    parser.add_argument(
        "--policy",
        default=DEFAULT_POLICY,
        help=f"backend selection: {'|'.join(POLICY_NAMES)} (default {DEFAULT_POLICY})",
    )
    parser.add_argument("--policy-model", type=Path, help="fitted telemetry model (qubelet policy fit)")
    parser.add_argument(
        "--policy-config",
        type=Path,
        help="admin's policy knobs (YAML, version v1: epsilon, loop cadence, per-backend weight and "
        "prior overrides; docs/policy.md)",
    )
    parser.add_argument(
        "--error-budget",
        type=float,
        help="telemetry/greedy policy: largest predicted error of one subexperiment's result, i.e. "
        "the chance a shot's circuit suffers an error (1 - f2q^n2q * fro^measured, corrected by "
        "measured errors); an observable's bias is at most 2 x this x the sampling overhead "
        "(default 0.35). When no backend meets it the least-error one runs, with a warning",
    )
    parser.add_argument(
        "--prometheus",
        metavar="URL",
        help="read live backend health and Kueue queue depths from this Prometheus at every re-plan",
    )
    parser.add_argument(
        "--require-budget",
        action="store_true",
        help="refuse (exit 2) instead of running when no backend meets --error-budget",
    )
    parser.add_argument(
        "--backends",
        default=",".join(d["backends"]),
        help=f"backend classes to use, comma-separated (default {','.join(d['backends'])}); "
        "'exact' alone computes exact distributions (stderr 0) to check answers against",
    )
    parser.add_argument(
        "--observables",
        help="comma-separated: Pauli labels (ZIIZ), indexed products (Z0Z9), sumZ, weighted sums "
        "(ZZII+IZZI-0.5*XIXI), optionally named (energy=...) "
        "(default: Z..Z, Z0Z{N-1}, the two boundary qubits, sumZ)",
    )
    parser.add_argument(
        "--observables-file",
        type=Path,
        help='JSON list of named SparsePauliOps: [{"name": "energy", "terms": [["ZZII", 1.0], ...]}]',
    )
    parser.add_argument(
        "--circuit", type=Path, help="user circuit (.qpy, or OpenQASM 2 or 3) instead of the ansatz"
    )
    parser.add_argument(
        "--partition",
        help="partition labels for --circuit, one per qubit (e.g. AAABBB); omit to follow "
        "CutWire/cut-gate markers or --max-subcircuit-width",
    )
    parser.add_argument(
        "--max-subcircuit-width",
        type=int,
        help="find cuts automatically (qiskit-addon-cutting find_cuts) so every subcircuit fits W qubits",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        help="draw N samples from the quasi-probability decomposition instead of running every term",
    )
    parser.add_argument(
        "--max-subexperiments",
        type=int,
        default=None,
        help="refuse runs with more subexperiments than this (default 10000)",
    )
    parser.add_argument(
        "--qpu-backend",
        default=d["qpu_backend"],
        help=f"embedded QPU when IQM_SERVER_URL is unset (default {d['qpu_backend']})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=d["batch_size"],
        help=f"max subexperiments per job (default {d['batch_size']})",
    )
    parser.add_argument(
        "--mitigation",
        default=d["mitigation"],
        help="error mitigation of QPU results: none|readout|zne (default "
        f"{d['mitigation']}; zne adds zero-noise extrapolation and runs every QPU circuit once per "
        "scale factor)",
    )
    parser.add_argument(
        "--zne-scales",
        default=",".join(map(str, d["zne_scales"])),
        help="odd gate-folding factors for --mitigation zne (default "
        + ",".join(map(str, d["zne_scales"]))
        + ")",
    )
    parser.add_argument(
        "--zne-extrapolation",
        default=d["zne_extrapolation"],
        help=f"zero-noise extrapolation: linear|richardson (default {d['zne_extrapolation']})",
    )
    parser.add_argument(
        "--zne-fold",
        default=d["zne_fold"],
        help=f"gates folded for zne: 2q (two-qubit only) or all (default {d['zne_fold']})",
    )


def config_from_args(args: argparse.Namespace, run_dir: Path) -> Any:
    """Build a RunConfig, turning bad flags into one-line usage errors."""
    from pipeline.config import DEFAULT_MAX_SUBEXPERIMENTS
    from pipeline.errors import PipelineError
    from qubelet.errors import UsageError

    try:
        scales_flag = getattr(args, "zne_scales", None)
        scales = (
            tuple(int(x) for x in str(scales_flag).split(",") if x.strip())
            if scales_flag is not None
            else RUN_DEFAULTS["zne_scales"]
        )
    except ValueError:
        raise UsageError(f"--zne-scales {args.zne_scales!r}: give odd integers such as 1,3,5") from None
    circuit = getattr(args, "circuit", None)
    explicit = [flag for flag in ("qubits", "cuts") if getattr(args, flag, None) is not None]
    if circuit is not None and explicit:
        flags = " and ".join(f"--{f} {getattr(args, f)}" for f in explicit)
        verb = "describe" if len(explicit) > 1 else "describes"
        raise UsageError(
            f"{flags} {verb} the built-in ansatz: with --circuit {circuit} its width and the cut "
            "decide (drop them; --partition or --max-subcircuit-width say where to cut)"
        )
    try:
        observables = list(o.strip() for o in args.observables.split(",")) if args.observables else []
        if getattr(args, "observables_file", None) is not None:
            observables.extend(_observables_file(args.observables_file))
        max_subexperiments = getattr(args, "max_subexperiments", None)
        return RunConfig(
            qubits=RUN_DEFAULTS["qubits"] if args.qubits is None else args.qubits,
            cuts=RUN_DEFAULTS["cuts"] if args.cuts is None else args.cuts,
            shots=args.shots,
            seed=args.seed,
            policy=args.policy,
            policy_model=args.policy_model,
            policy_config=getattr(args, "policy_config", None),
            prometheus=getattr(args, "prometheus", None),
            cluster_health=bool(getattr(args, "cluster_health", False)),
            # render and submit read their own --kubeconfig; a run's is for --cluster-health
            kubeconfig=getattr(args, "kubeconfig", None) if getattr(args, "cluster_health", False) else None,
            error_budget=args.error_budget,
            require_budget=bool(getattr(args, "require_budget", False)),
            backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
            run_dir=run_dir,
            observables=tuple(observables) or None,
            circuit_file=args.circuit,
            partition=args.partition,
            qpu_backend=args.qpu_backend,
            batch_size=args.batch_size,
            max_attempts=getattr(args, "max_attempts", RUN_DEFAULTS["max_attempts"]),
            max_subcircuit_width=getattr(args, "max_subcircuit_width", None),
            num_samples=getattr(args, "num_samples", None),
            max_subexperiments=(
                DEFAULT_MAX_SUBEXPERIMENTS if max_subexperiments is None else max_subexperiments
            ),
            mitigation=getattr(args, "mitigation", RUN_DEFAULTS["mitigation"]),
            zne_scales=scales,
            zne_extrapolation=getattr(args, "zne_extrapolation", RUN_DEFAULTS["zne_extrapolation"]),
            zne_fold=getattr(args, "zne_fold", RUN_DEFAULTS["zne_fold"]),
        )
    except PipelineError as exc:
        raise UsageError(str(exc)) from None


def _observables_file(path: Path) -> tuple[str, ...]:
    """Observable specs from a JSON file of named SparsePauliOps (one-line errors)."""
    import json

    from pipeline.circuits import observables_from_json
    from pipeline.errors import PipelineError

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such observables file") from None
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None
    return observables_from_json(data, str(path))


class TqdmProgress:
    """Progress bar on stderr while subexperiments complete."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start(self, total: int) -> None:
        """Show the bar for ``total`` subexperiments."""
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="subexp", desc="executing", file=sys.stderr, leave=False)

    def advance(self, done: int) -> None:
        """Move the bar to ``done`` finished subexperiments."""
        if self._bar is not None:
            self._bar.update(done)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    """``qubelet run``: one run, or one per row of ``--parameters``, through :mod:`pipeline.api`."""
    from pipeline import api, metrics
    from pipeline.errors import PipelineError, RunTerminated
    from pipeline.termination import EXIT_TERMINATED
    from qubelet import proctime
    from qubelet.errors import UsageError

    run_dir = args.run_dir or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    if args.kubeconfig is not None and not args.cluster_health:
        raise UsageError(
            f"--kubeconfig {args.kubeconfig}: read only with --cluster-health (add it, or drop this)"
        )
    config = config_from_args(args, run_dir)
    if args.dry_run:
        return _dry_run(config, args.parameters)
    if not 0.0 <= args.metrics_linger <= 3600.0:
        raise UsageError(f"--metrics-linger: must be in 0..3600 seconds, got {args.metrics_linger}")
    metrics.serve(args.metrics_port)

    def announce(estimate: Any) -> None:
        print(f"qubelet run: {estimate.describe()}", flush=True)

    progress = TqdmProgress(not args.no_progress and sys.stderr.isatty())
    try:
        if args.parameters is not None:
            from pipeline.circuits import load_circuit_file

            if config.circuit_file is None:
                raise PipelineError("--parameters needs --circuit (a circuit with unbound parameters)")
            circuit = load_circuit_file(Path(config.circuit_file))
            rows = api.load_parameter_sets(args.parameters)
            results = api.sweep(
                config, circuit, rows, progress=progress, announce=announce, lock_wait=args.lock_wait
            )
            code = _print_sweep(results, run_dir)
        else:
            # The user's wait began when the process did: start-up counts, and is shown as a stage.
            result = api.execute(
                config,
                progress=progress,
                announce=announce,
                lock_wait=args.lock_wait,
                started_at=proctime.PROCESS_STARTED_AT,
            )
            _report_run(result)
            code = 0
    except RunTerminated as exc:
        cancelled = "; cancelled " + ", ".join(exc.cancelled) if exc.cancelled else ""
        print(f"qubelet: {exc}: results so far are kept in {run_dir}{cancelled}", file=sys.stderr)
        return EXIT_TERMINATED
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # a filesystem fault outside the store's own checks: still one line
        raise UsageError(f"{exc.filename or run_dir}: {exc.strerror or exc}") from None
    if args.metrics_port and args.metrics_linger > 0:
        # The process is about to exit: keep /metrics up for one more scrape of the final values.
        time.sleep(args.metrics_linger)
    return code


def _dry_run(config: Any, parameters: Path | None) -> int:
    """``qubelet run --dry-run``: cut and plan on this machine's backends, print the cost, stop.

    Nothing is written: no run directory, no subexperiment, no telemetry.
    """
    from pipeline import api, stages
    from pipeline.backends.factory import available_backends
    from pipeline.circuits import load_circuit_file
    from pipeline.errors import PipelineError
    from qubelet.errors import UsageError

    try:
        backends, unavailable = available_backends(
            config.backends,
            qpu_spec=config.qpu_backend,
            cpu_workers=config.cpu_workers,
            mitigation=config.mitigation_config(),
        )
        if not backends:
            raise PipelineError("no usable backend: " + "; ".join(unavailable.values()))
        template, values, sets = None, None, 1
        if parameters is not None:
            if config.circuit_file is None:
                raise PipelineError("--parameters needs --circuit (a circuit with unbound parameters)")
            circuit = load_circuit_file(Path(config.circuit_file))
            rows = api.load_parameter_sets(parameters)
            template = api.cut_template(config, circuit)
            values, sets = api.parameter_dict(circuit, rows[0]), len(rows)
        preview = stages.preview(
            config,
            states=[b.state() for b in backends],
            template=template,
            parameter_values=values,
            rehearse_loop=True,
        )
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    print(f"qubelet run: {preview.cost.describe()}")
    for kind, reason in unavailable.items():
        print(f"qubelet run: {kind} unavailable: {reason}")
    per_set = f" per parameter set, {sets} sets" if parameters is not None else ""
    print(f"qubelet run: {preview.estimate.describe()}{per_set}; cut took {preview.cut_seconds:.2f} s")
    print("qubelet run: dry run, nothing executed or written")
    return 0


def _report_run(result: Any) -> None:
    """The report stage: draw the timeline, record the whole wall time, print the tables."""
    from pipeline import report
    from pipeline.store import write_json
    from pipeline.timing import StageClock, format_breakdown

    summary = result.summary
    run_dir = result.run_dir
    clock = StageClock.from_json(summary["timing"])
    report_started = time.time()
    clock.add("report", report_started, report_started)  # drawn as it stands when drawing starts
    timeline = report.plot_timeline(
        report.load_events(run_dir),
        run_dir / "timeline.png",
        title=f"{summary['qubits']} qubits, {summary['cuts']} cuts, policy {summary['policy']}",
        timing=clock,
        backends=summary.get("backend_names", ()),
    )
    clock.intervals.pop()
    finished = time.time()
    clock.add("report", report_started, finished)
    summary["timing"] = clock.to_json(finished)
    summary["wall_seconds"] = summary["timing"]["wall_seconds"]
    write_json(run_dir / "summary.json", summary)
    subexp = ", ".join(
        f"{label}: {count} ({summary['distinct_subexperiments'][label]} distinct)"
        for label, count in summary["subexperiments"].items()
    )
    sampling = "exact distributions" if set(summary["backends"]) == {"exact"} else f"{summary['shots']} shots"
    print(
        f"qubelet run: {summary['qubits']} qubits, {summary['cuts']} cuts "
        f"({summary['coefficient_terms']} coefficient terms), {sampling}, "
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
    if summary.get("exact_reason"):
        print(f"no exact reference: {summary['exact_reason']}")
    print()
    print(report.results_table(summary))
    print()
    print(report.backends_table(summary))
    for warning in report.backend_warnings(summary):
        print(f"qubelet: warning: {warning}", file=sys.stderr)
    mitigation = report.mitigation_line(summary)
    if mitigation:
        print(mitigation)
    print()
    retried = result.execution.retried if result.execution is not None else 0
    breakdown = format_breakdown(summary["timing"]["stages"], summary["wall_seconds"])
    print(f"{breakdown}; retried batches {retried}")
    print(f"outputs: {run_dir}/summary.json, {timeline}, {run_dir}/telemetry.jsonl")


def _print_sweep(results: list[Any], run_dir: Path) -> int:
    """One line per parameter set: values ± stderr and what the iteration cost."""
    names = list(results[0].values) if results else []
    print(f"qubelet run: {len(results)} parameter sets, cut once")
    print("set  " + "  ".join(f"{name} ± stderr (exact)" for name in names) + "  cut s  bind s  run s")
    for index, result in enumerate(results):
        cells = "  ".join(
            f"{result.values[n]:+.4f} ± {result.stderrs[n]:.4f} "
            + ("(—)" if result.exact[n] is None else f"({result.exact[n]:+.4f})")
            for n in names
        )
        seconds = result.seconds
        print(
            f"{index:>3}  {cells}  {seconds['cut']:.2f}  {seconds['bind']:.2f}  "
            f"{seconds['execute_and_reconstruct']:.2f}"
        )
    print(f"outputs: {run_dir}/sweep.json, {run_dir}/sets/NNNN/summary.json")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``run`` verb to the top-level parser."""
    parser = subparsers.add_parser(
        "run",
        help="run the hybrid circuit-cutting job locally",
        description="Cut an N-qubit ansatz with K gate cuts, or your own circuit (--circuit: by "
        "--partition, CutWire/Move wire cuts or --max-subcircuit-width), run the subexperiments on "
        "the cpu/gpu/qpu backends chosen by the policy, reconstruct and report. "
        "See docs/bring-your-own-circuit.md.",
    )
    add_run_arguments(parser)
    parser.add_argument("--run-dir", type=Path, help="output directory; an existing one is resumed")
    add_metrics_port_flag(parser)
    parser.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        metavar="S",
        help="with --metrics-port: keep serving this long after the run, for a last scrape",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=RUN_DEFAULTS["max_attempts"],
        help=f"attempts per batch (default {RUN_DEFAULTS['max_attempts']})",
    )
    parser.add_argument(
        "--cluster-health",
        action="store_true",
        help="at every re-plan read QPU health from the cluster: a QPU whose devices in the DRA "
        "driver's ResourceSlices are all tainted NoSchedule/NoExecute is offered as unhealthy "
        "(needs list on resource.k8s.io resourceslices; docs/policy.md)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="with --cluster-health: the cluster to read (default: the pod's service account, "
        "else $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run holding --run-dir to finish (default 0: refuse)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="cut and plan, print subexperiments, total shots (mitigation included), QPU-seconds "
        "and the expected time from the policy's model, then stop without running or writing",
    )
    parser.add_argument(
        "--parameters",
        type=Path,
        help="JSON or NPZ file, one row of parameter values per run: cut once, run every row",
    )
    parser.set_defaults(func=cmd_run)
