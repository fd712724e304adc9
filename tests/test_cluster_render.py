"""The rendered Argo Workflow for the paper's run (N=10, K=3: 6^3 = 216 coefficient terms).

It must be schema-valid Argo, never pin a node, put a ResourceClaim on every QPU pod and on no
other, carry queue labels, requests, retries and the run volume on every step, and keep the
token Secret to QPU steps. Planned once per module (cutting takes seconds).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemas
import yaml

from pipeline.cluster import render, tasks
from pipeline.cluster import resources as res
from qubelet.cli import main
from qubelet.inventory.names import RESOURCE_NAME

pytestmark = pytest.mark.timeout(180)

PAPER_RUN: dict[str, Any] = {
    "qubits": 10,
    "cuts": 3,
    "shots": 256,
    "seed": 7,
    "policy": "size",
    "backends": ("cpu", "gpu", "qpu"),
}


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """Every (path, key, value) in a nested dict/list, including JSON inside podSpecPatch."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            if key == "podSpecPatch" and isinstance(value, str):
                yield from _walk(json.loads(value), f"{path}.podSpecPatch")
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]")


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory: pytest.TempPathFactory) -> Any:
    run_dir = tmp_path_factory.mktemp("paper") / "run"
    from pipeline.config import RunConfig

    return tasks.generate(RunConfig(run_dir=run_dir, **PAPER_RUN)), run_dir


@pytest.fixture(scope="module")
def paper_batches(paper_plan: Any) -> list[Any]:
    """The plan's batches plus one CPU and one GPU batch, so every template kind is rendered
    (this machine has no GPU, so the real plan cannot contain a GPU batch)."""
    plan, _ = paper_plan
    extra = [
        render_batch("cpu-extra-000", "cpu", None),
        render_batch("gpu-extra-000", "gpu", None),
    ]
    return [*plan.batches, *extra]


def render_batch(batch_id: str, kind: str, min_qubits: int | None) -> Any:
    from pipeline.planning import Batch

    return Batch(id=batch_id, backend=kind, kind=kind, keys=[], min_qubits=min_qubits)  # type: ignore[arg-type]


def _pod_templates(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in workflow["spec"]["templates"] if "container" in t]


def test_paper_run_plans_every_subexperiment(paper_plan: Any) -> None:
    from pipeline import stages

    plan, run_dir = paper_plan
    manifest = stages.load_manifest(run_dir)
    assert len(manifest.cut.coefficients) == 216
    planned = [k for b in plan.batches for k in b.keys]
    assert sorted(planned) == sorted(manifest.cut.unique_keys()), "a subexperiment is in no batch"
    assert len(planned) == len(set(planned))


@pytest.mark.parametrize(
    "opts",
    [
        render.RenderOptions(),
        render.RenderOptions(argo_compat="podspecpatch"),
        render.RenderOptions(qpu_request="extended-resource"),
        render.RenderOptions(claim_constraints=True, claim_choices="off"),
        render.RenderOptions(claim_choices="single"),
    ],
    ids=["claim-typed", "claim-podspecpatch", "extended-resource", "claim-constraints", "claim-single"],
)
def test_paper_workflow_is_valid_argo(paper_plan: Any, paper_batches: list[Any], opts: Any) -> None:
    plan, _ = paper_plan
    workflow = render.build_workflow(render.RunArgs(**PAPER_RUN), plan.run_id, paper_batches, opts)
    schemas.validate(workflow)
    # And it survives YAML, as `qubelet render -o` writes it.
    schemas.validate(yaml.safe_load(yaml.safe_dump(workflow)))
    for rct in render.claim_templates(paper_batches, opts):
        schemas.validate(rct)

    assert not [p for p, key, _ in _walk(workflow) if key == "nodeSelector"], "nodeSelector rendered"
    dag = next(t for t in workflow["spec"]["templates"] if t["name"] == "main")["dag"]["tasks"]
    by_name = {t["name"]: t for t in dag}
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    executes = [t for t in dag if t["name"].startswith("execute-")]
    assert len(executes) == len(paper_batches)
    assert all(t["dependencies"] == ["generate"] for t in executes)
    assert sorted(by_name["reconstruct"]["dependencies"]) == sorted(t["name"] for t in executes)
    for task, batch in zip(executes, paper_batches, strict=True):
        assert task["arguments"]["parameters"] == [{"name": "batch", "value": batch.id}]
        kind = templates[task["template"]]["metadata"]["labels"][render.KIND_LABEL]
        assert kind == batch.kind
    gen_args = templates["generate"]["container"]["args"]
    assert f"--expect-batches={','.join(b.id for b in paper_batches)}" in gen_args

    for template in _pod_templates(workflow):
        kind = template["metadata"]["labels"][render.KIND_LABEL]
        container = template["container"]
        where = template["name"]
        assert template["metadata"]["labels"][res.QUEUE_LABEL] == res.QUEUES[kind], where
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert template["retryStrategy"]["limit"] >= 1
        assert {"name": render.RUNS_VOLUME, "mountPath": "/runs"} in container["volumeMounts"]
        has_token = any("secret" in v for v in template.get("volumes", []))
        # the token reaches the QPU step through its device (CDI / Allocate) at IQM_TOKENS_FILE; a
        # Secret mounted on that directory would collide with the file (issue 23)
        assert not has_token, f"{where}: no step mounts the token Secret"
        has_claim = bool(template.get("resourceClaims")) or "resourceClaims" in template.get(
            "podSpecPatch", ""
        )
        container_claims = container["resources"].get("claims", [])
        if opts.qpu_request == "extended-resource":
            assert not has_claim and not container_claims
            assert (container["resources"]["limits"].get(RESOURCE_NAME) == "1") == (kind == "qpu")
        else:
            assert has_claim == (kind == "qpu"), f"{where}: claim on every QPU pod and none elsewhere"
            assert RESOURCE_NAME not in container["resources"]["limits"]
        if kind == "gpu":
            assert container["resources"]["limits"][res.GPU_RESOURCE] == "1"
        else:
            assert res.GPU_RESOURCE not in container["resources"]["limits"]
    pvc = {
        v["persistentVolumeClaim"]["claimName"]
        for v in workflow["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert pvc == {"qubelet-runs"}


def test_claim_shapes(paper_plan: Any, paper_batches: list[Any]) -> None:
    plan, _ = paper_plan
    run = render.RunArgs(**PAPER_RUN)
    off = render.RenderOptions(claim_choices="off")  # the plain template; ranked: test_cluster_claims.py
    typed = render.build_workflow(run, plan.run_id, paper_batches, off)
    qpu = next(t for t in typed["spec"]["templates"] if t["name"] == "execute-qpu")
    assert qpu["resourceClaims"] == [{"name": "qpu", "resourceClaimTemplateName": "qpu"}]
    assert qpu["container"]["resources"]["claims"] == [{"name": "qpu"}]
    assert "podSpecPatch" not in qpu

    patched = render.build_workflow(
        run, plan.run_id, paper_batches, render.RenderOptions(argo_compat="podspecpatch", claim_choices="off")
    )
    qpu = next(t for t in patched["spec"]["templates"] if t["name"] == "execute-qpu")
    assert "resourceClaims" not in qpu and "claims" not in qpu["container"]["resources"]
    patch = json.loads(qpu["podSpecPatch"])
    assert patch["resourceClaims"] == [{"name": "qpu", "resourceClaimTemplateName": "qpu"}]
    assert patch["containers"] == [{"name": "main", "resources": {"claims": [{"name": "qpu"}]}}]

    constrained = render.build_workflow(
        run, plan.run_id, paper_batches, render.RenderOptions(claim_constraints=True, claim_choices="off")
    )
    floors = {b.min_qubits for b in paper_batches if b.kind == "qpu" and b.min_qubits}
    assert floors, "the paper run's QPU batches carry a qubit floor"
    names = {
        c["resourceClaimTemplateName"]
        for t in constrained["spec"]["templates"]
        for c in t.get("resourceClaims", [])
    }
    assert names == {f"qpu-min-{q}q" for q in floors}
    rcts = render.claim_templates(
        paper_batches, render.RenderOptions(claim_constraints=True, claim_choices="off")
    )
    assert {r["metadata"]["name"] for r in rcts} == names
    request = rcts[0]["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert request["allocationMode"] == "ExactCount" and request["count"] == 1
    assert request["deviceClassName"] == "qpu.quantum.example.com"
    assert f">= {min(floors)}" in request["selectors"][0]["cel"]["expression"]


def test_render_rejects_bad_plans() -> None:
    run = render.RunArgs()
    with pytest.raises(ValueError, match="no batches"):
        render.build_workflow(run, "r", [])
    with pytest.raises(ValueError, match="unknown backend kind"):
        render.build_workflow(run, "r", [render_batch("x-000", "tpu", None)])
    with pytest.raises(ValueError, match="collide"):
        render.build_workflow(run, "r", [render_batch("a.b", "cpu", None), render_batch("a_b", "cpu", None)])


def test_workflow_template_is_valid_and_fans_out_per_class() -> None:
    template = render.build_workflow_template()
    schemas.validate(template)
    dag = {t["name"]: t for t in template["spec"]["templates"][0]["dag"]["tasks"]}
    for kind in ("cpu", "gpu", "qpu"):
        assert (
            dag[f"execute-{kind}"]["withParam"] == f"{{{{tasks.generate.outputs.parameters.{kind}-batches}}}}"
        )
    generate = next(t for t in template["spec"]["templates"] if t["name"] == "generate")
    assert "--write-batch-lists" in generate["container"]["args"]
    outputs = {p["name"]: p["valueFrom"]["path"] for p in generate["outputs"]["parameters"]}
    assert outputs["qpu-batches"].endswith("/argo/batches-qpu.json")
    assert not [p for p, key, _ in _walk(template) if key == "nodeSelector"]
    broken = json.loads(json.dumps(template))
    broken["spec"]["templates"][4]["resourceClaims"][0]["resourceClaimTemplate"] = "qpu"
    with pytest.raises(schemas.SchemaError, match="resourceClaimTemplate"):
        schemas.validate(broken)


def test_render_cli_writes_a_loadable_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wf.yaml"
    argv = [
        "render",
        "--qubits=6",
        "--cuts=1",
        "--shots=64",
        "--backends=cpu,qpu",
        "--claim-constraints",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    workflow = docs[-1]
    assert workflow["kind"] == "Workflow"
    for doc in docs:
        schemas.validate(doc)
    assert "DAG tasks" in capsys.readouterr().out


def test_render_cli_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["render", "--backends=cpu,tpu"]) == 2
    assert "tpu" in capsys.readouterr().err.strip().splitlines()[-1]
    code = main(
        [
            "render",
            "--qubits=6",
            "--cuts=1",
            "--shots=64",
            "--backends=cpu",
            "-o",
            str(tmp_path / "no" / "wf.yaml"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("qubelet: error: -o") and "does not exist" in err and "\n" not in err


@pytest.mark.parametrize(
    ("compat", "version", "ok"),
    [
        ("podspecpatch", "v3.6.5", False),
        ("podspecpatch", "v3.6.6", True),
        ("podspecpatch", "3.7", True),
        ("typed", "v3.7.2", False),
        ("typed", "v4.1.0", True),
    ],
)
def test_render_refuses_an_argo_that_drops_the_claim(
    compat: str, version: str, ok: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Argo < v3.6.6 loses resources.claims from podSpecPatch; typed claims need v4.1."""
    from pipeline.cluster.render import check_argo_version, parse_argo_version

    if ok:
        check_argo_version(compat, parse_argo_version(version))  # type: ignore[arg-type]
        return
    code = main(["render", "--backends=cpu", f"--argo-compat={compat}", f"--argo-version={version}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"--argo-compat {compat} needs Argo Workflows >= v" in err and "lose its ResourceClaim" in err


def test_render_argo_version_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--backends=cpu", "--argo-version=latest"]) == 2
    assert "expected a version like v3.6.6, got 'latest'" in capsys.readouterr().err
    # the extended resource needs no claim at all: any Argo will do
    from pipeline.cluster.cli import _options

    ns = argparse.Namespace(
        argo_version="v3.0.0",
        qpu_request="extended-resource",
        argo_compat="podspecpatch",
        namespace="n",
        image="i",
        claim_constraints=False,
        pvc="p",
        retries=1,
    )
    assert _options(ns).qpu_request == "extended-resource"


def test_render_plans_from_the_cut_alone_and_matches_generate(
    paper_plan: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``qubelet render`` plans without storing or executing anything, and gets the batches the
    cluster's generate step will get (same ids, same subexperiments in each)."""
    from pipeline import stages
    from pipeline.config import RunConfig

    plan, _run_dir = paper_plan
    monkeypatch.chdir(tmp_path)
    rendered = stages.plan_from_cut(RunConfig(run_dir=tmp_path / "never-written", **PAPER_RUN))
    assert [(b.id, b.keys) for b in rendered.batches] == [(b.id, b.keys) for b in plan.batches]
    assert rendered.decisions == plan.decisions
    assert list(tmp_path.iterdir()) == []
