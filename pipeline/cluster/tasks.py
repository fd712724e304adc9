"""Container entry points of the Argo steps: ``qubelet task generate|execute|reconstruct``.

Each step is one call into the same stages the local executor runs (``pipeline.stages``), on a
run directory on the shared volume, so a cluster run and ``qubelet run`` read and write the same
content-addressed artifacts (QPY subexperiments, JSON/NPZ results, no pickle) and a retried or
re-submitted step resumes from what is stored.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.push import GENERATE_TASK, RECONSTRUCT_TASK, Pusher
from qubelet import klog
from qubelet.errors import QubeletError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = klog.get_logger("qubelet.cluster.tasks")

#: Where ``generate --write-batch-lists`` puts the per-class batch id lists the
#: WorkflowTemplate fans out over (``withParam``).
BATCH_LIST_DIR = "argo"
KINDS = ("cpu", "gpu", "qpu")


class TaskError(QubeletError):
    """A step cannot run as asked; the message is one line naming what and where."""


def batch_lists(batches: Sequence[Any]) -> dict[str, list[str]]:
    """Batch ids per backend class, in plan order (every class present, maybe empty)."""
    out: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for batch in batches:
        if batch.kind not in out:
            raise TaskError(f"batch {batch.id}: unknown backend kind {batch.kind!r}")
        out[batch.kind].append(batch.id)
    return out


def write_batch_lists(run_dir: Path, batches: Sequence[Any]) -> dict[str, Path]:
    """Write ``<run_dir>/argo/batches-<kind>.json`` (JSON lists Argo's ``withParam`` accepts)."""
    target = run_dir / BATCH_LIST_DIR
    target.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, ids in batch_lists(batches).items():
        path = target / f"batches-{kind}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(ids))
        tmp.replace(path)
        paths[kind] = path
    return paths


def generate(
    config: Any,
    expect_batches: Sequence[str] | None = None,
    write_lists: bool = False,
    pusher: Pusher | None = None,
    *,
    parameters: Path | None = None,
    parameter_set: int | None = None,
    inventory_qpus: Sequence[Any] | None = None,
) -> Any:
    """Plan the run into ``run_dir`` and check it against the batches the Workflow was rendered for.

    Why the check: a rendered Workflow has one task per batch id. If planning on the cluster gave
    different batches (another policy model, other telemetry) some would never run; fail the
    step with the difference instead. With a ``pusher``, every planned batch gets its waiting
    group on the Pushgateway (:meth:`pipeline.push.Pusher.push_waiting`).
    """
    from pipeline import stages
    from pipeline.runlock import run_dir_lock

    run_dir = Path(config.run_dir)
    template, values = _sweep_point(config, parameters, parameter_set)
    # Plan for the cluster's backend classes, not for whatever this pod can probe. Exclusive:
    # the manifest check-and-write must not race another generate or a local run.
    with run_dir_lock(run_dir):
        plan = stages.generate(
            config,
            probe_backends=False,
            template=template,
            parameter_values=values,
            states=stages.nominal_backend_states(config, inventory_qpus),
        )
    ids = [b.id for b in plan.batches]
    if expect_batches is not None:
        # A resumed run plans only what has no result yet, so fewer batches is fine; a batch the
        # Workflow has no task for would never run.
        unexpected = sorted(set(ids) - set(expect_batches))
        if unexpected:
            raise TaskError(
                f"{run_dir}: planned batches {unexpected[:5]} have no task in the rendered workflow "
                f"(it expects {len(expect_batches)} batches); re-render the workflow"
            )
    if write_lists:
        write_batch_lists(run_dir, plan.batches)
    if pusher is not None and pusher.enabled:
        pusher.push_waiting(plan.run_id, plan.batches)
        pusher.push_process(plan.run_id, GENERATE_TASK)
    log.info("generated", run_dir=str(run_dir), run_id=plan.run_id, batches=len(ids))
    return plan


def _sweep_point(
    config: Any, parameters: Path | None, index: int | None
) -> tuple[Any, dict[str, float] | None]:
    """(cut template, bound values) of one set of a sweep, or (None, None) for a plain run."""
    if parameters is None and index is None:
        return None, None
    if parameters is None or index is None:
        raise TaskError("--parameters and --parameter-set go together")
    if config.circuit_file is None:
        raise TaskError("--parameters needs --circuit (a circuit with unbound parameters)")
    from pipeline import api
    from pipeline.circuits import load_circuit_file

    circuit = load_circuit_file(Path(config.circuit_file))
    rows = api.load_parameter_sets(parameters)
    if not 0 <= index < len(rows):
        raise TaskError(f"--parameter-set {index}: {parameters} has {len(rows)} sets (0..{len(rows) - 1})")
    return api.cut_template(config, circuit), api.parameter_dict(circuit, rows[index])


def execute(run_dir: Path, batch_id: str, missing_ok: bool = False, pusher: Pusher | None = None) -> bool:
    """Run one batch of a planned run on its backend (skipping keys already done).

    ``missing_ok``: a batch absent from plan.json is a no-op instead of an error. Rendered
    workflows set it because re-submitting a run resumes it: generate then plans only the
    subexperiments without results, every one of them in some batch of the new plan, so a
    rendered batch that is no longer planned has nothing left to do. Returns whether it ran.

    With a ``pusher``, the batch's group is pushed when it starts (depth 1) and when it ends
    (depth 0, final counts), whatever the outcome.
    """
    plan = _load_plan(run_dir)
    known = [b.id for b in plan.batches]
    if batch_id not in known:
        if missing_ok:
            log.info("batch not in plan, nothing to do", run_dir=str(run_dir), batch=batch_id)
            return False
        raise TaskError(f"{run_dir}: no batch {batch_id!r} in plan.json ({len(known)} batches)")
    from pipeline import metrics

    batch = plan.batch(batch_id)
    metrics.DEFAULT.init_backend(batch.backend, batch.kind)
    metrics.QUEUE_DEPTH.labels(batch.backend).set(1)
    if pusher is not None and pusher.enabled:
        pusher.push_process(plan.run_id, batch.id)
    try:
        _execute_and_count(run_dir, batch)
    finally:
        metrics.QUEUE_DEPTH.labels(batch.backend).set(0)
        if pusher is not None and pusher.enabled:
            pusher.push_process(plan.run_id, batch.id)
    return True


def _execute_and_count(run_dir: Path, batch: Any) -> None:
    """Run ``batch`` and count it in the pipeline metrics (failures too, then re-raise)."""
    from pipeline import metrics, stages
    from pipeline.runlock import run_dir_lock
    from pipeline.termination import terminate_on_sigterm

    # Queue wait on a cluster: from the plan being written to this pod starting, i.e. Kueue
    # admission plus scheduling plus image pull.
    queued_at = (run_dir / "plan.json").stat().st_mtime
    metrics.QUEUE_WAIT.labels(batch.backend).observe(max(0.0, time.time() - queued_at))
    try:
        # Shared: the workflow runs many batches of one run at once; a local run excludes them.
        # SIGTERM (the pod being stopped) cancels the batch's QPU job on its server first.
        with run_dir_lock(run_dir, shared=True), terminate_on_sigterm():
            outcome = stages.execute_batch(run_dir, batch, queued_at=queued_at)
    except Exception:
        metrics.TASKS.labels(batch.backend, "failed").inc(len(batch.keys))
        metrics.BACKEND_UP.labels(batch.backend).set(0)
        raise
    executed = len(outcome.executed)
    metrics.record_batch(
        outcome.backend, batch.kind, outcome.finished - outcome.started, executed, len(outcome.skipped)
    )
    log.info(
        "executed",
        run_dir=str(run_dir),
        batch=batch.id,
        backend=outcome.backend,
        executed=executed,
        skipped=len(outcome.skipped),
        seconds=round(outcome.finished - outcome.started, 3),
    )


def reconstruct(run_dir: Path, pusher: Pusher | None = None) -> dict[str, Any]:
    """Combine all batch results into ``summary.json`` and return it.

    Counts the run's outcome and wall time (plan written to reconstruct finished) and, with a
    ``pusher``, pushes them as the run's ``reconstruct`` group.
    """
    from pipeline import metrics, stages
    from pipeline.runlock import run_dir_lock

    plan = _load_plan(run_dir)
    metrics.DEFAULT.init_run()
    outcome = "failed"
    try:
        with run_dir_lock(run_dir, shared=True):
            summary: dict[str, Any] = stages.reconstruct(run_dir)
        outcome = "succeeded"
    finally:
        metrics.RUNS.labels(outcome).inc()
        metrics.RUN_DURATION.set(max(0.0, time.time() - (run_dir / "plan.json").stat().st_mtime))
        if pusher is not None and pusher.enabled:
            pusher.push_process(plan.run_id, RECONSTRUCT_TASK)
    log.info("reconstructed", run_dir=str(run_dir))
    write_results(run_dir, summary)
    return summary


#: Keep the published results well inside what a Workflow's status can carry; a larger timeline
#: stays on the PVC only.
MAX_RESULTS_BYTES = 512 * 1024


def write_results(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``argo/results.json``: the summary, the results table and the timeline (base64 PNG).

    Why one file: Argo's executor reports it as the step's output parameter and the controller
    copies it into the Workflow's status, where ``qubelet runs fetch`` reads it; no one needs
    access to the PVC. A sweep's set says which ``sets/NNNN`` it is.
    """
    import base64

    from pipeline import report
    from pipeline.cluster.render import RESULTS_FILE

    timeline = report.plot_timeline(
        report.load_events(run_dir),
        run_dir / "timeline.png",
        title=f"{summary.get('qubits')} qubits, {summary.get('cuts')} cuts, policy {summary.get('policy')}",
        backends=summary.get("backend_names", ()),
    )
    data: dict[str, Any] = {
        "set_dir": f"sets/{run_dir.name}" if run_dir.parent.name == "sets" else ".",
        "summary": summary,
        "table": report.results_table(summary) + "\n\n" + report.backends_table(summary) + "\n",
        "timeline_png": base64.b64encode(timeline.read_bytes()).decode(),
    }
    text = json.dumps(data, sort_keys=True)
    if len(text) > MAX_RESULTS_BYTES:
        data["timeline_png"] = ""
        data["timeline_note"] = f"timeline too large to publish: {timeline}"
        text = json.dumps(data, sort_keys=True)
    path = run_dir / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _load_plan(run_dir: Path) -> Any:
    from pipeline import stages

    if not (run_dir / "plan.json").is_file():
        raise TaskError(f"{run_dir}: no plan.json (run `qubelet task generate` first)")
    return stages.load_plan(run_dir)


@contextmanager
def serving_metrics(
    port: int, linger_seconds: float = 0.0, registry: CollectorRegistry | None = None
) -> Iterator[None]:
    """Serve ``registry`` (default: the process registry) while a step runs, and a little after.

    Why linger: step pods are short-lived and scraped every few seconds; keeping the endpoint up
    for one more scrape interval lets Prometheus see the final counter values.
    """
    from qubelet.daemon import serve_metrics
    from qubelet.errors import UsageError

    try:
        server = serve_metrics(port, registry=registry)
    except UsageError as exc:
        # Metrics are best effort: a busy port must not fail the step.
        log.warning("metrics not served", port=port, err=str(exc))
        server = None
    if server is None:
        yield
        return
    try:
        yield
    finally:
        if linger_seconds > 0:
            time.sleep(min(linger_seconds, 60.0))
        server.shutdown()


@contextmanager
def step_metrics(port: int, linger_seconds: float, pusher: Pusher) -> Iterator[None]:
    """Get a step's metrics out: pushed when a Pushgateway is set, else served for a scrape.

    With a gateway, ``/metrics`` serves only the process's own metrics while the step runs: the
    target stays up, and the pipeline's series live in one place, the pushed group, never also
    in a scrape of the pod (which would count them twice). When a push fails, the full registry
    is served for ``linger_seconds`` after the step instead: the fallback.
    """
    if not pusher.enabled:
        with serving_metrics(port, linger_seconds):
            yield
        return
    try:
        with serving_metrics(port, 0.0, registry=_process_only_registry()):
            yield
    finally:
        if not pusher.delivered:
            log.warning(
                "metrics not pushed, serving them for a last scrape", port=port, linger=linger_seconds
            )
            with serving_metrics(port, linger_seconds):
                pass


def _process_only_registry() -> CollectorRegistry:
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def env_number(name: str) -> float:
    """A numeric setting from the environment (rendered step pods set them), 0 when unset or bad."""
    try:
        return float(os.environ.get(name, "0"))
    except ValueError:
        return 0.0
