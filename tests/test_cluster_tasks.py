"""``qubelet task`` steps run locally in DAG order give the same answer as ``qubelet run``.

Same seed, same subexperiment keys, per-key sampling seeds: the cluster path (one process per
step, as in the Argo pods) must reproduce the local executor's numbers exactly, and agree
within standard errors in any case.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pipeline.cluster import tasks
from qubelet.cli import main

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--qubits=6", "--cuts=1", "--shots=256", "--seed=11", "--backends=cpu", "--batch-size=2"]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


#: Runs the steps in DAG order, each through the real CLI entry point, in one fresh process
#: (a fresh process like an Argo pod; see test docstring for why not this process).
_STEPS_DRIVER = """
import json, sys
from qubelet.cli import main
run_dir, flags = sys.argv[1], sys.argv[2:]
assert main(["task", "generate", f"--run-dir={run_dir}", *flags, "--write-batch-lists"]) == 0
assert main(["task", "reconstruct", f"--run-dir={run_dir}"]) == 2, "reconstruct before execute must fail"
ids = [b["id"] for b in json.load(open(f"{run_dir}/plan.json"))["batches"]]
for batch_id in ids:
    assert main(["task", "execute", f"--run-dir={run_dir}", f"--batch={batch_id}"]) == 0
assert main(["task", "execute", f"--run-dir={run_dir}", f"--batch={ids[0]}"]) == 0  # an Argo retry
assert main(["task", "reconstruct", f"--run-dir={run_dir}"]) == 0
"""


def _in_fresh_process(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=180, check=False, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("local") / "run"
    _in_fresh_process(["-m", "qubelet.cli", "run", *SMALL, f"--run-dir={run_dir}", "--no-progress"])
    return _summary(run_dir)


def test_task_steps_in_order_match_the_local_run(local_run: dict, tmp_path: Path) -> None:
    """Each side runs in its own fresh process. Why: subexperiment keys (QPY content hashes)
    differ between the first and a later cut in one Python process (process-global naming in
    the serialised circuits), and sampling seeds derive from the keys, so only first-in-process
    runs are bit-comparable."""
    run_dir = tmp_path / "cluster-run"
    _in_fresh_process(["-c", _STEPS_DRIVER, str(run_dir), *SMALL])
    plan = json.loads((run_dir / "plan.json").read_text())
    ids = [b["id"] for b in plan["batches"]]
    assert len(ids) >= 2, "batch-size 2 should split the run into several batches"
    lists = {
        k: json.loads((run_dir / "argo" / f"batches-{k}.json").read_text()) for k in ("cpu", "gpu", "qpu")
    }
    assert lists == {"cpu": ids, "gpu": [], "qpu": []}

    cluster = _summary(run_dir)
    for key in ("qubits", "cuts", "shots", "seed", "policy", "subexperiments"):
        assert cluster[key] == local_run[key], key
    local_obs = {o["name"]: o for o in local_run["observables"]}
    assert [o["name"] for o in cluster["observables"]] == list(local_obs)
    for obs in cluster["observables"]:
        ref = local_obs[obs["name"]]
        tolerance = 3 * max(obs["stderr"], ref["stderr"], 1e-12)
        assert abs(obs["value"] - ref["value"]) <= tolerance, obs["name"]
        # Deterministic pipeline: identical numbers, not just statistically compatible ones.
        assert obs["value"] == pytest.approx(ref["value"], abs=1e-12), obs["name"]
        assert obs["exact"] == pytest.approx(ref["exact"], abs=1e-12)
    assert cluster["backends"]["cpu"]["tasks"] == local_run["backends"]["cpu"]["tasks"]


def test_generate_refuses_batches_the_workflow_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code = main(["task", "generate", f"--run-dir={run_dir}", *SMALL, "--expect-batches=cpu-000"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith("qubelet: error:") and "re-render the workflow" in err
    # The full list (or a superset, after a resume) is accepted.
    ids = [b["id"] for b in json.loads((run_dir / "plan.json").read_text())["batches"]]
    assert (
        main(
            ["task", "generate", f"--run-dir={run_dir}", *SMALL, f"--expect-batches={','.join([*ids, 'x'])}"]
        )
        == 0
    )


def test_execute_unknown_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main(["task", "execute", f"--run-dir={run_dir}", "--batch=cpu-000"]) == 2
    assert "no plan.json" in capsys.readouterr().err
    assert main(["task", "generate", f"--run-dir={run_dir}", *SMALL]) == 0
    assert main(["task", "execute", f"--run-dir={run_dir}", "--batch=nope-000"]) == 2
    assert "no batch 'nope-000'" in capsys.readouterr().err.strip().splitlines()[-1]
    # Rendered workflows pass --missing-ok: after a resume a batch may be planned away.
    assert main(["task", "execute", f"--run-dir={run_dir}", "--batch=nope-000", "--missing-ok"]) == 0


def test_step_serves_prometheus_metrics(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tasks.serving_metrics(port):
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        # A second server on the same port (busy) must not fail the step.
        with tasks.serving_metrics(port):
            pass
    assert "# TYPE" in body
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_batch_lists_reject_unknown_kinds() -> None:
    class B:
        id = "x"
        kind = "tpu"

    with pytest.raises(tasks.TaskError, match="tpu"):
        tasks.batch_lists([B()])


def test_execute_step_records_pipeline_metrics(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    run_dir = tmp_path / "run"
    assert main(["task", "generate", f"--run-dir={run_dir}", *SMALL]) == 0
    batch = json.loads((run_dir / "plan.json").read_text())["batches"][0]
    before_ok = sample("qubelet_pipeline_tasks_total", backend="cpu", state="succeeded")
    before_done = sample("qubelet_pipeline_subexperiments_completed_total")
    before_wait = sample("qubelet_pipeline_queue_wait_seconds_count", backend="cpu")
    assert main(["task", "execute", f"--run-dir={run_dir}", f"--batch={batch['id']}"]) == 0
    ran = len(batch["keys"])
    assert sample("qubelet_pipeline_tasks_total", backend="cpu", state="succeeded") == before_ok + ran
    assert sample("qubelet_pipeline_subexperiments_completed_total") == before_done + ran
    assert sample("qubelet_pipeline_queue_wait_seconds_count", backend="cpu") == before_wait + 1
    assert sample("qubelet_pipeline_backend_up", backend="cpu") == 1.0
