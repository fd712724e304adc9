"""Render the cutting pipeline as an Argo Workflow (argoproj.io/v1alpha1) or WorkflowTemplate.

The DAG is ``generate`` → one ``execute`` task per batch of the plan → ``reconstruct``. Objects
are plain dicts in the shape of Argo's CRD (checked against its vendored schema in the tests),
so nothing here imports Argo or Kubernetes models.

QPU steps get their device from the scheduler, never from a node pin: by default a pod-level
``resourceClaims`` entry from the ``qpu`` ResourceClaimTemplate plus the container's
``resources.claims`` (typed template field in Argo >= v4.1; ``podSpecPatch`` for older Argo), or
the extended resource ``quantum.example.com/qpu`` on device-plugin clusters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pipeline.cluster import claims
from pipeline.cluster import inputs as run_inputs
from pipeline.cluster import resources as res
from pipeline.config import RunConfig
from qubelet import serde
from qubelet.inventory.names import MIN_FIDELITY_ANNOTATION

ArgoCompat = Literal["typed", "podspecpatch"]

#: Oldest Argo Workflows release that keeps a QPU step's claim, per way of asking: typed template
#: ``resourceClaims`` exist from v4.1; before v3.6.6 Argo decodes ``podSpecPatch`` into a PodSpec
#: without ``resources.claims`` and silently drops it (the pod then runs without a QPU).
ARGO_MIN_VERSION: dict[str, tuple[int, int, int]] = {"typed": (4, 1, 0), "podspecpatch": (3, 6, 6)}


def parse_argo_version(text: str) -> tuple[int, int, int]:
    """``v3.6.5`` or ``3.6`` as a (major, minor, patch) tuple; ValueError with one line if not."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?", text.strip())
    if match is None:
        raise ValueError(f"--argo-version: expected a version like v3.6.6, got {text!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def check_argo_version(argo_compat: ArgoCompat, version: tuple[int, int, int]) -> None:
    """Refuse a way of asking for the QPU claim that Argo ``version`` would silently drop."""
    need = ARGO_MIN_VERSION[argo_compat]
    if version < need:
        have = "v" + ".".join(map(str, version))
        want = "v" + ".".join(map(str, need))
        hint = " (use --argo-compat podspecpatch)" if argo_compat == "typed" and version >= (3, 6, 6) else ""
        raise ValueError(
            f"--argo-compat {argo_compat} needs Argo Workflows >= {want}, target is {have}: "
            f"the QPU step would lose its ResourceClaim{hint}"
        )


RUNS_VOLUME = "runs"
TMP_VOLUME = "tmp"
PART_OF = {"app.kubernetes.io/part-of": "qubelet", "app.kubernetes.io/name": "qubelet-pipeline"}
KIND_LABEL = "qubelet.quantum.example.com/backend-kind"
STEP_LABEL = "qubelet.quantum.example.com/step"
#: Port of each step's Prometheus endpoint (scraped by manifests/monitoring PodMonitor).
METRICS_PORT = 9400
RUN_ID_ANNOTATION = "qubelet.quantum.example.com/run-id"
#: On a sweep's Workflow: how many parameter sets (run directories ``sets/NNNN``) it runs.
SWEEP_SETS_ANNOTATION = "qubelet.quantum.example.com/sweep-sets"
#: Run directory on the shared volume: a fixed run id for a rendered Workflow (so a re-submit
#: resumes from stored results), the workflow name for a run of the WorkflowTemplate.
RUN_DIR = "{{workflow.parameters.runs-root}}/{{workflow.parameters.run-id}}"
#: What the reconstruct step writes for ``qubelet runs fetch`` (pipeline.cluster.tasks.write_results),
#: published as its output parameter ``results``.
RESULTS_FILE = "argo/results.json"
TEMPLATE_RUN_DIR = "{{workflow.parameters.runs-root}}/{{workflow.name}}"


class BatchLike(Protocol):
    """What rendering needs from a pipeline ``Batch``."""

    id: str
    kind: str
    min_qubits: int | None


#: Defaults of a run, declared once by RunConfig.
_RUN = serde.defaults(RunConfig)


@dataclass(frozen=True)
class RunArgs:
    """The ``qubelet run`` flags the generate step repeats on the cluster."""

    #: the built-in ansatz's width and cuts; None for a user circuit (its file decides)
    qubits: int | None = _RUN["qubits"]
    cuts: int | None = _RUN["cuts"]
    shots: int = _RUN["shots"]
    seed: int = _RUN["seed"]
    #: the cluster's default is the size rule: a fitted telemetry model is not on the cluster
    policy: str = "size"
    backends: tuple[str, ...] = _RUN["backends"]
    batch_size: int | None = None
    #: further ``qubelet run`` flags passed through verbatim (``--observables=…``, ``--qpu-backend=…``)
    extra: tuple[str, ...] = ()

    def cli_args(self) -> list[str]:
        """The same values as ``qubelet task generate`` flags."""
        return [
            *([f"--qubits={self.qubits}"] if self.qubits is not None else []),
            *([f"--cuts={self.cuts}"] if self.cuts is not None else []),
            f"--shots={self.shots}",
            f"--seed={self.seed}",
            f"--policy={self.policy}",
            f"--backends={','.join(self.backends)}",
            *([f"--batch-size={self.batch_size}"] if self.batch_size else []),
            *self.extra,
        ]


#: The Pushgateway of manifests/monitoring (Service qubelet-pushgateway, port 9091).
DEFAULT_PUSHGATEWAY = "http://qubelet-pushgateway.qubelet-workloads.svc:9091"


@dataclass(frozen=True)
class RenderOptions:
    """Cluster-side knobs: where, with what image, and how QPUs are requested."""

    namespace: str = "qubelet-workloads"
    image: str = "ghcr.io/qubelet/pipeline:0.1.0"
    qpu_request: res.QpuRequest = "claim"
    argo_compat: ArgoCompat = "typed"
    pvc: str = "qubelet-runs"
    runs_root: str = "/runs"
    service_account: str = "qubelet-workflow"
    retries: int = 3
    #: Use a generated ResourceClaimTemplate with a CEL qubit floor when a batch has min_qubits.
    claim_constraints: bool = False
    #: QPU batches with ranked choices: a claim Kueue admits (``kueue``: ``exactly`` one device of
    #: the class, the ranking as an annotation, the floor on the pod for the admission check),
    #: ``firstAvailable`` over them (``ranked``), the best one only (``single``), or the plain
    #: template (``off``). Kueue through v0.19 refuses firstAvailable and CEL selectors, and
    #: every rendered step carries a Kueue queue label: ``ranked``/``single`` are for clusters
    #: where Kueue does not manage the QPU steps (docs/cluster-guide.md).
    claim_choices: Literal["kueue", "ranked", "single", "off"] = "kueue"
    generate_name: str = "qubelet-cutting-"
    extra_labels: dict[str, str] = field(default_factory=dict)
    #: Where steps push their final metrics (manifests/monitoring ships it); empty: no push,
    #: steps only linger for a last scrape.
    pushgateway: str = DEFAULT_PUSHGATEWAY


def task_name(batch_id: str, prefix: str = "") -> str:
    """A DAG task name for a batch id: lower-case alphanumerics and dashes, at most 63 chars."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}execute-{batch_id}".lower()).strip("-")
    return name[:63].rstrip("-")


def _container(
    opts: RenderOptions, kind: str, args: list[str], with_claims: bool, with_inputs: bool = False
) -> dict[str, Any]:
    # /tmp is an emptyDir: the root filesystem is read-only, Python and matplotlib need scratch.
    mounts: list[dict[str, Any]] = [
        {"name": RUNS_VOLUME, "mountPath": opts.runs_root},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
    ]
    if with_inputs:
        mounts.append(
            {"name": run_inputs.INPUTS_VOLUME, "mountPath": run_inputs.INPUTS_MOUNT, "readOnly": True}
        )
    # No token Secret here: the QPU's token file reaches the QPU step through its device (the DRA
    # driver's CDI spec, or the device plugin's Allocate) at IQM_TOKENS_FILE, chosen per namespace
    # by the node daemons; mounting the Secret's directory there too would collide with that file.
    return {
        "name": "main",
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["qubelet"],
        "args": args,
        # The run's input files are named relative to it (inputs/circuit.qpy): pipeline.cluster.inputs.
        "workingDir": run_inputs.STEP_WORKDIR,
        "env": [
            {"name": "QUBELET_RUNS_ROOT", "value": opts.runs_root},
            {"name": "QUBELET_METRICS_PORT", "value": str(METRICS_PORT)},
            {"name": "QUBELET_METRICS_LINGER", "value": "6"},
            *([{"name": "QUBELET_PUSHGATEWAY", "value": opts.pushgateway}] if opts.pushgateway else []),
        ],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": res.container_resources(kind, opts.qpu_request, with_claims=with_claims),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _pod_template(
    opts: RenderOptions,
    name: str,
    kind: str,
    step: str,
    args: list[str],
    *,
    claim_template: str = res.QPU_CLAIM_TEMPLATE,
    inputs: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    with_inputs: bool = False,
) -> dict[str, Any]:
    """One container template: queue label, requests, retries, PVC, and (QPU only) claim + token."""
    qpu_claim = kind == "qpu" and opts.qpu_request == "claim"
    typed_claim = qpu_claim and opts.argo_compat == "typed"
    template: dict[str, Any] = {
        "name": name,
        "metadata": {
            "labels": {
                res.QUEUE_LABEL: res.QUEUES[kind],
                KIND_LABEL: kind,
                STEP_LABEL: step,
                **PART_OF,
                **opts.extra_labels,
            }
        },
        "retryStrategy": {
            "limit": opts.retries,
            "retryPolicy": "Always",
            "backoff": {"duration": "10s", "factor": 2, "maxDuration": "10m"},
        },
        "container": _container(opts, kind, args, with_claims=typed_claim, with_inputs=with_inputs),
    }
    if annotations:
        template["metadata"]["annotations"] = dict(annotations)
    if inputs:
        template["inputs"] = inputs
    if outputs:
        template["outputs"] = outputs
    if typed_claim:
        template["resourceClaims"] = [
            {"name": res.QPU_CLAIM_NAME, "resourceClaimTemplateName": claim_template}
        ]
    elif qpu_claim:
        # Older Argo has no typed template resourceClaims: patch the pod spec instead.
        template["podSpecPatch"] = json.dumps(
            {
                "resourceClaims": [{"name": res.QPU_CLAIM_NAME, "resourceClaimTemplateName": claim_template}],
                "containers": [{"name": "main", "resources": {"claims": [{"name": res.QPU_CLAIM_NAME}]}}],
            },
            sort_keys=True,
        )
    return template


def _spec_common(opts: RenderOptions, run_id: str | None, params: list[dict[str, Any]]) -> dict[str, Any]:
    run_param = [{"name": "run-id", "value": run_id}] if run_id is not None else []
    return {
        "entrypoint": "main",
        "serviceAccountName": opts.service_account,
        "arguments": {
            "parameters": [
                *run_param,
                {"name": "runs-root", "value": opts.runs_root},
                *params,
            ]
        },
        "volumes": [
            {"name": RUNS_VOLUME, "persistentVolumeClaim": {"claimName": opts.pvc}},
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "podMetadata": {"labels": dict(PART_OF)},
        "ttlStrategy": {"secondsAfterCompletion": 7 * 24 * 3600},
    }


def _execute_templates(
    opts: RenderOptions,
    kinds: Iterable[str],
    run_dir: str,
    claim_templates: Sequence[str] = (),
    floors: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Execute templates per kind, then per generated claim (annotated with its fidelity floor).

    In a sweep the run directory is an input too (one per parameter set).
    """
    templates = []
    inputs: dict[str, Any] = {"parameters": [{"name": "batch"}]}
    if run_dir == SET_RUN_DIR:
        inputs["parameters"].append({"name": "run-dir"})
    args = ["task", "execute", f"--run-dir={run_dir}", "--batch={{inputs.parameters.batch}}", "--missing-ok"]
    for kind in sorted(set(kinds)):
        templates.append(
            _pod_template(opts, f"execute-{kind}", kind, "execute", list(args), inputs=dict(inputs))
        )
    for claim in claim_templates:
        templates.append(
            _pod_template(
                opts,
                f"execute-{claim}",
                "qpu",
                "execute",
                list(args),
                claim_template=claim,
                inputs=dict(inputs),
                annotations=(
                    {MIN_FIDELITY_ANNOTATION: f"{floors[claim]:g}"} if floors and claim in floors else None
                ),
            )
        )
    return templates


#: A sweep's per-set run directory, as every step of the set gets it.
SET_RUN_DIR = "{{inputs.parameters.run-dir}}"


def set_dir(index: int) -> str:
    """The run directory of parameter set ``index`` under the sweep's (as ``qubelet run --parameters``)."""
    return f"{RUN_DIR}/sets/{index:04d}"


def build_workflow(
    run: RunArgs,
    run_id: str,
    batches: Sequence[BatchLike],
    opts: RenderOptions | None = None,
    *,
    inputs_configmap: str | None = None,
    sweep: Sequence[Sequence[BatchLike]] | None = None,
) -> dict[str, Any]:
    """The Workflow for one planned run: an explicit DAG task per batch.

    The generate step re-plans on the cluster with the same flags and fails fast (``--expect-batches``)
    if its batches differ from the ones rendered here, so no batch is silently dropped.

    ``inputs_configmap`` names the ConfigMap of the run's input files (:mod:`pipeline.cluster.inputs`),
    mounted into the generate step. ``sweep`` (one batch list per parameter set, ``batches``
    ignored) renders one generate → execute → reconstruct chain per set, each in its own
    ``sets/NNNN`` run directory, all in one Workflow.
    """
    opts = opts or RenderOptions()
    groups = [list(b) for b in sweep] if sweep is not None else [list(batches)]
    every = [b for group in groups for b in group]
    if not every:
        raise ValueError("the plan has no batches to render")
    use_constraints = opts.claim_constraints and opts.qpu_request == "claim"
    claim_for: dict[str, str] = {}
    floors: dict[str, float] = {}  #: per ranked claim template: the fidelity floor it enforces
    for batch in every:
        if batch.kind not in res.QUEUES:
            raise ValueError(f"batch {batch.id}: unknown backend kind {batch.kind!r}")
        ranked = _ranked_claim(batch, opts)
        if ranked is not None:
            claim_for[batch.id] = ranked[0]
            floor = getattr(batch, "min_fidelity_2q", None)
            if floor is not None:
                floors[ranked[0]] = max(floor, floors.get(ranked[0], 0.0))
        elif batch.kind == "qpu" and use_constraints:
            claim_for[batch.id] = res.claim_template_name(batch.min_qubits)
    is_sweep = sweep is not None
    run_dir = SET_RUN_DIR if is_sweep else RUN_DIR
    generate_args = ["task", "generate", f"--run-dir={run_dir}", *run.cli_args()]
    generate_inputs: dict[str, Any] | None = None
    if is_sweep:
        generate_args += [
            f"--parameters={run_inputs.INPUTS_DIR}/{run_inputs.PARAMETERS}",
            "--parameter-set={{inputs.parameters.set}}",
            "--expect-batches={{inputs.parameters.expect-batches}}",
        ]
        generate_inputs = {"parameters": [{"name": n} for n in ("run-dir", "set", "expect-batches")]}
    else:
        generate_args.append(f"--expect-batches={','.join(b.id for b in batches)}")
    extra_claims = sorted({c for c in claim_for.values() if c != res.QPU_CLAIM_TEMPLATE})
    constrained = {bid for bid, c in claim_for.items() if c != res.QPU_CLAIM_TEMPLATE}
    reconstruct_inputs = {"parameters": [{"name": "run-dir"}]} if is_sweep else None
    results_output = {"parameters": [{"name": "results", "valueFrom": {"path": f"{run_dir}/{RESULTS_FILE}"}}]}
    templates: list[dict[str, Any]] = [
        _pod_template(
            opts,
            "generate",
            "cpu",
            "generate",
            generate_args,
            inputs=generate_inputs,
            with_inputs=inputs_configmap is not None,
        ),
        *_execute_templates(
            opts, (b.kind for b in every if b.id not in constrained), run_dir, extra_claims, floors
        ),
        _pod_template(
            opts,
            "reconstruct",
            "cpu",
            "reconstruct",
            ["task", "reconstruct", f"--run-dir={run_dir}"],
            inputs=reconstruct_inputs,
            outputs=results_output,
        ),
    ]
    tasks: list[dict[str, Any]] = []
    for index, group in enumerate(groups):
        prefix = f"set-{index:04d}-" if is_sweep else ""
        where = [{"name": "run-dir", "value": set_dir(index)}] if is_sweep else []
        generate_task: dict[str, Any] = {"name": f"{prefix}generate", "template": "generate"}
        if is_sweep:
            generate_task["arguments"] = {
                "parameters": [
                    *where,
                    {"name": "set", "value": str(index)},
                    {"name": "expect-batches", "value": ",".join(b.id for b in group)},
                ]
            }
        tasks.append(generate_task)
        names: list[str] = []
        for batch in group:
            name = task_name(batch.id, prefix)
            if name in names:
                raise ValueError(f"batch ids {batch.id!r} collide as DAG task name {name!r}")
            names.append(name)
            claim = claim_for.get(batch.id, res.QPU_CLAIM_TEMPLATE)
            template = f"execute-{claim}" if claim != res.QPU_CLAIM_TEMPLATE else f"execute-{batch.kind}"
            tasks.append(
                {
                    "name": name,
                    "template": template,
                    "dependencies": [f"{prefix}generate"],
                    "arguments": {"parameters": [{"name": "batch", "value": batch.id}, *where]},
                }
            )
        reconstruct_task: dict[str, Any] = {
            "name": f"{prefix}reconstruct",
            "template": "reconstruct",
            "dependencies": names,
        }
        if is_sweep:
            reconstruct_task["arguments"] = {"parameters": where}
        tasks.append(reconstruct_task)
    templates.insert(0, {"name": "main", "dag": {"tasks": tasks}})
    spec = _spec_common(opts, run_id, [])
    if inputs_configmap is not None:
        spec["volumes"].append({"name": run_inputs.INPUTS_VOLUME, "configMap": {"name": inputs_configmap}})
    spec["templates"] = templates
    annotations = {RUN_ID_ANNOTATION: run_id}
    if is_sweep:
        annotations[SWEEP_SETS_ANNOTATION] = str(len(groups))
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": opts.generate_name,
            "namespace": opts.namespace,
            "labels": dict(PART_OF),
            "annotations": annotations,
        },
        "spec": spec,
    }


def _ranked_claim(batch: BatchLike, opts: RenderOptions) -> tuple[str, list[claims.Alternative]] | None:
    """(template name, alternatives) for a QPU batch the policy ranked QPUs for, else None."""
    choices = getattr(batch, "choices", None) or []
    if batch.kind != "qpu" or opts.qpu_request != "claim" or opts.claim_choices == "off" or not choices:
        return None
    alts = claims.alternatives(choices, batch.min_qubits, getattr(batch, "min_fidelity_2q", None))
    if opts.claim_choices == "kueue":
        return claims.kueue_template_name(alts), alts
    return claims.template_name(alts, opts.claim_choices == "single"), alts


def claim_templates(batches: Sequence[BatchLike], opts: RenderOptions) -> list[dict[str, Any]]:
    """Generated ResourceClaimTemplates the rendered Workflow refers to (ranked, then qubit floors)."""
    out: dict[str, dict[str, Any]] = {}
    floors: set[int] = set()
    for batch in batches:
        ranked = _ranked_claim(batch, opts)
        if ranked is not None:
            name, alts = ranked
            if opts.claim_choices == "kueue":
                out.setdefault(name, claims.kueue_claim_template(name, opts.namespace, alts))
            else:
                out.setdefault(
                    name,
                    claims.claim_template(name, opts.namespace, alts, single=opts.claim_choices == "single"),
                )
        elif (
            batch.kind == "qpu"
            and batch.min_qubits
            and opts.claim_constraints
            and opts.qpu_request == "claim"
        ):
            floors.add(int(batch.min_qubits))
    floor_templates = [
        res.claim_template(res.claim_template_name(q), opts.namespace, q) for q in sorted(floors)
    ]
    return [*out.values(), *floor_templates]


def build_workflow_template(opts: RenderOptions | None = None, run: RunArgs | None = None) -> dict[str, Any]:
    """The WorkflowTemplate ``qubelet-cutting``: the same DAG, planned on the cluster.

    The batches are not known when the template is written, so ``generate`` writes one JSON list
    of batch ids per backend class and the DAG fans out over them with ``withParam``; an empty
    list skips that class.
    """
    opts = opts or RenderOptions()
    run = run or RunArgs()
    params: list[dict[str, Any]] = [
        {"name": "qubits", "value": str(run.qubits)},
        {"name": "cuts", "value": str(run.cuts)},
        {"name": "shots", "value": str(run.shots)},
        {"name": "seed", "value": str(run.seed)},
        {"name": "policy", "value": run.policy, "enum": ["size", "telemetry"]},
        {"name": "backends", "value": ",".join(run.backends)},
        {"name": "batch-size", "value": str(run.batch_size or 64)},
    ]
    generate_args = [
        "task",
        "generate",
        f"--run-dir={TEMPLATE_RUN_DIR}",
        "--qubits={{workflow.parameters.qubits}}",
        "--cuts={{workflow.parameters.cuts}}",
        "--shots={{workflow.parameters.shots}}",
        "--seed={{workflow.parameters.seed}}",
        "--policy={{workflow.parameters.policy}}",
        "--backends={{workflow.parameters.backends}}",
        "--batch-size={{workflow.parameters.batch-size}}",
        *run.extra,
        "--write-batch-lists",
    ]
    kinds = ("cpu", "gpu", "qpu")
    outputs = {
        "parameters": [
            {"name": f"{kind}-batches", "valueFrom": {"path": f"{TEMPLATE_RUN_DIR}/argo/batches-{kind}.json"}}
            for kind in kinds
        ]
    }
    tasks: list[dict[str, Any]] = [{"name": "generate", "template": "generate"}]
    for kind in kinds:
        tasks.append(
            {
                "name": f"execute-{kind}",
                "template": f"execute-{kind}",
                "depends": "generate",
                "withParam": f"{{{{tasks.generate.outputs.parameters.{kind}-batches}}}}",
                "arguments": {"parameters": [{"name": "batch", "value": "{{item}}"}]},
            }
        )
    tasks.append(
        {
            "name": "reconstruct",
            "template": "reconstruct",
            "depends": " && ".join(f"execute-{k}" for k in kinds),
        }
    )
    templates = [
        {"name": "main", "dag": {"tasks": tasks}},
        _pod_template(opts, "generate", "cpu", "generate", generate_args, outputs=outputs),
        *_execute_templates(opts, kinds, TEMPLATE_RUN_DIR),
        _pod_template(
            opts,
            "reconstruct",
            "cpu",
            "reconstruct",
            ["task", "reconstruct", f"--run-dir={TEMPLATE_RUN_DIR}"],
            outputs={
                "parameters": [
                    {"name": "results", "valueFrom": {"path": f"{TEMPLATE_RUN_DIR}/{RESULTS_FILE}"}}
                ]
            },
        ),
    ]
    spec = _spec_common(opts, None, params)
    spec["templates"] = templates
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "qubelet-cutting", "namespace": opts.namespace, "labels": dict(PART_OF)},
        "spec": spec,
    }
