"""Real Prometheus, promtool and Pushgateway processes on loopback, for the observability tests.

These are the Debian packages ``prometheus`` (2.42, with ``promtool``) and
``prometheus-pushgateway``, not doubles; tests that need them skip with a reason when the
binaries are missing (``.ci/run`` installs them in CI). Every process listens on a free
loopback port and is stopped by its own pid.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES_MANIFEST = ROOT / "manifests" / "monitoring" / "prometheusrules.yaml"
DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)"
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)
needs_pushgateway = pytest.mark.skipif(
    PUSHGATEWAY is None,
    reason="prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway)",
)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's ``spec`` (``groups:``), which is a plain Prometheus rule file."""
    docs = [d for d in yaml.safe_load_all(RULES_MANIFEST.read_text()) if d]
    groups = [g for d in docs if d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"]]
    return {"groups": groups}


def alert_names() -> list[str]:
    """Every alert the PrometheusRule defines."""
    return [r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r]


def dashboard_queries(substitutions: dict[str, str]) -> list[tuple[str, str]]:
    """(panel title, expression) for every dashboard query, Grafana variables substituted."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(substitutions, key=len, reverse=True):
                expr = expr.replace(name, substitutions[name])
            out.append((panel["title"], expr))
    return out


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test saying ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


class Process:
    """A child process with its log in a file; stopped by pid (terminate, then kill)."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(list(argv), stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the process's output (for failure messages)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """Terminate the child and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


class RealPrometheus:
    """``prometheus`` on a loopback port with a generated config.

    Args:
        workdir: config, rule file, TSDB and log go here.
        jobs: scrape job name -> list of ``host:port`` targets.
        labels: extra target labels per job (what prometheus-operator's relabelling would add).
        honor_labels: jobs whose scraped labels win (the Pushgateway's, as its docs require).
        rules: a rule file's content (``groups:``) to load, or None.
        interval: scrape and rule evaluation interval.
    """

    def __init__(
        self,
        workdir: Path,
        jobs: dict[str, list[str]],
        *,
        labels: dict[str, dict[str, str]] | None = None,
        honor_labels: Sequence[str] = (),
        rules: dict[str, Any] | None = None,
        interval: str = "1s",
    ) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                "scrape_timeout": interval,
            },
            "scrape_configs": [
                {
                    "job_name": job,
                    "honor_labels": job in honor_labels,
                    "static_configs": [{"targets": targets, "labels": (labels or {}).get(job, {})}],
                }
                for job, targets in jobs.items()
            ],
        }
        if rules is not None:
            (workdir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
            config["rule_files"] = [str(workdir / "rules.yaml")]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.process = Process(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.console.templates=",
                "--web.console.libraries=",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
        )

    def __enter__(self) -> RealPrometheus:
        try:
            wait_for(self._ready, 30, f"prometheus ready on {self.url}")
        except BaseException:
            self.process.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    def _ready(self) -> bool:
        if self.process.proc.poll() is not None:
            pytest.fail(f"prometheus exited: {self.process.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` (fails the test on an API error)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            body = _get_json(url)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read().decode() or "{}")
        assert body.get("status") == "success", (
            f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
        )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query (None when empty)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> dict[str, bool]:
        """Scrape URL -> whether its last scrape succeeded."""
        active = self.api("targets", state="active")["activeTargets"]
        return {t["scrapeUrl"]: t["health"] == "up" for t in active}


class RealPushgateway:
    """``prometheus-pushgateway`` on a loopback port (in-memory, no persistence file)."""

    def __init__(self, workdir: Path) -> None:
        assert PUSHGATEWAY is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            [PUSHGATEWAY, f"--web.listen-address={self.address}", "--log.level=warn"],
            workdir / "pushgateway.log",
        )

    def __enter__(self) -> RealPushgateway:
        try:
            wait_for(self._ready, 30, f"pushgateway ready on {self.url}")
        except BaseException:
            self.process.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    def _ready(self) -> bool:
        if self.process.proc.poll() is not None:
            pytest.fail(f"pushgateway exited: {self.process.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def metrics_text(self) -> str:
        """The Pushgateway's own exposition: every pushed group's series."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return str(response.read().decode())
