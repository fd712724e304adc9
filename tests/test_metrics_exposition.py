"""The exposition convention: no ``_created`` series, base units, a generated and current
``docs/metrics.md``, the error-budget counter, and the push path's bad-input and dead-gateway
handling (the push against a real Pushgateway: tests/test_pushgateway_real.py)."""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

from dra_driver.metrics import DRAMetrics
from pipeline import metrics as pipeline_metrics
from pipeline.cluster import tasks
from pipeline.push import Pusher, check_url
from policy import metrics as policy_metrics
from policy.telemetry import TelemetryPolicy
from qpu_device_plugin.metrics import PluginMetrics
from qubelet import metrics_doc
from qubelet.cli import main

pytestmark = pytest.mark.timeout(60)

#: Unit suffixes that are not Prometheus base units.
NON_BASE_UNITS = re.compile(
    r"_(milli|micro|nano)?(ms|us|ns|minutes|hours|days|kilobytes|megabytes|percent)(_|$)"
)


def test_no_created_series_anywhere() -> None:
    pipeline_metrics.TASKS.labels("cpu", "succeeded").inc()
    pipeline_metrics.TASK_DURATION.labels("cpu", "cpu").observe(0.01)
    policy_metrics.record_decision("telemetry", "cpu")
    dra, plugin = DRAMetrics(), PluginMetrics()
    dra.prepare_errors.labels(reason="x").inc()
    dra.prepare_duration.observe(0.001)
    plugin.allocations.inc()
    for registry in (REGISTRY, dra.registry, plugin.registry):
        text = generate_latest(registry).decode()
        assert "_total" in text
        assert "_created" not in text


def test_names_types_and_units() -> None:
    docs = metrics_doc.catalogue()
    names = [d.name for d in docs]
    assert len(names) == len(set(names)), "a metric is defined twice"
    assert {"qubelet_pipeline_tasks_total", "qubelet_dra_devices", "qubelet_device_plugin_devices"} <= set(
        names
    )
    for doc in docs:
        assert doc.name.startswith("qubelet_"), doc.name
        assert doc.help.strip(), f"{doc.name} has no help text"
        assert not NON_BASE_UNITS.search(doc.name), f"{doc.name}: not a base unit"
        assert (doc.type == "counter") == doc.name.endswith("_total"), doc.name
        if doc.type == "histogram":
            assert doc.name.endswith("_seconds"), f"{doc.name}: histograms here measure seconds"


def test_every_metric_in_the_code_is_documented() -> None:
    """A metric defined anywhere (a new module included) must reach docs/metrics.md."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(qubelet_\w+)\"", re.S)
    root = metrics_doc.DOC_PATH.parents[1]
    defined = set()
    packages = [d for d in root.iterdir() if (d / "__init__.py").is_file() and d.name != "tests"]
    assert {"pipeline", "dra_driver", "qubelet"} <= {d.name for d in packages}
    for package in packages:
        for path in package.rglob("*.py"):
            for kind, name in pattern.findall(path.read_text(encoding="utf-8")):
                defined.add(f"{name.removesuffix('_total')}_total" if kind == "Counter" else name)
    documented = {doc.name for doc in metrics_doc.catalogue()}
    assert len(defined) >= 20
    assert defined - documented == set(), "add these to qubelet/metrics_doc.py's components"


def test_metrics_doc_is_current() -> None:
    assert metrics_doc.DOC_PATH.read_text(encoding="utf-8") == metrics_doc.render(), (
        "docs/metrics.md is out of date: run `python -m qubelet.metrics_doc`"
    )
    assert metrics_doc.main(["--check"]) == 0


def test_metrics_doc_check_fails_on_drift(tmp_path: Any) -> None:
    stale = tmp_path / "metrics.md"
    stale.write_text(metrics_doc.render().replace("qubelet_dra_devices", "qubelet_dra_device"))
    assert metrics_doc.main(["--check", "-o", str(stale)]) == 1
    assert metrics_doc.main(["-o", str(stale)]) == 0
    assert metrics_doc.main(["--check", "-o", str(stale)]) == 0


def _breaches(backend: str) -> float:
    value = REGISTRY.get_sample_value("qubelet_policy_error_budget_breaches_total", {"backend": backend})
    return value or 0.0


def test_error_budget_breaches_are_counted() -> None:
    policy = TelemetryPolicy(seed=0, error_budget=0.1)
    row: dict[str, Any] = {
        "backend": "qpu:budget-test", "backend_kind": "qpu", "num_qubits": 5, "depth": 10,
        "num_2q_gates": 4, "shots": 100, "run_seconds": 0.1, "success": True,
    }  # fmt: skip
    before = _breaches("qpu:budget-test")
    policy.observe([{**row, "observed_error": 0.05}, {**row, "key": "b"}], refit=False)  # type: ignore[list-item]
    assert _breaches("qpu:budget-test") == before
    policy.observe([{**row, "observed_error": 0.25}], refit=False)  # type: ignore[list-item]
    assert _breaches("qpu:budget-test") == before + 1


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("pushgateway:9091", "expected http"),
        ("ftp://pg:9091", "expected http"),
        ("http://pg:9091/metrics/job/x", "no path"),
        ("http://pg:notaport", "bad port"),
    ],
)
def test_bad_pushgateway_url_is_a_usage_error(url: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=why):
        check_url(url)
    assert main(["task", "reconstruct", "--run-dir=/nonexistent", f"--pushgateway={url}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0] and "Traceback" not in err[0]


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_dead_gateway_is_logged_and_not_delivered() -> None:
    pusher = Pusher(_dead_url(), timeout=0.5)
    assert pusher.enabled and not pusher.delivered
    assert pusher.push_process("run-1", "cpu-000") is False
    assert pusher.failed == 1 and not pusher.delivered
    assert Pusher("").enabled is False


class _Recorder(BaseHTTPRequestHandler):
    """A minimal HTTP sink recording the requests the push client makes (method, path, body)."""

    seen: list[tuple[str, str, str]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        self.seen.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_push_waiting_groups_start_at_zero_with_depth_one() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    try:

        class Batch:
            def __init__(self, id: str, backend: str, kind: str) -> None:
                self.id, self.backend, self.kind = id, backend, kind

        pusher = Pusher(f"http://127.0.0.1:{server.server_address[1]}")
        pushed = pusher.push_waiting("r1", [Batch("cpu-000", "cpu", "cpu"), Batch("qpu-000", "qpu:a", "qpu")])
        assert pushed == 3 and pusher.delivered
    finally:
        server.shutdown()
        server.server_close()
    paths = [path for _, path, _ in _Recorder.seen]
    assert paths == [
        "/metrics/job/qubelet-pipeline/run/r1/task/cpu-000",
        "/metrics/job/qubelet-pipeline/run/r1/task/qpu-000",
        "/metrics/job/qubelet-pipeline/run/r1/task/reconstruct",
    ]
    cpu = _Recorder.seen[0][2]
    assert 'qubelet_pipeline_queue_depth{backend="cpu"} 1.0' in cpu
    assert 'qubelet_pipeline_tasks_total{backend="cpu",state="succeeded"} 0.0' in cpu
    assert 'qubelet_pipeline_tasks_total{backend="cpu",state="failed"} 0.0' in cpu
    assert 'qubelet_pipeline_task_duration_seconds_count{backend="cpu",kind="cpu"} 0.0' in cpu
    assert "process_" not in cpu and "python_" not in cpu  # only qubelet series are pushed
    assert 'qubelet_pipeline_runs_total{outcome="failed"} 0.0' in _Recorder.seen[2][2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_a_pushing_step_serves_no_pipeline_series_unless_the_push_fails() -> None:
    """Pushed series must not also be scraped from the pod (double counting); the fallback
    serves them only after a failed push."""
    pipeline_metrics.TASKS.labels("cpu", "succeeded")
    port = _free_port()
    with tasks.step_metrics(port, 0.0, Pusher("")):
        assert "qubelet_pipeline_tasks_total" in _scrape(port)  # no gateway: served
    pusher = Pusher(_dead_url(), timeout=0.2)
    seen: list[str] = []

    def step() -> None:
        with tasks.step_metrics(port, 3.0, pusher):
            seen.append(_scrape(port))
            pusher.push_process("r1", "cpu-000")  # fails: nothing listens there

    thread = Thread(target=step)
    thread.start()
    try:
        fallback = ""
        deadline = time.monotonic() + 10
        while "qubelet_pipeline_tasks_total" not in fallback and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                fallback = _scrape(port)
            except OSError:
                continue
    finally:
        thread.join(timeout=20)
    assert "process_cpu_seconds_total" in seen[0] or "python_gc" in seen[0]
    assert "qubelet_pipeline_tasks_total" not in seen[0]
    assert "qubelet_pipeline_tasks_total" in fallback
