"""NodeKubelet: kubelet's DRA manager for one kubelet-less node of the local control plane (a double).

``make cluster-up`` (hack/cluster.py) creates Node objects with no kubelet: the real scheduler
binds pods to them and nothing runs them. This process stands in for the one part of kubelet
qubelet's DRA driver talks to, on the real sockets and the real gRPC contract
(:class:`doubles.kubelet_dra.TestKubeletDRA`):

- it registers the node's ``qubelet dra-driver kubelet-plugin`` through the plugin registry;
- for each pod bound to its node whose claims are all allocated and reserved for it, it calls
  ``NodePrepareResources`` for the claims of the driver, once per claim as kubelet does;
- it resolves what each container would get the way kubelet's DRA manager does
  (``GetResources``): a container's ``resources.claims[]`` entry takes every device of the claim,
  or with ``request`` set only the devices whose ``request_names`` contain it; the CDI device
  IDs are then looked up in the node's CDI directory for their env edits;
- when such a pod is deleted it calls ``NodeUnprepareResources`` for claims no other pod uses
  and then confirms the deletion (grace period 0), as kubelet does once containers stopped.

What it did is written to ``--out-dir/<namespace>_<pod>.json`` (per claim: the prepare response;
per container: its CDI device IDs and env), which the e2e tests read. Pods are never started:
their status is left as the scheduler wrote it.

Usage: ``python tests/doubles/node_kubelet.py --kubeconfig K --node-name N --registry-dir D --out-dir O``
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for `doubles`

from doubles.kubelet_dra import TestKubeletDRA
from qubelet.inventory.names import DRIVER_NAME

#: The key of the scheduler-made claim behind an extended resource (pod.status.extendedResourceClaimStatus).
EXTENDED = "<extended-resource>"


def _log(msg: str, **kv: Any) -> None:
    fields = " ".join(f"{k}={json.dumps(v)}" for k, v in kv.items())
    print(f"I{time.strftime('%m%d %H:%M:%S')} node_kubelet] {msg} {fields}", flush=True)


def cdi_env(cdi_dir: Path, device_ids: list[str]) -> list[str]:
    """The env edits of CDI devices ``kind=name`` found in the JSON specs under ``cdi_dir``."""
    wanted = set(device_ids)
    env: list[str] = []
    for spec_file in sorted(cdi_dir.glob("*.json")):
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError):
            continue
        for device in spec.get("devices") or []:
            if f"{spec.get('kind')}={device.get('name')}" in wanted:
                env.extend((device.get("containerEdits") or {}).get("env") or [])
    return env


def container_devices(pod: dict[str, Any], prepared: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """kubelet's GetResources: container name -> CDI device IDs (``prepared``: pod claim name -> devices)."""
    out: dict[str, list[str]] = {}
    for container in pod["spec"]["containers"]:
        ids: list[str] = []
        for ref in ((container.get("resources") or {}).get("claims")) or []:
            for device in prepared.get(ref["name"], []):
                request = ref.get("request") or ""
                if not request or request in device["request_names"]:
                    ids.extend(device["cdi_device_ids"])
        out[container["name"]] = ids
    return out


class NodeKubelet:
    """Polls the pods bound to one node and prepares/unprepares their claims through the plugin."""

    def __init__(self, api_client: Any, node: str, registry_dir: Path, out_dir: Path, cdi_dir: Path) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.resource = client.ResourceV1Api(api_client)
        self.node = node
        self.out_dir = out_dir
        self.cdi_dir = cdi_dir
        self.kubelet = TestKubeletDRA(registry_dir, timeout=10.0)
        #: claim uid -> (namespace, name, pod uids using it)
        self.claims: dict[str, tuple[str, str, set[str]]] = {}
        #: pod uid -> (namespace, name, claim uids)
        self.pods: dict[str, tuple[str, str, list[str]]] = {}

    def register(self, timeout: float = 60.0) -> None:
        """Register the plugin (waiting for its registration socket, as the plugin watcher does)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.kubelet.register()
                _log("plugin registered", node=self.node, endpoint=self.kubelet.info.endpoint)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise
                _log("waiting for the plugin", node=self.node, err=str(exc)[:200])
                time.sleep(1)

    def _claim_names(self, pod: Any) -> dict[str, str] | None:
        """Pod claim name -> ResourceClaim name, or None while a generated claim has no name yet."""
        statuses = {s.name: s.resource_claim_name for s in (pod.status.resource_claim_statuses or [])}
        out = {}
        for ref in pod.spec.resource_claims or []:
            if ref.resource_claim_name:
                out[ref.name] = ref.resource_claim_name
            elif statuses.get(ref.name):
                out[ref.name] = statuses[ref.name]
            elif ref.name in statuses:  # generated claim not needed (nil name): nothing to prepare
                continue
            else:
                return None
        extended = pod.status.extended_resource_claim_status
        if extended is not None and extended.resource_claim_name:
            # An extended resource served by a DeviceClass (DRAExtendedResource): the scheduler's claim.
            out[EXTENDED] = extended.resource_claim_name
        return out

    def sync(self) -> None:
        """One pass: prepare new pods' claims, unprepare the claims of pods that are gone."""
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}").items
        seen = set()
        for pod in pods:
            uid = pod.metadata.uid
            if pod.metadata.deletion_timestamp is not None:
                self._terminate(pod)
                continue
            seen.add(uid)
            extended = pod.status.extended_resource_claim_status if pod.status else None
            if uid in self.pods or not (pod.spec.resource_claims or extended):
                continue
            self._admit(pod)
        for uid in list(self.pods):
            if uid not in seen:
                self._remove(uid)

    def _terminate(self, pod: Any) -> None:
        """A pod being deleted: unprepare its claims, then confirm the deletion as kubelet does.

        Without a kubelet a deleted pod would stay Terminating for good (the API server waits
        for the node to confirm), holding its claims and its Kueue quota.
        """
        from kubernetes import client

        if pod.metadata.uid in self.pods:
            self._remove(pod.metadata.uid)
        try:
            self.core.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=pod.metadata.uid)
                ),
            )
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _admit(self, pod: Any) -> None:
        ns, name, uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        names = self._claim_names(pod)
        if names is None:
            return
        claims = {}
        for pod_claim, claim_name in names.items():
            claim = self.resource.read_namespaced_resource_claim(claim_name, ns)
            allocation = claim.status.allocation if claim.status else None
            reserved = {r.uid for r in (claim.status.reserved_for or [])} if claim.status else set()
            if allocation is None or uid not in reserved:
                return  # kubelet waits until the scheduler has allocated and reserved every claim
            claims[pod_claim] = claim
        to_prepare = [
            (ns, c.metadata.uid, c.metadata.name)
            for c in claims.values()
            if any(r.driver == DRIVER_NAME for r in c.status.allocation.devices.results or [])
        ]
        record: dict[str, Any] = {"pod": f"{ns}/{name}", "uid": uid, "node": self.node, "claims": {}}
        prepared: dict[str, list[dict[str, Any]]] = {}
        response = self.kubelet.prepare(to_prepare) if to_prepare else {}
        for pod_claim, claim in claims.items():
            result = response.get(claim.metadata.uid)
            devices = [
                {
                    "request_names": list(d.request_names),
                    "pool_name": d.pool_name,
                    "device_name": d.device_name,
                    "cdi_device_ids": list(d.cdi_device_ids),
                }
                for d in (result.devices if result is not None else [])
            ]
            prepared[pod_claim] = devices
            record["claims"][pod_claim] = {
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
                "error": result.error if result is not None else "",
                "devices": devices,
            }
            entry = self.claims.setdefault(claim.metadata.uid, (ns, claim.metadata.name, set()))
            entry[2].add(uid)
        record["containers"] = self._containers(pod, prepared)
        self.pods[uid] = (ns, name, [c.metadata.uid for c in claims.values()])
        (self.out_dir / f"{ns}_{name}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        errors = {k: v["error"] for k, v in record["claims"].items() if v["error"]}
        _log("prepared", pod=f"{ns}/{name}", claims=sorted(names.values()), errors=errors)

    def _containers(self, pod: Any, prepared: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        extended = pod.status.extended_resource_claim_status
        mappings = (extended.request_mappings or []) if extended is not None else []
        spec = {
            "spec": {
                "containers": [
                    {
                        "name": c.name,
                        "resources": {
                            "claims": [
                                {"name": r.name, "request": getattr(r, "request", None) or ""}
                                for r in ((c.resources.claims if c.resources else None) or [])
                            ]
                            + [
                                {"name": EXTENDED, "request": m.request_name}
                                for m in mappings
                                if m.container_name == c.name
                            ]
                        },
                    }
                    for c in pod.spec.containers
                ]
            }
        }
        return {
            cname: {"cdi_device_ids": ids, "env": cdi_env(self.cdi_dir, ids)}
            for cname, ids in container_devices(spec, prepared).items()
        }

    def _remove(self, pod_uid: str) -> None:
        ns, name, claim_uids = self.pods.pop(pod_uid)
        done = []
        for claim_uid in claim_uids:
            cns, cname, users = self.claims[claim_uid]
            users.discard(pod_uid)
            if not users:
                del self.claims[claim_uid]
                done.append((cns, claim_uid, cname))
        if done:
            self.kubelet.unprepare(done)
        (self.out_dir / f"{ns}_{name}.json").unlink(missing_ok=True)
        _log("unprepared", pod=f"{ns}/{name}", claims=[c[2] for c in done])


def main(argv: list[str] | None = None) -> int:
    """Register, then sync every ``--interval`` seconds until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--registry-dir", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--cdi-dir", type=Path, default=None, help="default: <registry-dir>/../cdi")
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    from qubelet.kube import load_kube_client

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cdi_dir = args.cdi_dir or args.registry_dir.parent / "cdi"
    node = NodeKubelet(
        load_kube_client(args.kubeconfig), args.node_name, args.registry_dir, args.out_dir, cdi_dir
    )
    node.register()
    while not stop.is_set():
        try:
            node.sync()
        except Exception as exc:  # a failed pass is retried on the next tick, like kubelet's sync loop
            _log("sync failed", err=str(exc)[:300])
        stop.wait(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
