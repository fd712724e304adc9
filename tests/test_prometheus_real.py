"""qubelet's exporters scraped by a real Prometheus, with the dashboard and alerts evaluated on it.

A real ``prometheus`` on loopback gets a generated scrape config for:

- the device plugin, registered with the kubelet double (real gRPC on unix sockets);
- the DRA kubelet plugin, publishing ResourceSlices to the API double, registered with the
  kubelet plugin-watcher double;
- the DRA controller (cloud QPUs, leader-elected through a Lease in the API double);
- Kueue's metrics endpoint (a double: the queue gauges with Kueue's names and labels);
- a ``qubelet run --metrics-port`` subprocess (4 qubits, 1 cut, 64 shots, CPU only), held open
  with ``--metrics-linger`` so its final values are scraped.

The targets carry the labels prometheus-operator's relabelling adds (``namespace``, ``node``).
Prometheus also loads the PrometheusRule's groups. Then every dashboard query and every alert
expression goes through the HTTP API: each must parse, the panels fed by these targets must
have data, one unhealthy QPU and a Kueue backlog must show in their alerts' expressions (pending,
given their ``for``), every rule must evaluate without error, and the policy's Prometheus
source must read the run's telemetry from this server.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doubles.fake_resource_api import FakeResourceAPI
from doubles.kubelet_deviceplugin import TestKubelet
from doubles.kubelet_dra import TestKubeletDRA
from doubles.kueue_metrics import KueueMetrics
from prom_tools import (
    Process,
    RealPrometheus,
    dashboard_queries,
    free_port,
    needs_prometheus,
    rule_groups,
    wait_for,
)

from admission_check.telemetry import PROMQL as ADMISSION_PROMQL
from admission_check.telemetry import PrometheusTelemetry
from dra_driver.controller import CloudController
from dra_driver.kubelet_plugin import KubeletPlugin
from dra_driver.metrics import DRAMetrics
from pipeline.runlock import run_dir_lock
from policy.telemetry_sources import LocalHistory, PrometheusSource
from qpu_device_plugin.metrics import PluginMetrics
from qpu_device_plugin.plugin import DevicePlugin
from qubelet.daemon import MetricsServer, serve_metrics
from qubelet.inventory import Config, parse_config

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow, needs_prometheus]

NODE = "node-a"
WORKLOADS = "qubelet-workloads"
SYSTEM = "qubelet-system"
#: Panels whose data comes from outside qubelet (cAdvisor, DCGM) or from QPU runs (this run is
#: CPU only, so it also breaches no error budget): their queries must parse, but they have
#: nothing to show here.
NO_DATA_HERE = {
    "CPU utilisation of step pods",
    "GPU utilisation",
    "QPU task latency (p50 / p95)",
    "Error budget breaches (in range)",
}


def _inventory(health_dir: Path) -> Config:
    """One on-prem QPU on this node and one cloud QPU, with file probes the test can flip."""
    common = {"vendor": "IQM", "technology": "superconducting"}
    return parse_config(
        {
            "version": "v1",
            "qpus": [
                {
                    **common,
                    "name": "adonis-onprem",
                    "model": "Adonis",
                    "qubits": 5,
                    "location": "onprem",
                    "topology": "star",
                    "backend": "fake:IQMFakeAdonis",
                    "replicas": 2,
                    "health": {"probe": "file", "path": str(health_dir / "adonis"), "intervalSeconds": 0.1},
                },
                {
                    **common,
                    "name": "apollo-cloud",
                    "model": "Apollo",
                    "qubits": 20,
                    "location": "cloud",
                    "topology": "square-lattice",
                    "backend": "fake:IQMFakeApollo",
                    "endpoint": "https://qpu.example.com/apollo",
                    "tokensFile": str(health_dir / "tokens.json"),
                    "health": {"probe": "file", "path": str(health_dir / "apollo"), "intervalSeconds": 0.1},
                    "replicas": 2,
                },
            ],
        },
        "prometheus-test-inventory",
    )


class NodeDaemons:
    """The device plugin, the DRA kubelet plugin, the DRA controller and Kueue's metrics double."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.health = root / "health"
        self.health.mkdir()
        for name in ("adonis", "apollo"):
            (self.health / name).write_text("healthy\n")
        (self.health / "tokens.json").write_text("{}")
        config = _inventory(self.health)
        self.servers: dict[str, MetricsServer] = {}
        self.stops: list[Any] = []

        dp_dir = root / "dp"
        dp_dir.mkdir()
        self.kubelet = TestKubelet(dp_dir).start()
        self.stops.append(self.kubelet.stop)
        dp_metrics = PluginMetrics()
        self.device_plugin = DevicePlugin(config, dp_dir, poll_interval=0.05, metrics=dp_metrics)
        thread = threading.Thread(target=self.device_plugin.run, daemon=True)
        thread.start()
        self.stops.append(lambda: (self.device_plugin.shutdown(), thread.join(timeout=10)))
        self.kubelet.wait_for_registrations(1, timeout=30)
        self._serve("device-plugin", dp_metrics.registry)

        api = FakeResourceAPI()
        registry = root / "registry"
        registry.mkdir()
        kp_metrics = DRAMetrics()
        self.kubelet_plugin = KubeletPlugin(
            config,
            NODE,
            root / "plugins",
            registry,
            root / "cdi",
            api,
            resync_seconds=0.5,
            metrics=kp_metrics,
        )
        self.kubelet_plugin.start()
        self.stops.append(self.kubelet_plugin.stop)
        self.dra_kubelet = TestKubeletDRA(registry)
        self.dra_kubelet.register()
        self.stops.append(self.dra_kubelet.close)
        self._serve("dra-kubelet-plugin", kp_metrics.registry)

        self.kueue = KueueMetrics()
        self.kueue.set_cluster_queue("qubelet", active=3, inadmissible=1)
        self.kueue.set_local_queue(WORKLOADS, "qubelet-cpu", active=0)
        self.kueue.set_local_queue(WORKLOADS, "qubelet-qpu", active=3, inadmissible=1)
        kueue_server = self.kueue.serve(free_port())
        self.servers["kueue"] = kueue_server
        self.stops.append(kueue_server.shutdown)

        ctl_metrics = DRAMetrics()
        self.controller = CloudController(config, api, "controller-0", metrics=ctl_metrics)
        self.controller.start()
        self.stops.append(self.controller.stop)
        self._serve("dra-controller", ctl_metrics.registry)
        self.api = api

    def _serve(self, job: str, registry: Any) -> None:
        server = serve_metrics(free_port(), registry=registry, addr="127.0.0.1")
        assert server is not None
        self.servers[job] = server
        self.stops.append(server.shutdown)

    def targets(self) -> dict[str, list[str]]:
        """Scrape job -> its one loopback target."""
        return {job: [f"127.0.0.1:{server.port}"] for job, server in self.servers.items()}

    def stop(self) -> None:
        """Stop everything started, last first."""
        for stop in reversed(self.stops):
            stop()


@pytest.fixture
def daemons() -> Iterator[NodeDaemons]:
    root = Path(tempfile.mkdtemp(prefix="qbp", dir="/tmp"))  # short: unix socket paths
    running = NodeDaemons(root)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


def _start_run(run_dir: Path, port: int, log_dir: Path) -> Process:
    argv = [
        sys.executable, "-m", "qubelet", "run", "--run-dir", str(run_dir), "--no-progress",
        "--qubits", "4", "--cuts", "1", "--shots", "64", "--backends", "cpu",
        "--metrics-port", str(port), "--metrics-linger", "120", "--lock-wait", "150",
    ]  # fmt: skip
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    return Process(argv, log_dir / "qubelet-run.log")


def _alive(run: Process) -> bool:
    if run.proc.poll() is not None:
        pytest.fail(f"qubelet run exited early ({run.proc.returncode}): {run.log_tail()}")
    return True


def test_exporters_dashboard_and_alerts_on_a_real_prometheus(daemons: NodeDaemons, tmp_path: Path) -> None:
    run_port = free_port()
    jobs = {**daemons.targets(), "qubelet-run": [f"127.0.0.1:{run_port}"]}
    labels = {job: {"namespace": SYSTEM, "node": NODE} for job in daemons.targets()}
    labels["kueue"] = {"namespace": "kueue-system"}
    labels["qubelet-run"] = {"namespace": WORKLOADS}
    with RealPrometheus(tmp_path / "prometheus", jobs, labels=labels, rules=rule_groups()) as prom:
        # The node daemons are up before the run starts.
        node_targets = {f"http://127.0.0.1:{s.port}/metrics" for s in daemons.servers.values()}

        def daemons_up() -> bool:
            up = prom.targets_up()
            return all(up.get(url) for url in node_targets)

        wait_for(daemons_up, 30, "the node daemons' targets up")

        run_dir = tmp_path / "run"
        # The run waits for this lock (--lock-wait) after creating its series at zero, so
        # Prometheus scrapes the zeros first and rate()/increase() count the whole run.
        with run_dir_lock(run_dir):
            run = _start_run(run_dir, run_port, tmp_path)
            zeros = 'sum(qubelet_pipeline_tasks_total{job="qubelet-run"})'
            wait_for(lambda: _alive(run) and prom.value(zeros) == 0.0, 150, "the run's zeroed series", 1.0)
        try:
            wait_for(
                lambda: (
                    _alive(run)
                    and prom.value('qubelet_pipeline_runs_total{job="qubelet-run", outcome="succeeded"}')
                    == 1.0
                ),
                150,
                "the finished run's metrics scraped",
                interval=1.0,
            )
            assert all(prom.targets_up().values()), prom.targets_up()
            summary = json.loads((run_dir / "summary.json").read_text())

            # One unhealthy QPU: the device plugin and the kubelet plugin report it.
            (daemons.health / "adonis").write_text("unhealthy\n")
            unhealthy = 'sum(qubelet_device_plugin_devices{health="Unhealthy"})'
            wait_for(lambda: prom.value(unhealthy) == 2.0, 20, "2 unhealthy adonis replicas in Prometheus")
            # And a backlog in Kueue above the QubeletQueueBacklog threshold.
            daemons.kueue.set_cluster_queue("qubelet", active=55, inadmissible=5)
            backlog = 'sum(kueue_pending_workloads{cluster_queue="qubelet"})'
            wait_for(lambda: prom.value(backlog) == 60.0, 20, "the Kueue backlog in Prometheus")

            _check_dashboard(prom)
            _check_alert_expressions(prom)
            _check_policy_source(prom, summary, run_dir)
            _check_admission_check_source(prom)
        finally:
            run.stop()
        assert "Traceback" not in run.log_tail(20000)


def _check_dashboard(prom: RealPrometheus) -> None:
    panels = dashboard_queries(
        {"$namespace": WORKLOADS, "$__rate_interval": "1m", "$__range": "5m", "$__range_s": "300"}
    )
    assert len(panels) >= 13  # every query of every panel
    with_data: set[str] = set()
    for title, expr in panels:
        result = prom.query(expr)  # fails the test if it does not parse
        if result:
            with_data.add(title)
    expected = {title for title, _ in panels} - NO_DATA_HERE
    assert expected - with_data == set(), f"panels without data: {sorted(expected - with_data)}"

    # A few values checked, not only their presence.
    def by(label: str, title_part: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in prom.query(_panel(panels, title_part))}

    states = by("state", "Task states")
    assert states["succeeded"] > 0 and states["failed"] == 0
    assert by("health", "(device plugin)") == {"Healthy": 2.0, "Unhealthy": 2.0}
    dra = by("health", "(DRA driver)")
    assert sum(dra.values()) == 4.0  # two on-prem replicas (kubelet plugin) + two cloud (controller)
    up = by("backend", "Backend up")
    assert up == {"cpu": 1.0}


def _panel(panels: list[tuple[str, str]], title_part: str) -> str:
    [expr] = [expr for title, expr in panels if title_part in title]
    return expr


def _check_alert_expressions(prom: RealPrometheus) -> None:
    rules = [r for g in rule_groups()["groups"] for r in g["rules"]]
    firing_now = {}
    for rule in rules:
        firing_now[rule["alert"]] = prom.query(rule["expr"])  # parses, or fails the test
    # Only the unhealthy QPU and the Kueue backlog are wrong right now.
    assert [r["metric"] for r in firing_now.pop("QubeletQPUUnhealthy")] == [{"node": NODE}]
    assert [r["metric"] for r in firing_now.pop("QubeletQueueBacklog")] == [{"cluster_queue": "qubelet"}]
    assert {name: result for name, result in firing_now.items() if result} == {}

    def pending_rules() -> dict[str, dict[str, Any]] | None:
        groups = prom.api("rules")["groups"]
        evaluated = {r["name"]: r for g in groups for r in g["rules"] if r.get("evaluationTime") is not None}
        pending = {name for name, rule in evaluated.items() if rule.get("state") == "pending"}
        return evaluated if pending == {"QubeletQPUUnhealthy", "QubeletQueueBacklog"} else None

    loaded = wait_for(pending_rules, 20, "the unhealthy-QPU and backlog alerts pending")
    assert set(loaded) == {r["alert"] for r in rules}
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"


def _check_policy_source(prom: RealPrometheus, summary: dict[str, Any], run_dir: Path) -> None:
    source = PrometheusSource(prom.url, window="5m")
    snaps = source.snapshots()
    assert source.last_error is None
    cpu = snaps["cpu"]
    assert cpu.up is True and cpu.failure_ratio == 0.0 and cpu.queue_depth == 0.0
    assert source.unhealthy_devices() == 2
    # the DRA driver's per-QPU probe, as the live signals read it (one QPU unhealthy)
    assert source.qpu_healthy() == {"adonis-onprem": False, "apollo-cloud": True}
    # Kueue's view per backend class; its own namespace label survives as exported_namespace.
    assert source.kueue_pending() == {"cpu": 0.0, "qpu": 4.0}
    assert prom.query('kueue_local_queue_pending_workloads{exported_namespace="qubelet-workloads"}')
    # The mean task time PromQL computes is the one the run's own telemetry rows record.
    local = LocalHistory([run_dir / "telemetry.jsonl"], strict=True).snapshots()["cpu"]
    tasks = summary["backends"]["cpu"]["tasks"]
    assert local.samples == tasks > 0
    assert prom.value('sum(qubelet_pipeline_tasks_total{job="qubelet-run", state="succeeded"})') == tasks
    assert cpu.mean_run_seconds == pytest.approx(local.mean_run_seconds, rel=1e-6)


def _check_admission_check_source(prom: RealPrometheus) -> None:
    """The admission check's PromQL parses on the real server and sees the unhealthy QPU."""
    for expr in ADMISSION_PROMQL.values():
        prom.query(expr)  # fails the test if it does not parse
    snapshot = PrometheusTelemetry(prom.url).snapshot()
    assert snapshot["adonis-onprem"].up is False
    assert snapshot["apollo-cloud"].up is True
