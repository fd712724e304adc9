"""The monitoring base's Pushgateway is wired end to end: rendered steps push to its Service,
the Service selects its pod, and the ServiceMonitor scrapes it with honorLabels (so the pushed
run/task labels survive). Schema validity of these objects: tests/test_manifests_all.py."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from pipeline.cluster import render

MONITORING = Path(__file__).resolve().parents[1] / "manifests" / "monitoring"


def _objects() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((MONITORING / "pushgateway.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_pushgateway_is_in_the_monitoring_base() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert "pushgateway.yaml" in kustomization["resources"]


def test_rendered_steps_push_to_the_shipped_service() -> None:
    objs = _objects()
    service, deployment, monitor = objs["Service"], objs["Deployment"], objs["ServiceMonitor"]
    url = urllib.parse.urlparse(render.DEFAULT_PUSHGATEWAY)
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    template = render.build_workflow_template()
    for t in template["spec"]["templates"]:
        if "container" in t:
            env = {e["name"]: e.get("value") for e in t["container"].get("env", [])}
            assert env.get("QUBELET_PUSHGATEWAY") == render.DEFAULT_PUSHGATEWAY, t["name"]


def test_push_can_be_turned_off_in_render() -> None:
    template = render.build_workflow_template(render.RenderOptions(pushgateway=""))
    for t in template["spec"]["templates"]:
        if "container" in t:
            assert "QUBELET_PUSHGATEWAY" not in {e["name"] for e in t["container"].get("env", [])}
