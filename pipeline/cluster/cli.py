"""Verbs ``qubelet task …``, ``qubelet render`` and ``qubelet submit``.

Heavy imports (qiskit via the pipeline stages, kubernetes) happen inside the handlers so
``qubelet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
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


def _load_inventory(inventory: Path) -> Any:
    from qubelet.errors import UsageError
    from qubelet.inventory import load_config

    try:
        return load_config(inventory)  # a bad file raises ConfigError, a UsageError
    except OSError as exc:
        raise UsageError(f"{inventory}: {exc.strerror or exc}") from None


def inventory_qpus(inventory: Path | None) -> list[Any] | None:
    """The QPUs of the cluster's inventory (the plan names them as the cluster does), or None."""
    return None if inventory is None else list(_load_inventory(inventory).qpus)


def cluster_subcircuit_width(inventory: Path, backends: tuple[str, ...]) -> int | None:
    """The widest subcircuit the cluster runs: its widest QPU, or a GPU's statevector capacity."""
    config = _load_inventory(inventory)
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


#: Passthrough flags whose values are laptop files: they travel in the inputs ConfigMap instead.
_INPUT_FLAGS = frozenset({"circuit", "policy_model", "observables", "observables_file"})


def _run_args(args: argparse.Namespace, inputs: Any = None) -> Any:
    """The run flags as the rendered generate step will repeat them.

    Files (``--circuit``, ``--policy-model``, observables, ``--parameters``) are named by their
    path in the step's inputs volume (``inputs``, a :class:`~pipeline.cluster.inputs.RunInputs`),
    never by a laptop path.
    """
    from pipeline.cli import RUN_DEFAULTS
    from pipeline.cluster import inputs as run_inputs
    from pipeline.cluster.render import RunArgs

    # Passthrough flags are left out of the rendered step while they hold RunConfig's defaults,
    # spelled as the flags spell them.
    implicit = {
        attr: RUN_DEFAULTS[attr] for attr in ("qpu_backend", "mitigation", "zne_extrapolation", "zne_fold")
    }
    implicit["zne_scales"] = ",".join(map(str, RUN_DEFAULTS["zne_scales"]))
    config = _config(args, Path("unused"))
    files = inputs.files if inputs is not None else {}
    extra = []
    for name, flag in (
        (run_inputs.CIRCUIT, "--circuit"),
        (run_inputs.POLICY_MODEL, "--policy-model"),
        (run_inputs.OBSERVABLES, "--observables-file"),
        (run_inputs.INVENTORY, "--inventory"),
    ):
        if name in files:
            extra.append(f"{flag}={inputs.path(name)}")
    if run_inputs.OBSERVABLES not in files and config.observables:
        extra.append(f"--observables={','.join(config.observables)}")
    for attr, flag in _PASSTHROUGH:
        value = getattr(args, attr, None)
        if attr == "max_subcircuit_width" and config.max_subcircuit_width is not None:
            extra.append(f"{flag}={config.max_subcircuit_width}")
        elif attr in _INPUT_FLAGS or attr == "max_subcircuit_width" or value is None:
            continue
        elif value != implicit.get(attr):
            extra.append(f"{flag}={value}")
    if getattr(args, "error_budget", None) is not None:
        extra.append(f"--error-budget={args.error_budget}")
    user_circuit = config.circuit_file is not None
    return RunArgs(
        qubits=None if user_circuit else config.qubits,
        cuts=None if user_circuit else config.cuts,
        shots=config.shots,
        seed=config.seed,
        policy=config.policy,
        backends=tuple(config.backends),
        batch_size=config.batch_size,
        extra=tuple(extra),
    )


def _model_under_inventory_names(config: Any, inventory: Path, scratch: Path) -> tuple[Any, str]:
    """The config with its policy model read under the inventory's QPU names (a copy in ``scratch``).

    What travels to the cluster is that copy: a model fitted on a laptop (``qpu:apollo``) ranks
    the cluster's QPUs (``qpu:apollo-cloud``) with what it learned.
    """
    from dataclasses import replace

    from policy.aliases import renamed
    from policy.models import PolicyModel
    from qubelet.errors import UsageError
    from qubelet.inventory.aliases import telemetry_aliases

    try:
        model = PolicyModel.load(Path(config.policy_model))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    learned = {str(row.get("backend")) for row in model.rows}
    used = {k: v for k, v in telemetry_aliases(_load_inventory(inventory)).items() if k in learned}
    if not used:
        return config, ""
    copy = scratch / "policy-model.json"
    renamed(model, used).save(copy)
    line = "names: " + ", ".join(f"{local} (the model's) is {name}" for local, name in used.items())
    return replace(config, policy_model=copy), line


def _published_inventory(
    inventory: Path, published: Sequence[str], scratch: Path
) -> tuple[Path | None, list[str]]:
    """The inventory with only the QPUs the cluster publishes (a copy in ``scratch``), and the rest.

    The copy is what render plans with and what travels to the generate step, so both plan for
    the same QPUs. None when no QPU of the inventory is published.
    """
    import yaml

    data = yaml.safe_load(inventory.read_text())
    qpus = data.get("qpus") or []
    keep = [q for q in qpus if isinstance(q, dict) and q.get("name") in published]
    dropped = [str(q.get("name")) for q in qpus if isinstance(q, dict) and q not in keep]
    if not dropped:
        return inventory, []
    if not keep:
        return None, dropped
    copy = scratch / "inventory.yaml"
    copy.write_text(yaml.safe_dump({**data, "qpus": keep}, sort_keys=False))
    return copy, dropped


def _inputs(
    args: argparse.Namespace, config: Any, parameter_rows: list[Any] | None, inventory: Path | None = None
) -> Any:
    """The run's laptop files, read for the inputs ConfigMap (size-checked, one-line errors)."""
    from pipeline.cluster import inputs as run_inputs
    from pipeline.errors import PipelineError
    from qubelet.errors import UsageError

    # Observables given as a file travel as a file; plain --observables stay on the command line.
    observables = config.observables if getattr(args, "observables_file", None) is not None else None
    try:
        return run_inputs.collect(
            circuit=config.circuit_file,
            observables=observables,
            parameters=parameter_rows,
            policy_model=config.policy_model,
            inventory=inventory,
        )
    except PipelineError as exc:
        raise UsageError(str(exc)) from None


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
    parser.add_argument(
        "--namespace",
        "-n",
        default=d["namespace"],
        help=f"namespace of the Workflow, its claims and inputs (default {d['namespace']}; "
        "the Kueue LocalQueues must be there)",
    )
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
        choices=("kueue", "ranked", "single", "off"),
        default=d["claim_choices"],
        help="QPU claims: one device of the class, which Kueue admits, the policy's ranking as an "
        "annotation and its fidelity floor checked at admission (kueue, the default); the ranked "
        "QPUs as firstAvailable alternatives (ranked) or only the best one (single), both refused "
        "by Kueue through v0.19, for QPU steps Kueue does not manage; the plain qpu template (off)",
    )
    parser.add_argument(
        "--run-id", default=None, help="run directory name on the PVC (default: the plan's id)"
    )
    parser.add_argument(
        "--pvc",
        default=d["pvc"],
        help=f"PersistentVolumeClaim every step mounts at /runs: run directories, results "
        f"(default {d['pvc']})",
    )
    parser.add_argument("--retries", type=int, default=d["retries"], help="retryStrategy.limit of every step")
    _add_inventory_flag(parser)
    parser.add_argument(
        "--cluster-profile",
        type=Path,
        help="the target cluster's capabilities as YAML (gpus, qpus, deviceClasses, localQueues) "
        "when --kubeconfig cannot reach it: plan only for the backends it has",
    )
    parser.add_argument(
        "--parameters",
        type=Path,
        help="JSON or NPZ parameter sets for --circuit: one Workflow runs the sweep, sets/NNNN each",
    )
    parser.add_argument(
        "--estimate-only",
        action="store_true",
        help="print what the cluster lacks and the cost estimate, then stop",
    )
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
        claim_choices=getattr(args, "claim_choices", "kueue"),
        pvc=args.pvc,
        retries=args.retries,
    )


@dataclass
class Rendered:
    """What ``render`` and ``submit`` make: the objects to create and what to tell the author."""

    docs: list[dict[str, Any]]
    #: lines for the author: what the cluster lacks, assumptions made, the cost estimate
    messages: list[str] = field(default_factory=list)
    estimate: Any = None

    @property
    def workflow(self) -> dict[str, Any]:
        """The Workflow (always the last document)."""
        return self.docs[-1]


def cluster_capabilities(args: argparse.Namespace, api_client: Any = None) -> Any:
    """The target cluster's capabilities: ``--cluster-profile``, else the cluster itself, else None."""
    from pipeline.cluster import capabilities

    profile = getattr(args, "cluster_profile", None)
    if profile is not None:
        return capabilities.load_profile(profile)
    if api_client is None and getattr(args, "kubeconfig", None):
        from qubelet.kube import load_kube_client

        api_client = load_kube_client(args.kubeconfig)
    if api_client is None:
        return None
    source = f"kubeconfig {args.kubeconfig}" if getattr(args, "kubeconfig", None) else "the cluster"
    return capabilities.read_cluster(api_client, args.namespace, source)


def render_documents(args: argparse.Namespace, api_client: Any = None) -> Rendered:
    """Plan the run from the cut's metadata and render its objects (claim templates, inputs, Workflow).

    The plan is made for the backend classes the target cluster has (:mod:`.capabilities`)
    without executing or storing anything; the cluster's generate step re-plans with the same
    flags and checks it gets no batch the Workflow lacks. The run's files travel in an inputs
    ConfigMap (:mod:`.inputs`). With ``--parameters`` every set is planned and the Workflow
    runs them all (one chain per set).
    """
    from pipeline import api, stages
    from pipeline.circuits import load_circuit_file
    from pipeline.cluster import capabilities, render
    from pipeline.errors import PipelineError
    from qubelet.errors import UsageError

    opts = _options(args)
    requested = tuple(b.strip() for b in str(args.backends).split(",") if b.strip())
    caps = cluster_capabilities(args, api_client)
    fitted = capabilities.fit(requested, caps, opts.qpu_request)
    messages = fitted.lines()
    if not fitted.kept:
        raise UsageError(
            f"no backend of --backends {','.join(requested)} runs on this cluster: "
            + "; ".join(f"{k}: {why}" for k, why in fitted.left_out.items())
        )
    args = argparse.Namespace(**{**vars(args), "backends": ",".join(fitted.kept)})
    scratch = tempfile.TemporaryDirectory(prefix="qubelet-render-")
    try:
        inventory = getattr(args, "inventory", None)
        if inventory is not None and caps is not None and caps.qpus and "qpu" in fitted.kept:
            inventory, dropped = _published_inventory(inventory, caps.qpus, Path(scratch.name))
            messages.extend(
                f"cluster: left out QPU {name}: no ResourceSlice publishes it ({caps.source})"
                for name in dropped
            )
            if inventory is None:
                kept = [k for k in fitted.kept if k != "qpu"]
                if not kept:
                    raise UsageError(
                        "no backend runs on this cluster: none of the inventory's QPUs is published"
                    )
                messages.append("cluster: left out qpu: none of the inventory's QPUs is published")
                args = argparse.Namespace(**{**vars(args), "backends": ",".join(kept)})
            args = argparse.Namespace(**{**vars(args), "inventory": inventory})
        config = _config(args, Path("unused"))
        qpus = inventory_qpus(getattr(args, "inventory", None))
        if qpus is not None and config.policy_model is not None:
            config, line = _model_under_inventory_names(config, args.inventory, Path(scratch.name))
            messages.extend([line] if line else [])
        states = stages.nominal_backend_states(config, qpus)
        rows = None
        parameters = getattr(args, "parameters", None)
        if parameters is not None:
            if config.circuit_file is None:
                raise UsageError("--parameters needs --circuit (a circuit with unbound parameters)")
            rows = api.load_parameter_sets(parameters)
        inputs = _inputs(args, config, rows, getattr(args, "inventory", None))
        run = _run_args(args, inputs)
        if rows is not None:
            circuit = load_circuit_file(Path(config.circuit_file))
            if not circuit.parameters:
                raise UsageError("--parameters given, but the circuit has no unbound parameters")
            template = api.cut_template(config, circuit)
            previews: list[Any] = [
                stages.preview(
                    config,
                    states=states,
                    template=template,
                    parameter_values=api.parameter_dict(circuit, row),
                )
                for row in rows
            ]
        else:
            previews = [stages.preview(config, states=states)]
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    finally:
        scratch.cleanup()
    first = previews[0]
    run_id = args.run_id or first.plan.run_id
    every = [b for p in previews for b in p.plan.batches]
    try:
        workflow = render.build_workflow(
            run,
            run_id,
            first.plan.batches,
            opts,
            inputs_configmap=inputs.configmap_name if inputs else None,
            sweep=[p.plan.batches for p in previews] if rows is not None else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sets = f" per parameter set, {len(previews)} sets" if rows is not None else ""
    messages.append(f"{first.estimate.describe()}{sets}")
    inputs_docs = [inputs.configmap(opts.namespace, render.PART_OF)] if inputs else []
    if inputs:
        messages.append(
            f"inputs: ConfigMap {inputs.configmap_name} ({', '.join(sorted(inputs.files))}; "
            f"{inputs.size / 1024:.1f} KiB), mounted into the generate step at {run_inputs_mount()}"
        )
    return Rendered(
        docs=[*render.claim_templates(every, opts), *inputs_docs, workflow],
        messages=messages,
        estimate=first.estimate,
    )


def run_inputs_mount() -> str:
    """Where the generate step sees the run's input files."""
    from pipeline.cluster.inputs import INPUTS_MOUNT

    return INPUTS_MOUNT


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

    # Messages go to stderr when the YAML goes to stdout.
    say = print if args.output != "-" else (lambda text: print(text, file=sys.stderr))
    if args.workflow_template:
        run = _run_args(args)
        docs = [render.build_workflow_template(_options(args), run)]
        header = (
            "# Generated by `qubelet render --workflow-template`: edit pipeline/cluster/render.py instead.\n"
        )
    else:
        rendered = render_documents(args)
        for line in rendered.messages:
            say(line)
        if args.estimate_only:
            return 0
        docs = rendered.docs
        header = ""
    try:
        _dump(docs, args.output, header)
    except OSError as exc:
        raise UsageError(f"-o {args.output}: {exc.strerror or exc}") from None
    wf = docs[-1]
    if args.output != "-":
        templates = wf["spec"]["templates"]
        dag = next(t for t in templates if t["name"] == "main")["dag"]["tasks"]
        extra = f" (and {len(docs) - 1} more objects)" if len(docs) > 1 else ""
        print(f"wrote {wf['kind']} with {len(dag)} DAG tasks{extra} to {args.output}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from pipeline.cluster import inputs as run_inputs
    from pipeline.cluster import runs, submit
    from qubelet.kube import load_kube_client

    api_client = load_kube_client(args.kubeconfig)
    rendered = render_documents(args, api_client)
    for line in rendered.messages:
        print(line)
    if args.estimate_only:
        return 0
    docs = rendered.docs
    workflow = rendered.workflow
    configmaps = [d for d in docs[:-1] if d["kind"] == "ConfigMap"]
    claims = [d for d in docs[:-1] if d["kind"] != "ConfigMap"]
    try:
        created = submit.create(api_client, workflow, claims, dry_run=args.dry_run, configmaps=configmaps)
        name = created["metadata"].get("name") or created["metadata"].get("generateName", "")
        print(f"workflow {args.namespace}/{name} {'validated (dry run)' if args.dry_run else 'created'}")
        if configmaps and not args.dry_run:
            cm_name = configmaps[0]["metadata"]["name"]
            print(f"inputs: ConfigMap {cm_name} (mounted at {run_inputs.INPUTS_MOUNT})")
        if args.dry_run or args.no_follow:
            if not args.dry_run:
                print(f"follow it: qubelet runs get {name} -n {args.namespace}")
            return 0
        if args.watch:
            phase = runs.watch(api_client, args.namespace, name, timeout_seconds=args.timeout, out=print)
        else:
            phase = submit.follow(
                api_client,
                args.namespace,
                name,
                timeout_seconds=args.timeout,
                on_change=lambda phase, status: print(
                    f"{name}: {phase} {status.get('progress', '')}".rstrip()
                ),
            )
    except submit.SubmitError as exc:
        print(f"qubelet: error: {exc}", file=sys.stderr)
        return 1
    if phase == "Succeeded":
        print(f"results: qubelet runs fetch {name} -n {args.namespace}")
    return 0 if phase == "Succeeded" else 1


def _cmd_task(args: argparse.Namespace) -> int:
    from pipeline.cluster import tasks
    from pipeline.errors import PipelineError, RunTerminated
    from pipeline.push import Pusher
    from pipeline.termination import EXIT_TERMINATED
    from qubelet.errors import BackendUnavailableError, UsageError

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
                tasks.generate(
                    _config(args, run_dir),
                    expect,
                    args.write_batch_lists,
                    pusher,
                    parameters=args.parameters,
                    parameter_set=args.parameter_set,
                    inventory_qpus=inventory_qpus(args.inventory),
                )
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
    except (tasks.TaskError, PipelineError, BackendUnavailableError) as exc:
        # A backend this node cannot run (no GPU here) is a wrong placement, not a crash: one line.
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
    """Add ``task``, ``render``, ``submit`` and ``runs``."""
    task = subparsers.add_parser("task", help="run one step of a cluster workflow (container entry point)")
    steps = task.add_subparsers(dest="step", metavar="STEP", required=True)
    gen = steps.add_parser("generate", help="cut the circuit, store subexperiments and plan.json")
    _add_task_common(gen)
    _add_run_flags(gen)
    gen.add_argument(
        "--expect-batches", default=None, help="comma list of batch ids the workflow was rendered for"
    )
    gen.add_argument("--write-batch-lists", action="store_true", help="write argo/batches-<kind>.json")
    gen.add_argument("--parameters", type=Path, help="parameter sets of a sweep (JSON, as qubelet run takes)")
    gen.add_argument(
        "--parameter-set", type=int, default=None, metavar="I", help="with --parameters: bind row I"
    )
    gen.set_defaults(func=_cmd_task)
    exe = steps.add_parser("execute", help="run one batch of the plan on its backend")
    _add_task_common(exe)
    exe.add_argument("--batch", required=True, help="batch id from plan.json")
    exe.add_argument("--missing-ok", action="store_true", help="a batch not in plan.json is a no-op (resume)")
    exe.set_defaults(func=_cmd_task)
    rec = steps.add_parser("reconstruct", help="combine results into summary.json")
    _add_task_common(rec)
    rec.set_defaults(func=_cmd_task)

    render = subparsers.add_parser(
        "render",
        help="write the Argo Workflow for a run",
        description="Plan a run for the target cluster and write its objects: ResourceClaimTemplates, "
        "the inputs ConfigMap (circuit, observables, parameter sets, policy model) and the Workflow. "
        "Prints what the cluster lacks and the cost estimate. See docs/bring-your-own-circuit.md.",
    )
    _add_render_flags(render)
    render.add_argument(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="read the target cluster's capabilities through this kubeconfig (default: none read; "
        "the assumptions made are printed)",
    )
    render.add_argument("--workflow-template", action="store_true", help="write the WorkflowTemplate instead")
    render.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    render.set_defaults(func=_cmd_render)

    submit = subparsers.add_parser(
        "submit",
        help="render and create the Workflow, then follow it",
        description="Render the run for the cluster --kubeconfig reaches (planning only for the "
        "backends it has), create its objects and follow the Workflow. Manage it afterwards with "
        "`qubelet runs`.",
    )
    _add_render_flags(submit)
    add_kubeconfig_flag(submit)
    submit.add_argument("--dry-run", action="store_true", help="server-side dry run only")
    submit.add_argument(
        "--no-follow",
        action="store_true",
        help="return once the Workflow is created (then: qubelet runs get|logs|cancel|fetch NAME)",
    )
    submit.add_argument(
        "--watch",
        action="store_true",
        help="follow every step: Kueue admission, QPU claim allocation, execution (like argo submit --watch)",
    )
    submit.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to follow before giving up")
    submit.set_defaults(func=_cmd_submit)
    _register_runs(subparsers)


def _cmd_runs(args: argparse.Namespace) -> int:
    from pipeline.cluster import runs
    from qubelet.kube import load_kube_client

    api_client = load_kube_client(args.kubeconfig)
    ns = args.namespace
    if args.verb == "list":
        rows = runs.list_runs(api_client, ns)
        print(f"{'NAME':<32} {'PHASE':<10} {'PROGRESS':<9} {'RUN ID':<24} CREATED")
        for r in rows:
            sets = f" ({r['sets']} sets)" if r["sets"] else ""
            print(
                f"{r['name']:<32} {r['phase']:<10} {r['progress']:<9} {r['run_id']:<24} {r['created']}{sets}"
            )
        return 0
    if args.verb == "get":
        wf, steps = runs.describe(api_client, ns, args.name)
        print("\n".join(runs.get_lines(wf, steps)))
        return 0
    if args.verb == "logs":
        for step, text in runs.logs(api_client, ns, args.name, args.step):
            print(f"==> {step} <==")
            print(text.rstrip())
        return 0
    if args.verb == "cancel":
        value = runs.cancel(api_client, ns, args.name, terminate=args.terminate)
        print(f"workflow {ns}/{args.name}: shutdown {value} requested")
        return 0
    dest = args.output or Path(args.name)
    for path in runs.fetch(api_client, ns, args.name, dest):
        print(f"fetched {path}")
    return 0


def _register_runs(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from pipeline.cluster.render import RenderOptions

    namespace = serde.defaults(RenderOptions)["namespace"]
    runs = subparsers.add_parser(
        "runs",
        help="list, inspect, follow, cancel and fetch cluster runs (like argo list|get|logs|stop)",
        description="Manage runs created by `qubelet submit`: their Argo Workflows, step pods and results.",
    )
    verbs = runs.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help_text: str, with_name: bool = True) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help_text)
        if with_name:
            parser.add_argument("name", help="the Workflow's name (qubelet runs list)")
        parser.add_argument(
            "--namespace", "-n", default=namespace, help=f"namespace of the runs (default {namespace})"
        )
        add_kubeconfig_flag(parser)
        parser.set_defaults(func=_cmd_runs)
        return parser

    verb("list", "qubelet's Workflows: phase, progress, run id", with_name=False)
    verb("get", "a run's phase and every step: Kueue admission, claim allocation, execution")
    logs = verb("logs", "the step pods' logs")
    logs.add_argument("--step", help="only this step (e.g. generate, execute-cpu-000)")
    cancel = verb("cancel", "stop the run (argo stop); --terminate skips exit handlers (argo terminate)")
    cancel.add_argument("--terminate", action="store_true", help="Terminate instead of Stop")
    fetch = verb("fetch", "bring summary.json, the results table and timeline.png back here")
    fetch.add_argument("-o", "--output", type=Path, help="directory to write into (default ./NAME)")
