"""Make the API server hold exactly the desired ResourceSlices of one publisher.

The loop lists what exists (narrowed by label and field selectors to the slices this
publisher owns), and per pool: leaves it alone when nothing changed, otherwise bumps the pool
generation (so the scheduler never mixes old and new slices of a pool) and creates/replaces
its slices; slices of pools or chunks no longer wanted are deleted. Slice names are
deterministic, so running it twice never duplicates anything.

"Changed" is decided the way the upstream publisher (k8s.io/dynamic-resource-allocation
``resourceslice`` controller, ``DevicesDeepEqual``) decides it: fields the API server fills in
are not differences. A device taint's ``timeAdded`` is defaulted by the server on every write,
and empty lists and maps come back omitted; comparing them would rewrite a tainted or empty
pool, and bump its generation, on every pass. When a pool is rewritten anyway, each taint that
is still there keeps the ``timeAdded`` the server gave it (upstream ``copyTaintTimeAdded``), so
the time a device became unhealthy survives an unrelated change elsewhere in the pool.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from dra_driver.client import ResourceAPI
from dra_driver.slices import to_dict
from qubelet import klog

log = klog.get_logger("qubelet.dra.reconcile")


@dataclass
class ReconcileResult:
    """Names of the slices touched by one pass."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether this pass wrote anything to the API server."""
        return bool(self.created or self.updated or self.deleted)


def _omitempty(value: Any) -> Any:
    """Drop None, empty lists and empty maps from maps: the server omits them (Go ``omitempty``)."""
    if isinstance(value, dict):
        out = {k: _omitempty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_omitempty(v) for v in value]
    return value


def _comparable(s: k8s.V1ResourceSlice) -> Any:
    """What decides "changed": spec without the pool generation and server-filled fields.

    Plus our labels and owner references. Taints are compared by key, value and effect only:
    we never set ``timeAdded``, so any value there is the server's.
    """
    spec = _omitempty(to_dict(s.spec) or {})
    spec.get("pool", {}).pop("generation", None)
    for device in spec.get("devices", []):
        for taint in device.get("taints", []):
            taint.pop("timeAdded", None)
    meta = _omitempty(to_dict(s.metadata) or {})
    return {
        "labels": meta.get("labels", {}),
        "ownerReferences": meta.get("ownerReferences", []),
        "spec": spec,
    }


def _keep_time_added(old: k8s.V1ResourceSlice | None, new: k8s.V1ResourceSlice) -> None:
    """Give each taint of ``new`` the ``timeAdded`` of the same taint (key/value/effect) in ``old``."""
    if old is None or not old.spec.devices:
        return
    before = {d.name: d.taints or [] for d in old.spec.devices}
    for device in new.spec.devices or []:
        for taint in device.taints or []:
            if taint.time_added is not None:
                continue
            for was in before.get(device.name, []):
                if (was.key, was.value, was.effect) == (taint.key, taint.value, taint.effect):
                    taint.time_added = was.time_added
                    break


def _pool(s: k8s.V1ResourceSlice) -> str:
    return str(s.spec.pool.name)


class SliceReconciler:
    """Reconciles the slices selected by ``label_selector``/``field_selector``."""

    def __init__(self, api: ResourceAPI, label_selector: str, field_selector: str = "") -> None:
        self.api = api
        self.label_selector = label_selector
        self.field_selector = field_selector

    def reconcile(self, desired: list[k8s.V1ResourceSlice]) -> ReconcileResult:
        """One pass; API errors propagate (the caller retries on its next tick).

        ``desired`` is freshly built by the caller and is modified in place (pool generation,
        resourceVersion) rather than copied: copying kubernetes models is the slow part.
        """
        result = ReconcileResult()
        existing = {
            s.metadata.name: s
            for s in self.api.list_resource_slices(
                label_selector=self.label_selector, field_selector=self.field_selector
            )
        }
        want = {s.metadata.name: s for s in desired}
        by_pool: dict[str, list[k8s.V1ResourceSlice]] = defaultdict(list)
        for s in desired:
            by_pool[_pool(s)].append(s)
        old_by_pool: dict[str, list[k8s.V1ResourceSlice]] = defaultdict(list)
        for s in existing.values():
            old_by_pool[_pool(s)].append(s)

        for pool, slices in by_pool.items():
            old = {s.metadata.name: s for s in old_by_pool.get(pool, [])}
            same = set(old) == {s.metadata.name for s in slices} and all(
                _comparable(old[s.metadata.name]) == _comparable(s) for s in slices
            )
            if same:
                result.unchanged.extend(s.metadata.name for s in slices)
                continue
            generation = 1 + max((int(s.spec.pool.generation or 0) for s in old.values()), default=0)
            for s in slices:
                body = s
                body.spec.pool.generation = generation
                name = body.metadata.name
                current = existing.get(name)
                if current is None:
                    self.api.create_resource_slice(body)
                    result.created.append(name)
                else:
                    _keep_time_added(current, body)
                    body.metadata.resource_version = current.metadata.resource_version
                    self.api.replace_resource_slice(name, body)
                    result.updated.append(name)
        for name in sorted(set(existing) - set(want)):
            self.api.delete_resource_slice(name)
            result.deleted.append(name)
        if result.changed:
            log.info(
                "reconciled resource slices",
                created=len(result.created),
                updated=len(result.updated),
                deleted=len(result.deleted),
                selector=self.label_selector,
            )
        return result
