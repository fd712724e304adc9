"""Vendor trimmed CRD schemas for offline validation of qubelet's manifests.

Why: the tests validate Argo, Kueue and prometheus-operator objects without a cluster, against the
same openAPIV3Schema an API server would use. The upstream CRDs are megabytes of prose; this keeps
each served version's schema with descriptions removed and ``status`` collapsed (we never write
status), and records the upstream commit so a refresh is reproducible:

    python manifests/crds/vendor_crds.py MIRROR_DIR [kubernetes-sigs+kueue ...]
    # MIRROR_DIR holds <owner>+<repo>/repo git dirs; naming mirrors refreshes only those
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
#: Kinds whose ``status`` schema is kept: the admission-check controller writes their status.
KEEP_STATUS = {"Workload", "AdmissionCheck"}

#: (mirror dir name, path in the repo, versions to keep)
SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("argoproj+argo-workflows", "manifests/base/crds/full/argoproj.io_workflows.yaml", ("v1alpha1",)),
    ("argoproj+argo-workflows", "manifests/base/crds/full/argoproj.io_workflowtemplates.yaml", ("v1alpha1",)),
    (
        "kubernetes-sigs+kueue",
        "config/components/crd/bases/kueue.x-k8s.io_resourceflavors.yaml",
        ("v1beta2",),
    ),
    ("kubernetes-sigs+kueue", "config/components/crd/bases/kueue.x-k8s.io_clusterqueues.yaml", ("v1beta2",)),
    ("kubernetes-sigs+kueue", "config/components/crd/bases/kueue.x-k8s.io_localqueues.yaml", ("v1beta2",)),
    ("kubernetes-sigs+kueue", "config/components/crd/bases/kueue.x-k8s.io_workloads.yaml", ("v1beta2",)),
    (
        "kubernetes-sigs+kueue",
        "config/components/crd/bases/kueue.x-k8s.io_admissionchecks.yaml",
        ("v1beta2",),
    ),
    (
        "prometheus-operator+prometheus-operator",
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        ("v1",),
    ),
    (
        "prometheus-operator+prometheus-operator",
        "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
        ("v1",),
    ),
    (
        "prometheus-operator+prometheus-operator",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ("v1",),
    ),
)


def _strip(node: Any) -> Any:
    """Drop descriptions recursively (but keep a property literally named ``description``)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: _strip(sub) for name, sub in value.items()}
            else:
                out[key] = _strip(value)
        return out
    if isinstance(node, list):
        return [_strip(item) for item in node]
    return node


def vendor(mirror_root: Path, only: set[str] | None = None) -> None:
    """Read each CRD from its mirrored git dir and write ``<group>_<version>_<Kind>.json`` here.

    ``only`` names the mirrors to read (default: all), so one upstream can be refreshed alone.
    """
    for mirror, path, versions in SOURCES:
        if only and mirror not in only:
            continue
        git_dir = mirror_root / mirror / "repo"
        commit = subprocess.run(
            ["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        text = subprocess.run(
            ["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        crd = yaml.safe_load(text)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["name"] not in versions:
                continue
            schema = _strip(version["schema"]["openAPIV3Schema"])
            if "status" in schema.get("properties", {}) and kind not in KEEP_STATUS:
                schema["properties"]["status"] = {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                }
            doc = {
                "source": f"https://github.com/{mirror.replace('+', '/')}/blob/{commit}/{path}",
                "group": group,
                "version": version["name"],
                "kind": kind,
                "openAPIV3Schema": schema,
            }
            out = HERE / f"{group}_{version['name']}_{kind}.json"
            out.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")
            print(f"{out.name}: {out.stat().st_size} bytes")


def main(argv: list[str]) -> int:
    """Vendor from the mirror directory given as the one required argument; exit 2 without it."""
    if not argv or not Path(argv[0]).is_dir():
        print(
            "usage: vendor_crds.py MIRROR_DIR [MIRROR...]  (a directory of <owner>+<repo>/repo git dirs)",
            file=sys.stderr,
        )
        return 2
    vendor(Path(argv[0]), set(argv[1:]) or None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
