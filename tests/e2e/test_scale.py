"""Scenario 6 (issue 19): a rendered run of more than 10,000 subexperiments on the real API server.

``qubelet render --cuts 5`` plans 2 x 6^5 = 15,552 subexperiments. The API server must accept
the Workflow (validated against Argo's CRD schema, below its request-size and etcd object
limits) and every claim template it refers to, and the run stays a bounded number of pods:
one per batch of at most ``--batch-size`` subexperiments, never one per subexperiment.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from qubelet.cli import main

SUBEXPERIMENTS = 2 * 6**5  # two partitions, 6 QPD terms per cut CNOT, 5 cuts
BATCH = 64
#: etcd's default object size limit (--max-request-bytes 1.5 MiB) is the binding one.
ETCD_LIMIT = 1_572_864


def test_render_of_15552_subexperiments_is_accepted_with_bounded_pods(
    e2e_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "big.yaml"
    argv = ["render", "--qubits=10", "--cuts=5", "--policy=size"]
    assert main([*argv, "-o", str(out)]) == 2  # the default guard names the count
    assert f"{SUBEXPERIMENTS} subexperiments" in capsys.readouterr().err
    argv.append("--max-subexperiments=20000")
    assert main([*argv, f"--batch-size={BATCH}", "-o", str(out)]) == 0
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    workflow = docs[-1]
    templates = [d for d in docs if d["kind"] == "ResourceClaimTemplate"]
    assert workflow["kind"] == "Workflow" and templates
    e2e_cluster.apply(*templates)
    created = json.loads(e2e_cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(workflow)))
    try:
        size = len(json.dumps(created))
        assert size < ETCD_LIMIT, size
        tasks = [
            t for t in created["spec"]["templates"][0]["dag"]["tasks"] if t["name"].startswith("execute-")
        ]
        generate = next(t for t in created["spec"]["templates"] if t["name"] == "generate")
        batches = next(a for a in generate["container"]["args"] if a.startswith("--expect-batches="))
        assert len(tasks) == len(batches.split("=", 1)[1].split(","))
        # one pod per task, each at most BATCH subexperiments: bounded by the batching, not by N
        assert len(tasks) <= math.ceil(SUBEXPERIMENTS / BATCH) + 3, len(tasks)
        assert any(t["template"].startswith("execute-qpu") for t in tasks)
        for rct in templates:
            e2e_cluster.kubectl(
                "get", "resourceclaimtemplate", rct["metadata"]["name"], "-n", rct["metadata"]["namespace"]
            )
    finally:
        e2e_cluster.kubectl(
            "delete", "workflow", created["metadata"]["name"], "-n", created["metadata"]["namespace"]
        )
