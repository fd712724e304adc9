"""Verbs ``qubelet task …``, ``qubelet render`` and ``qubelet submit``.

Heavy imports (qiskit via the pipeline stages, kubernetes) happen inside the handlers so
``qubelet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from qubelet import klog, serde
from qubelet.daemon import add_kubeconfig_flag, metrics_port
from qubelet.inventory.names import RESOURCE_NAME

log = klog.get_logger("qubelet.cluster.cli")

#: ``qubelet run`` flags forwarded verbatim to the cluster's generate step when set.
_PASSTHROUGH = (
    ("observables", "--observables"),
    ("qpu_backend", "--qpu-backend"),
    ("policy_model", "--policy-model"),
    ("circuit", "--circuit"),
    ("partition", "--partition"),
    ("observables_file", "--observables-file"),
    ("max_subcircuit_width", "--max-subcircuit-width"),
    ("num_samples", "--num-samples"),
    ("max_subexperiments", "--max-subexperiments"),
    ("mitigation", "--mitigation"),
    ("zne_scales", "--zne-scales"),
    ("zne_extrapolation", "--zne-extrapolation"),
    ("zne_fold", "--zne-fold"),
)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The same run flags as ``qubelet run`` (pipeline.cli owns them)."""
    from pipeline.cli import add_run_arguments

    add_run_arguments(parser)


#: Widest statevector a cluster GPU step simulates: 2^30 complex128 amplitudes are 16 GiB, which
#: leaves room for Aer's workspace on a 40 GB card.
GPU_STATEVECTOR_MAX_QUBITS = 30


def cluster_subcircuit_width(inventory: Path, backends: tuple[str, ...]) -> int | None:
    """The widest subcircuit the cluster runs: its widest QPU, or a GPU's statevector capacity."""
    from qubelet.errors import UsageError
    from qubelet.inventory import load_config

    try:
        config = load_config(inventory)  # a bad file raises ConfigError, a UsageError
    except OSError as exc:
        raise UsageError(f"{inventory}: {exc.strerror or exc}") from None
    widths = [qpu.qubits for qpu in config.qpus] if "qpu" in backends else []
    if "gpu" in backends:
        widths.append(GPU_STATEVECTOR_MAX_QUBITS)
    return max(widths, default=None)


def _config(args: argparse.Namespace, run_dir: Path) -> Any:
    """A RunConfig from the run flags (bad flags become one-line usage errors).

    On a cluster (``--inventory``), a user circuit with no partition and no width is cut so
    every subcircuit fits the widest device the inventory offers.
    """
    from dataclasses import replace

    from pipeline.cli import config_from_args

    config = config_from_args(args, run_dir)
    inventory = getattr(args, "inventory", None)
    if (
        inventory is not None
        and config.circuit_file is not None
        and config.partition is None
        and config.max_subcircuit_width is None
    ):
        width = cluster_subcircuit_width(inventory, config.backends)
        if width is not None:
            config = replace(config, max_subcircuit_width=width)
    return config


def _run_args(args: argparse.Namespace) -> Any:
    """The run flags as the rendered generate step will repeat them."""
    from pipeline.cli import RUN_DEFAULTS
    from pipeline.cluster.render import RunArgs

    # Passthrough flags are left out of the rendered step while they hold RunConfig's defaults,
    # spelled as the flags spell them.
    implicit = {
        attr: RUN_DEFAULTS[attr] for attr in ("qpu_backend", "mitigation", "zne_extrapolation", "zne_fold")
    }
    implicit["zne_scales"] = ",".join(map(str, RUN_DEFAULTS["zne_scales"]))
    config = _config(args, Path("unused"))
    extra = []
    for attr, flag in _PASSTHROUGH:
        value = getattr(args, attr, None)
        if attr == "observables" and config.observables:
            # Specs from --observables and --observables-file alike: the file is not on the PVC.
            extra.append(f"{flag}={','.join(config.observables)}")
        elif attr == "max_subcircuit_width" and config.max_subcircuit_width is not None:
            extra.append(f"{flag}={config.max_subcircuit_width}")
        elif attr in ("observables", "observables_file", "max_subcircuit_width") or value is None:
            continue
        elif value != implicit.get(attr):
            extra.append(f"{flag}={value}")
    return RunArgs(
        qubits=config.qubits,
        cuts=config.cuts,
        shots=config.shots,
        seed=config.seed,
        policy=config.policy,
        backends=tuple(config.backends),
        batch_size=config.batch_size,
        extra=tuple(extra),
    )


def _add_inventory_flag(parser: argparse.ArgumentParser) -> None:
    """``--inventory``: the cluster's qpus.yaml (render and the generate step both read it)."""
    parser.add_argument(
        "--inventory",
        type=Path,
        help="the cluster's qpus.yaml: a user circuit without --partition is cut to fit the widest "
        "QPU (or GPU) it offers, unless --max-subcircuit-width says otherwise",
    )


def _add_render_flags(parser: argparse.ArgumentParser) -> None:
    from pipeline.cluster.render import RenderOptions

    d = serde.defaults(RenderOptions)  # the flag defaults are RenderOptions' declared ones
    _add_run_flags(parser)
    parser.add_argument("--namespace", default=d["namespace"])
    parser.add_argument("--image", default=d["image"], help="pipeline image for every step")
    parser.add_argument(
        "--qpu-request",
        choices=("claim", "extended-resource"),
        default=d["qpu_request"],
        help=f"QPU steps ask through a ResourceClaim (DRA) or {RESOURCE_NAME} (device plugin)",
    )
    parser.add_argument(
        "--argo-compat",
        choices=("typed", "podspecpatch"),
        default=d["argo_compat"],
        help="typed template resourceClaims (Argo >= v4.1) or podSpecPatch (Argo >= v3.6.6)",
    )
    parser.add_argument(
        "--argo-version",
        default=None,
        help="target Argo Workflows version (e.g. v3.6.5): refuse an --argo-compat it would drop",
    )
    parser.add_argument(
        "--claim-constraints",
        action="store_true",
        help="emit ResourceClaimTemplates with a CEL qubit floor for QPU batches that need one",
    )
    parser.add_argument(
        "--claim-choices",
        choices=("ranked", "single", "off"),
        default="ranked",
        help="QPU claims: the policy's ranked QPUs as firstAvailable alternatives (ranked), only the "
        "best one for clusters without prioritized lists (single), or the plain qpu template (off)",
    )
    parser.add_argument(
        "--run-id", default=None, help="run directory name on the PVC (default: the plan's id)"
    )
    parser.add_argument("--pvc", default=d["pvc"])
    parser.add_argument("--retries", type=int, default=d["retries"], help="retryStrategy.limit of every step")
    _add_inventory_flag(parser)
    parser.add_argument(
        "--pushgateway",
        default=None,
        metavar="URL",
        help="where steps push their final metrics (default: the monitoring base's "
        "qubelet-pushgateway; empty: off, steps linger for a scrape instead)",
    )


def _options(args: argparse.Namespace) -> Any:
    from pipeline.cluster.render import (
        DEFAULT_PUSHGATEWAY,
        RenderOptions,
        check_argo_version,
        parse_argo_version,
    )
    from pipeline.push import check_url
    from qubelet.errors import UsageError

    if getattr(args, "argo_version", None) and args.qpu_request == "claim":
        try:
            check_argo_version(args.argo_compat, parse_argo_version(args.argo_version))
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    pushgateway = getattr(args, "pushgateway", None)
    pushgateway = DEFAULT_PUSHGATEWAY if pushgateway is None else pushgateway
    try:
        pushgateway = check_url(pushgateway) if pushgateway else ""
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return RenderOptions(
        pushgateway=pushgateway,
        namespace=args.namespace,
        image=args.image,
        qpu_request=args.qpu_request,
        argo_compat=args.argo_compat,
        claim_constraints=args.claim_constraints,
        claim_choices=getattr(args, "claim_choices", "ranked"),
        pvc=args.pvc,
        retries=args.retries,
    )


def render_documents(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Plan the run from the cut's metadata and render its objects (claim templates, then Workflow).

    The plan is made for the cluster's backend classes without executing or storing anything;
    the cluster's generate step re-plans with the same flags and checks it gets no batch the
    Workflow lacks.
    """
    from pipeline import stages
    from pipeline.cluster import render
    from pipeline.errors import PipelineError
    from qubelet.errors import UsageError

    opts = _options(args)
    run = _run_args(args)
    try:
        plan: Any = stages.plan_from_cut(_config(args, Path("unused")))
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    run_id = args.run_id or plan.run_id
    try:
        workflow = render.build_workflow(run, run_id, plan.batches, opts)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return [*render.claim_templates(plan.batches, opts), workflow]


def _dump(docs: list[dict[str, Any]], out: str, header: str = "") -> None:
    import yaml

    text = header + yaml.safe_dump_all(docs, sort_keys=False, width=120)
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text)


def _cmd_render(args: argparse.Namespace) -> int:
    from pipeline.cluster import render
    from qubelet.errors import UsageError

    if args.output != "-" and not Path(args.output).resolve().parent.is_dir():
        # Fail before the (seconds-long) planning.
        raise UsageError(f"-o {args.output}: directory {Path(args.output).parent} does not exist")

    if args.workflow_template:
        run = _run_args(args)
        docs = [render.build_workflow_template(_options(args), run)]
        header = (
            "# Generated by `qubelet render --workflow-template`: edit pipeline/cluster/render.py instead.\n"
        )
    else:
        docs = render_documents(args)
        header = ""
    try:
        _dump(docs, args.output, header)
    except OSError as exc:
        raise UsageError(f"-o {args.output}: {exc.strerror or exc}") from None
    wf = docs[-1]
    if args.output != "-":
        templates = wf["spec"]["templates"]
        dag = next(t for t in templates if t["name"] == "main")["dag"]["tasks"]
        print(f"wrote {wf['kind']} with {len(dag)} DAG tasks to {args.output}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from pipeline.cluster import submit
    from qubelet.kube import load_kube_client

    api_client = load_kube_client(args.kubeconfig)
    docs = render_documents(args)
    workflow, claims = docs[-1], docs[:-1]
    try:
        created = submit.create(api_client, workflow, claims, dry_run=args.dry_run)
        name = created["metadata"].get("name") or created["metadata"].get("generateName", "")
        print(f"workflow {args.namespace}/{name} {'validated (dry run)' if args.dry_run else 'created'}")
        if args.dry_run or args.no_follow:
            return 0
        phase = submit.follow(
            api_client,
            args.namespace,
            name,
            timeout_seconds=args.timeout,
            on_change=lambda phase, status: print(f"{name}: {phase} {status.get('progress', '')}".rstrip()),
        )
    except submit.SubmitError as exc:
        print(f"qubelet: error: {exc}", file=sys.stderr)
        return 1
    return 0 if phase == "Succeeded" else 1


def _cmd_task(args: argparse.Namespace) -> int:
    from pipeline.cluster import tasks
    from pipeline.errors import PipelineError, RunTerminated
    from pipeline.push import Pusher
    from pipeline.termination import EXIT_TERMINATED
    from qubelet.errors import UsageError

    run_dir = Path(args.run_dir)
    port = args.metrics_port if args.metrics_port is not None else tasks.env_number("QUBELET_METRICS_PORT")
    linger = (
        args.metrics_linger if args.metrics_linger is not None else tasks.env_number("QUBELET_METRICS_LINGER")
    )
    try:
        pusher = Pusher.from_env(args.pushgateway)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        with tasks.step_metrics(int(port), float(linger), pusher):
            if args.step == "generate":
                expect = [b for b in args.expect_batches.split(",") if b] if args.expect_batches else None
                tasks.generate(_config(args, run_dir), expect, args.write_batch_lists, pusher)
            elif args.step == "execute":
                tasks.execute(run_dir, args.batch, missing_ok=args.missing_ok, pusher=pusher)
            else:
                summary = tasks.reconstruct(run_dir, pusher)
                for obs in summary.get("observables", []):
                    print(f"{obs.get('name')}: {obs.get('value')} ± {obs.get('stderr')}")
    except RunTerminated as exc:
        cancelled = "; cancelled " + ", ".join(exc.cancelled) if exc.cancelled else ""
        print(f"qubelet: {exc}: step {args.step} stopped{cancelled}", file=sys.stderr)
        return EXIT_TERMINATED
    except (tasks.TaskError, PipelineError) as exc:
        raise UsageError(str(exc)) from None
    return 0


def _add_task_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="run directory on the shared volume")
    parser.add_argument(
        "--metrics-port",
        type=metrics_port,
        default=None,
        help="serve metrics (default $QUBELET_METRICS_PORT)",
    )
    parser.add_argument(
        "--metrics-linger",
        type=float,
        default=None,
        help="keep serving metrics this long after (s), when they could not be pushed",
    )
    _add_inventory_flag(parser)
    parser.add_argument(
        "--pushgateway",
        default=None,
        metavar="URL",
        help="push final metrics to this Prometheus Pushgateway, grouped by run and task "
        "(default $QUBELET_PUSHGATEWAY; empty: off)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``task``, ``render`` and ``submit``."""
    task = subparsers.add_parser("task", help="run one step of a cluster workflow (container entry point)")
    steps = task.add_subparsers(dest="step", metavar="STEP", required=True)
    gen = steps.add_parser("generate", help="cut the circuit, store subexperiments and plan.json")
    _add_task_common(gen)
    _add_run_flags(gen)
    gen.add_argument(
        "--expect-batches", default=None, help="comma list of batch ids the workflow was rendered for"
    )
    gen.add_argument("--write-batch-lists", action="store_true", help="write argo/batches-<kind>.json")
    gen.set_defaults(func=_cmd_task)
    exe = steps.add_parser("execute", help="run one batch of the plan on its backend")
    _add_task_common(exe)
    exe.add_argument("--batch", required=True, help="batch id from plan.json")
    exe.add_argument("--missing-ok", action="store_true", help="a batch not in plan.json is a no-op (resume)")
    exe.set_defaults(func=_cmd_task)
    rec = steps.add_parser("reconstruct", help="combine results into summary.json")
    _add_task_common(rec)
    rec.set_defaults(func=_cmd_task)

    render = subparsers.add_parser("render", help="write the Argo Workflow for a run")
    _add_render_flags(render)
    render.add_argument("--workflow-template", action="store_true", help="write the WorkflowTemplate instead")
    render.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    render.set_defaults(func=_cmd_render)

    submit = subparsers.add_parser("submit", help="render and create the Workflow, then follow it")
    _add_render_flags(submit)
    add_kubeconfig_flag(submit)
    submit.add_argument("--dry-run", action="store_true", help="server-side dry run only")
    submit.add_argument("--no-follow", action="store_true")
    submit.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to follow before giving up")
    submit.set_defaults(func=_cmd_submit)
