"""``qubelet policy fit|explain|eval``.

``fit`` learns from earlier runs' ``telemetry.jsonl`` (and optionally a Prometheus server) and
writes a JSON model; ``explain`` prints each backend's predictions for one subexperiment and why
the winner wins; ``eval`` runs the cluster simulator and compares ``size``, ``telemetry`` and the
lower bound. Heavy imports (scikit-learn, scipy) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

#: the built-in scenarios' names, from the file that orders them (no heavy import at parse time)
EVAL_SCENARIOS = tuple(
    (Path(__file__).with_name("builtin_scenarios") / "order.txt").read_text(encoding="utf-8").split()
)


def register(subparsers: Any) -> None:
    """Add the ``policy`` verb and its sub-verbs."""
    parser = subparsers.add_parser("policy", help="fit, explain and evaluate the backend-selection policy")
    verbs = parser.add_subparsers(dest="policy_command", metavar="VERB")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)

    fit = verbs.add_parser("fit", help="fit the telemetry policy from run telemetry")
    fit.add_argument(
        "--telemetry", nargs="+", type=Path, default=[], metavar="FILE", help="telemetry.jsonl files"
    )
    fit.add_argument("--prometheus", metavar="URL", help="Prometheus base URL (e.g. http://prometheus:9090)")
    fit.add_argument("--prometheus-timeout", type=float, default=2.0, metavar="S")
    fit.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows instead of failing")
    fit.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL.json")
    fit.set_defaults(func=_fit)

    show = verbs.add_parser("show", help="print what a fitted model learned, with its inputs' ages")
    show.add_argument("model", type=Path, metavar="MODEL.json")
    show.set_defaults(func=_show)

    explain = verbs.add_parser(
        "explain", help="show each backend's predictions for one subexperiment, or a real run's decisions"
    )
    explain.add_argument(
        "--run-dir", type=Path, help="explain the decisions of this run (its plan.json and summary.json)"
    )
    explain.add_argument("--limit", type=int, default=10, help="with --run-dir: decisions to print")
    explain.add_argument("--model", type=Path, help="fitted model (default: priors only)")
    explain.add_argument("--qubits", type=int)
    explain.add_argument("--depth", type=int)
    explain.add_argument("--two-qubit-gates", type=int)
    explain.add_argument("--shots", type=int)
    explain.add_argument("--clbits", type=int, help="measured bits (default: qubits)")
    explain.add_argument("--cpu-workers", type=int, default=os.cpu_count() or 1)
    explain.add_argument("--gpu", action="store_true", help="offer a GPU backend")
    explain.add_argument(
        "--inventory", type=Path, help="QPU inventory YAML (e.g. manifests/examples/qpus.yaml)"
    )
    explain.add_argument("--error-budget", type=float, default=0.35)
    explain.add_argument("--json", action="store_true", help="print the full explanation as JSON")
    explain.set_defaults(func=_explain)

    evaluate = verbs.add_parser(
        "eval", help="compare telemetry with all_cpu, greedy, size and a lower bound in the simulator"
    )
    evaluate.add_argument("--scenario", choices=(*EVAL_SCENARIOS, "all"), default="all")
    evaluate.add_argument(
        "--scenario-file",
        type=Path,
        action="append",
        default=[],
        metavar="FILE.yaml",
        help="evaluate the scenario in this file instead (version v1, schema in docs/policy.md); repeatable",
    )
    evaluate.add_argument(
        "--trace",
        type=Path,
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="replay a recorded run: its subexperiments on backends costed from its telemetry; repeatable",
    )
    evaluate.add_argument(
        "--prometheus",
        metavar="URL",
        help="with --trace: also replay the cluster during the run from this Prometheus "
        "(backend down spans, Kueue pending workloads), a range query over the run's span",
    )
    evaluate.add_argument("--tasks", type=int, help="scale the scenario to about N subexperiments")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--policy-config",
        type=Path,
        metavar="FILE.yaml",
        help="admin's policy knobs for the telemetry policy",
    )
    evaluate.add_argument(
        "--seeds",
        metavar="A-B",
        help="evaluate every seed A..B and report per scenario the median, min and max of "
        "telemetry / best budget-holding baseline (e.g. 0-9)",
    )
    evaluate.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    evaluate.set_defaults(func=_eval)


def _fit(args: argparse.Namespace) -> int:
    from policy.models import PolicyModel
    from policy.telemetry_sources import BackendSnapshot, LocalHistory, PrometheusSource
    from qubelet.errors import UsageError

    if not args.telemetry and not args.prometheus:
        raise UsageError("policy fit: give --telemetry FILE... and/or --prometheus URL")
    for path in args.telemetry:
        if not path.is_file():
            raise UsageError(f"policy fit: telemetry file {path} does not exist")
    history = LocalHistory(args.telemetry, strict=not args.skip_bad_rows)
    try:
        rows = history.rows()
    except ValueError as exc:
        raise UsageError(f"policy fit: {exc}") from exc
    if history.torn_lines:
        print(f"skipped {history.torn_lines} torn telemetry lines (writes cut short, e.g. by a full disk)")
    if history.nul_lines:
        print(f"dropped NUL bytes from {history.nul_lines} telemetry lines (left by a crash)")
    if not rows and not args.prometheus:
        files = ", ".join(str(p) for p in args.telemetry)
        raise UsageError(
            f"policy fit: no usable telemetry rows in {files} "
            f"({history.torn_lines} torn, {history.nul_lines} with NUL bytes)"
        )
    snapshots: dict[str, BackendSnapshot] = {}
    if args.prometheus:
        source = PrometheusSource(args.prometheus, timeout=args.prometheus_timeout)
        snapshots = source.snapshots()
        if source.last_error:
            print(f"warning: {source.last_error}; continuing with what was read")
    model = PolicyModel(rows, snapshots)
    try:
        model.save(args.output)
    except OSError as exc:
        raise UsageError(f"policy fit: cannot write {args.output}: {exc.strerror or exc}") from exc
    print(
        f"fitted on {len(model.rows)} telemetry rows, {len(snapshots)} Prometheus backends -> {args.output}"
    )
    for name, stats in sorted(model.stats.items()):
        mean = stats.mean_run_seconds or 0.0
        print(
            f"  {name:<24} rows={stats.rows:<6} mean_run={mean:.4g}s "
            f"failure_ratio={stats.failure_ratio():.3f} queue_wait={stats.queue_wait():.3g}s"
        )
    return 0


def _inventory_backends(path: Path) -> list[Any]:
    """One policy backend per QPU of a validated inventory file (the same loader the daemons use)."""
    from policy.interface import BackendState
    from qubelet.errors import UsageError
    from qubelet.inventory import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        raise UsageError(f"policy explain: {exc}") from exc
    return [
        BackendState(
            name=f"qpu:{qpu.name}",
            kind="qpu",
            max_qubits=qpu.qubits,
            model=qpu.model,
            fidelity_2q=qpu.fidelity_2q,
            readout_fidelity=qpu.readout_fidelity,
        )
        for qpu in config.qpus
    ]


def _read_under_inventory_names(policy: Any, path: Path, quiet: bool = False) -> None:
    """Read the model's laptop QPU names as the inventory's (qpu:apollo is qpu:apollo-cloud)."""
    from policy.aliases import renamed
    from qubelet.inventory import load_config
    from qubelet.inventory.aliases import telemetry_aliases

    aliases = telemetry_aliases(load_config(path))  # already validated by _inventory_backends
    learned = {str(row.get("backend")) for row in policy.model.rows}
    used = {local: name for local, name in aliases.items() if local in learned}
    if used:
        policy.model = renamed(policy.model, used)
        if not quiet:
            print("names: " + ", ".join(f"{local} (this laptop) is {name}" for local, name in used.items()))


def _explain(args: argparse.Namespace) -> int:
    from policy.interface import BackendState, CircuitFeatures
    from policy.telemetry import TelemetryPolicy
    from qubelet.errors import UsageError

    if args.run_dir is not None:
        return _explain_run(args.run_dir, args.limit)
    missing = [f for f in ("qubits", "depth", "two_qubit_gates", "shots") if getattr(args, f) is None]
    if missing:
        flags = ", ".join("--" + f.replace("_", "-") for f in missing)
        raise UsageError(f"policy explain: give --run-dir DIR, or {flags} for one subexperiment")
    if args.model is not None and not args.model.is_file():
        raise UsageError(f"policy explain: model file {args.model} does not exist")
    if min(args.qubits, args.shots) < 1 or min(args.depth, args.two_qubit_gates) < 0:
        raise UsageError("policy explain: --qubits/--shots must be >= 1, --depth/--two-qubit-gates >= 0")
    try:
        policy = TelemetryPolicy.load_or_prior(args.model, seed=0, error_budget=args.error_budget)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    backends = [BackendState(name="cpu", kind="cpu", workers=max(args.cpu_workers, 1))]
    if args.gpu:
        backends.append(BackendState(name="gpu", kind="gpu"))
    if args.inventory is not None:
        backends += _inventory_backends(args.inventory)
        _read_under_inventory_names(policy, args.inventory, quiet=args.json)
    task = CircuitFeatures(
        key="explain",
        num_qubits=args.qubits,
        depth=args.depth,
        num_2q_gates=args.two_qubit_gates,
        num_clbits=args.clbits if args.clbits is not None else args.qubits,
        shots=args.shots,
    )
    report = policy.explain(task, backends)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"{'backend':<24} {'run s':>10} {'wait s':>9} {'finish s':>10} {'error':>7} {'model':<22} note")
    for row in report["backends"]:
        note = "; ".join(row["excluded_because"]) or ("eligible" if row["eligible"] else "")
        print(
            f"{row['backend']:<24} {row['run_seconds']:>10.4g} {row['wait_seconds']:>9.3g} "
            f"{row['finish_seconds']:>10.4g} {row['error']:>7.3f} "
            f"{row['model'] + ' (' + str(row['training_rows']) + ' rows)':<22} {note}"
        )
    print(f"chosen: {report['chosen']} — {report['why']}")
    return 0


def _explain_run(run_dir: Path, limit: int) -> int:
    """A real run's decisions: per backend how many, the budget, and each decision's candidates."""
    from qubelet.errors import UsageError

    plan_path = run_dir / "plan.json"
    try:
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"policy explain: cannot read {plan_path}: {exc}") from None
    decisions = plan.get("decisions") or {}
    counts: dict[str, int] = {}
    for decision in decisions.values():
        counts[decision["backend"]] = counts.get(decision["backend"], 0) + 1
    loop = plan.get("loop") or {}
    print(
        f"run {plan.get('run_id')}: policy {plan.get('policy')}, {len(decisions)} decisions "
        f"({', '.join(f'{b}: {n}' for b, n in sorted(counts.items()))}); "
        f"{len(plan.get('batches') or [])} batches, {loop.get('replans', '?')} re-plans, "
        f"{loop.get('refits', '?')} refits"
    )
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary.get("error_budget") is not None:
            met = summary.get("error_budget_met")
            print(
                f"error budget {summary['error_budget']}: "
                + ("met" if met else "NOT met" if met is False else "not predicted by this policy")
                + f" (max predicted error {summary.get('max_predicted_error')})"
            )
    for key, decision in list(decisions.items())[: max(limit, 0)]:
        print(f"{key[:12]} -> {decision['backend']}: {decision.get('reason', '')}")
        for c in decision.get("candidates", []):
            predicted = (
                f"run {c['run_seconds']:.4g}s wait {c['queue_wait_seconds']:.3g}s error {c['error']:.3g}"
                if "run_seconds" in c
                else "no prediction"
            )
            verdict = "chosen" if c.get("chosen") else f"lost: {c.get('lost_because', '')}"
            print(f"    {c['backend']:<22} {predicted:<44} {verdict}")
    if len(decisions) > limit:
        print(f"... {len(decisions) - limit} more (--limit N)")
    return 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _probes(model: Any, state: Any) -> str:
    """`` (probes: 12 mirror, 3 exact; drift +2.1%/min)``: what the error factor rests on."""
    counts: dict[str, int] = {}
    for row in model.rows:
        if row["backend"] == state.name and row.get("observed_error") is not None:
            kind = str(row.get("probe") or "exact")
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        return " (no probes: calibration only)"
    text = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    rate = model.drift_rate(state)
    if rate > 0:
        text += f"; drift +{100 * math.expm1(60 * rate):.1f}%/min after calibration"
    return f" (probes: {text})"


def _show(args: argparse.Namespace) -> int:
    """What a model learned per backend, and each Prometheus input with its age and expiry."""
    import time

    from policy.interface import BackendState
    from policy.models import SNAPSHOT_TTL_SECONDS, PolicyModel
    from qubelet.errors import UsageError

    if not args.model.is_file():
        raise UsageError(f"policy show: model file {args.model} does not exist")
    try:
        model = PolicyModel.load(args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"{args.model}: {len(model.rows)} telemetry rows")
    for name, stats in sorted(model.stats.items()):
        row = next(r for r in model.rows if r["backend"] == name)
        state = BackendState(name=name, kind=row["backend_kind"], model=str(row.get("model", "")))
        kind = state.kind
        source, rows = model.correction_source(state)
        level = stats.recent_level * stats.level_rows / (stats.level_rows + model.hyper.shrink_rows or 1)
        per_job = stats.seconds_per_external_job
        print(
            f"  {name:<24} rows={stats.rows:<5} failures={stats.failures:<3} "
            f"mean_run={stats.mean_run_seconds or 0:.4g}s "
            f"run-time fit={source} ({rows} rows) recent x{math.exp(level):.2f} "
            f"queue_wait={stats.queue_wait(model.hyper.recent_runs):.3g}s"
            + (f" s/foreign job={per_job:.3g}" if per_job is not None else "")
            + (f" error x{model.error_factor(state):.2f}{_probes(model, state)}" if kind == "qpu" else "")
        )
    if not model.snapshots:
        print("  no Prometheus inputs")
    now = time.time()
    for name, snap in sorted(model.snapshots.items()):
        parts = []
        for field, ttl in SNAPSHOT_TTL_SECONDS.items():
            value = getattr(snap, field)
            if value is None:
                continue
            if snap.observed_at is None:
                parts.append(f"{field}={value} (no timestamp: expired)")
                continue
            age = now - snap.observed_at
            status = "expired" if age > ttl else f"expires in {_age(ttl - age)}"
            parts.append(f"{field}={value} (age {_age(age)}, {status})")
        print(f"  prometheus {name}: " + ("; ".join(parts) or "nothing"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from policy.evaluate import evaluate, format_table, seed_table
    from policy.scenarios import SCENARIOS
    from qubelet.errors import UsageError

    if args.tasks is not None and not 1 <= args.tasks <= 1_000_000:
        raise UsageError("policy eval: --tasks must be between 1 and 1000000")
    if args.prometheus and not args.trace:
        raise UsageError("policy eval: --prometheus replays a run's cluster: it needs --trace RUN_DIR")
    if args.scenario_file or args.trace:
        from policy.scenario_files import load_scenario
        from policy.telemetry_sources import PrometheusSource
        from policy.trace import scenario_from_trace

        prometheus = PrometheusSource(args.prometheus) if args.prometheus else None

        chosen = {}
        for path in args.scenario_file:
            scenario = load_scenario(path)  # ConfigError: one line naming the file, exit 2
            chosen[scenario.name] = scenario
        for run_dir in args.trace:
            scenario = scenario_from_trace(run_dir, prometheus)
            chosen[scenario.name] = scenario
            for spec in scenario.backends:
                spans = [f"down {a:.0f}-{b:.0f} s" for a, b in spec.down_windows]
                spans += [f"others ahead {a:.0f}-{b:.0f} s" for a, b in spec.busy_windows]
                if spans:
                    print(f"{scenario.name}: {spec.name}: " + ", ".join(spans))
    else:
        names = EVAL_SCENARIOS if args.scenario == "all" else (args.scenario,)
        chosen = {name: SCENARIOS[name] for name in names}
    seeds = [args.seed]
    if args.seeds is not None:
        low, _, high = args.seeds.partition("-")
        try:
            seeds = list(range(int(low), int(high or low) + 1))
        except ValueError:
            raise UsageError(f"policy eval: --seeds {args.seeds!r} is not A-B (e.g. 0-9)") from None
        if not seeds:
            raise UsageError(f"policy eval: --seeds {args.seeds!r} is empty")
    admin = None
    if args.policy_config is not None:
        from policy.admin import load_policy_config

        admin = load_policy_config(args.policy_config)  # ConfigError: one line, exit 2
    by_scenario: dict[str, list[Any]] = {}
    for name, scenario in chosen.items():
        if args.tasks is not None:
            scenario = scenario.scaled(args.tasks)
        by_scenario[name] = [evaluate(scenario, seed=seed, admin=admin) for seed in seeds]
    evaluations = [e for runs in by_scenario.values() for e in runs]
    if len(seeds) > 1:
        table, figures = seed_table(by_scenario)
        print(f"telemetry makespan / best budget-holding baseline, seeds {seeds[0]}-{seeds[-1]}")
        print(table)
        if args.json:
            print(json.dumps(figures, sort_keys=True))
        return 0
    print(format_table(evaluations))
    if args.json:
        print(json.dumps({e.scenario: e.summary() for e in evaluations}, sort_keys=True))
    return 0
