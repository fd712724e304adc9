"""The controller loop: for each Workload whose ``qubelet`` check is Pending, write a verdict.

Restart-safe by construction: it keeps no state of its own. Each pass reads the Workloads and
one telemetry snapshot, decides (:func:`admission_check.decide.decide`) and writes each verdict
with the Workload's ``resourceVersion``; a controller that dies between reading and writing
leaves the check Pending for the next leader, and a stale writer (an old leader that wakes up)
gets a Conflict instead of overwriting a newer verdict. Only the holder of the Lease writes
(client-go leader-election rules, :class:`qubelet.leader.LeaderElector`).
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import Any

from admission_check.decide import Verdict, decide
from admission_check.kueue import KueueAPI
from admission_check.metrics import AdmissionMetrics
from admission_check.names import (
    CONTROLLER_NAME,
    LEASE_NAME,
    LEASE_NAMESPACE,
    MIN_FIDELITY_ANNOTATION,
    QUEUE_PREFIX,
)
from admission_check.telemetry import QPUTelemetry, TelemetryError
from qubelet import klog
from qubelet.errors import ApiError, Conflict
from qubelet.leader import LeaderElector, LeaseAPI

log = klog.get_logger("qubelet.admission")

Snapshot = dict[str, QPUTelemetry]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floor(annotations: dict[str, Any], where: str) -> float | None:
    raw = annotations.get(MIN_FIDELITY_ANNOTATION)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        log.warning("bad fidelity annotation ignored", object=where, value=str(raw))
        return None
    return value if 0.0 < value <= 1.0 else None


def owner_pods(workload: dict[str, Any]) -> list[str]:
    """Names of the Pods owning ``workload`` (Kueue's pod integration; a pod group owns several)."""
    return [
        str(ref["name"])
        for ref in (workload.get("metadata") or {}).get("ownerReferences") or []
        if ref.get("kind") == "Pod" and ref.get("apiVersion") == "v1" and ref.get("name")
    ]


def min_fidelity(workload: dict[str, Any], pods: Sequence[dict[str, Any]] = ()) -> float | None:
    """The strictest fidelity floor of the Workload's pod-set templates and its owner ``pods``.

    Pod-set templates carry metadata for Jobs; for plain pods Kueue copies only the spec, so the
    floor lives on the owner pods' annotations (None: no floor anywhere).
    """
    floors = []
    for pod_set in (workload.get("spec") or {}).get("podSets") or []:
        annotations = ((pod_set.get("template") or {}).get("metadata") or {}).get("annotations") or {}
        floors.append(_floor(annotations, _key(workload)))
    for pod in pods:
        floors.append(_floor((pod.get("metadata") or {}).get("annotations") or {}, _key(pod)))
    found = [f for f in floors if f is not None]
    return max(found) if found else None


def _key(workload: dict[str, Any]) -> str:
    meta = workload.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _finished(workload: dict[str, Any]) -> bool:
    conditions = (workload.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Finished",) and c.get("status") == "True" for c in conditions)


class AdmissionCheckController:
    """Serves every AdmissionCheck whose ``spec.controllerName`` is :data:`CONTROLLER_NAME`."""

    def __init__(
        self,
        kueue: KueueAPI,
        leases: LeaseAPI,
        telemetry: Callable[[], Snapshot],
        identity: str,
        *,
        max_wait_seconds: float = 600.0,
        reject_unmeetable: bool = False,
        lease_namespace: str = LEASE_NAMESPACE,
        lease_duration_seconds: int = 15,
        metrics: AdmissionMetrics | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.kueue = kueue
        self.telemetry = telemetry
        self.max_wait_seconds = max_wait_seconds
        self.reject_unmeetable = reject_unmeetable
        self.metrics = metrics or AdmissionMetrics()
        self.now = now
        self.elector = LeaderElector(
            leases,
            identity,
            namespace=lease_namespace,
            name=LEASE_NAME,
            lease_duration_seconds=lease_duration_seconds,
            now=now,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ---------------------------------------------------------------------------
    def run_once(self) -> dict[str, str] | None:
        """Renew the lease; as leader, decide every Pending check. Returns ``{workload: state}``.

        None when not the leader. API errors of single writes are logged and left for the next
        pass; a failure to list propagates (the loop retries).
        """
        leader = self.elector.try_acquire_or_renew()
        self.metrics.is_leader.set(1 if leader else 0)
        if not leader:
            return None
        checks = self._our_checks()
        workloads = self.kueue.list_workloads()
        self._export_queue_depth(workloads)
        pending = [
            (wl, entry)
            for wl in workloads
            for entry in (wl.get("status") or {}).get("admissionChecks") or []
            if entry.get("name") in checks and entry.get("state") == "Pending"
        ]
        self.metrics.pending.set(len(pending))
        if not pending:
            return {}
        snapshot, error = self._snapshot()
        out: dict[str, str] = {}
        for workload, entry in pending:
            pods = self._owner_pods(workload)
            if pods is None:
                continue  # the floor is unknown: leave the check Pending for the next pass
            verdict = decide(
                snapshot,
                min_fidelity(workload, pods),
                max_wait_seconds=self.max_wait_seconds,
                reject_unmeetable=self.reject_unmeetable,
                telemetry_error=error,
            )
            if self._write(workload, str(entry["name"]), verdict):
                out[_key(workload)] = verdict.state
        return out

    def _owner_pods(self, workload: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The Workload's owner Pods, read live; None when one cannot be read (no verdict yet)."""
        namespace = str((workload.get("metadata") or {}).get("namespace", ""))
        pods = []
        for name in owner_pods(workload):
            try:
                pods.append(self.kueue.read_pod(namespace, name))
            except ApiError as exc:
                log.warning(
                    "owner pod unreadable, check left Pending", workload=_key(workload), error=str(exc)
                )
                return None
        return pods

    def _snapshot(self) -> tuple[Snapshot | None, str]:
        try:
            return self.telemetry(), ""
        except TelemetryError as exc:
            self.metrics.telemetry_errors.inc()
            log.warning("telemetry unavailable, checks will retry", err=str(exc))
            return None, str(exc)

    def _our_checks(self) -> set[str]:
        """Names of our AdmissionChecks; marks each Active (Kueue only uses active checks)."""
        names = set()
        for check in self.kueue.list_admission_checks():
            if (check.get("spec") or {}).get("controllerName") != CONTROLLER_NAME:
                continue
            name = str(check["metadata"]["name"])
            names.add(name)
            conditions = (check.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Active" and c.get("status") == "True" for c in conditions):
                continue
            body = copy.deepcopy(check)
            body.setdefault("status", {})["conditions"] = [
                c for c in conditions if c.get("type") != "Active"
            ] + [
                {
                    "type": "Active",
                    "status": "True",
                    "reason": "Active",
                    "message": "served by qubelet admission-check",
                    "lastTransitionTime": _rfc3339(self.now()),
                    "observedGeneration": int(check["metadata"].get("generation") or 1),
                }
            ]
            try:
                self.kueue.replace_admission_check_status(name, body)
            except ApiError as exc:
                log.warning("cannot mark admission check active", check=name, err=str(exc))
        return names

    def _write(self, workload: dict[str, Any], check: str, verdict: Verdict) -> bool:
        body = copy.deepcopy(workload)
        for entry in body["status"]["admissionChecks"]:
            if entry.get("name") != check:
                continue
            entry["state"] = verdict.state
            entry["message"] = verdict.message[:32768]
            entry["lastTransitionTime"] = _rfc3339(self.now())
            if verdict.requeue_after_seconds is not None:
                entry["requeueAfterSeconds"] = verdict.requeue_after_seconds
            else:
                entry.pop("requeueAfterSeconds", None)
        meta = workload["metadata"]
        try:
            self.kueue.replace_workload_status(meta["namespace"], meta["name"], body)
        except Conflict:
            log.info("workload changed while deciding, next pass decides again", workload=_key(workload))
            return False
        except ApiError as exc:
            log.warning("cannot write admission check verdict", workload=_key(workload), err=str(exc))
            return False
        self.metrics.decisions.labels(state=verdict.state).inc()
        log.info(
            "admission check decided",
            workload=_key(workload),
            check=check,
            state=verdict.state,
            why=verdict.message,
        )
        return True

    def _export_queue_depth(self, workloads: list[dict[str, Any]]) -> None:
        depth: dict[str, int] = {}
        for wl in workloads:
            queue = str((wl.get("spec") or {}).get("queueName") or "")
            if not queue.startswith(QUEUE_PREFIX) or _finished(wl):
                continue
            kind = queue.removeprefix(QUEUE_PREFIX)
            depth[kind] = depth.get(kind, 0) + 1
        for kind in ("cpu", "gpu", "qpu"):
            self.metrics.queue_depth.labels(backend=kind).set(depth.pop(kind, 0))
        for kind, count in depth.items():
            self.metrics.queue_depth.labels(backend=kind).set(count)

    # -- the loop -----------------------------------------------------------------------------
    def start(self, resync_seconds: float) -> None:
        """Run passes every ``resync_seconds`` on a thread until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self._run, args=(resync_seconds,), name="admission-check", daemon=True
        )
        self._thread.start()

    def _run(self, resync_seconds: float) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the daemon keeps running; the next pass retries
                log.error("admission check pass failed", err=str(exc))
            self._stop.wait(resync_seconds)

    def stop(self) -> None:
        """Stop the loop (bounded wait)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def liveness_problem(self) -> str:
        """Empty while the loop thread runs."""
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            return "admission check loop stopped"
        return ""

    def readiness_problem(self) -> str:
        """Empty once a lease attempt reached the API server."""
        error = self.elector.last_error
        return "no leader election attempt yet" if error is None else error
