"""The PrometheusRule's alerts under ``promtool test rules``: each fires and stays quiet as designed.

The unit tests live in ``tests/promtool/qubelet-rules.test.yaml`` (series given as input, the
way Prometheus's own documentation describes); this module extracts the PrometheusRule's
``spec`` into a plain rule file beside them and runs promtool, so CI checks the very rules the
cluster gets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prom_tools import PROMTOOL, ROOT, alert_names, needs_promtool, rule_groups

TESTS = ROOT / "tests" / "promtool" / "qubelet-rules.test.yaml"

pytestmark = [pytest.mark.timeout(120), needs_promtool]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=100, check=False
    )


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "qubelet-rules.yaml").write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return tmp_path


def test_rules_are_valid(rules_dir: Path) -> None:
    proc = _promtool("check", "rules", "qubelet-rules.yaml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = sum(len(group["rules"]) for group in rule_groups()["groups"])
    assert f"SUCCESS: {rules} rules found" in proc.stdout


def test_alert_unit_tests_pass(rules_dir: Path) -> None:
    proc = _promtool("test", "rules", TESTS.name, cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(alert_names())
    assert alerts, "no alerts in the PrometheusRule"
    assert alerts - firing == set(), f"alerts never shown firing: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"alerts never shown quiet: {sorted(alerts - quiet)}"
    assert (firing | quiet) <= alerts, f"tests name unknown alerts: {sorted((firing | quiet) - alerts)}"


def test_a_broken_rule_fails_its_unit_test(rules_dir: Path) -> None:
    """The harness can fail: a QubeletTasksFailing that never fires is caught."""
    groups = rule_groups()
    for group in groups["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "QubeletTasksFailing":
                rule["expr"] = rule["expr"].replace("> 0", "> 1000")
    (rules_dir / "qubelet-rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    proc = _promtool("test", "rules", TESTS.name, cwd=rules_dir)
    assert proc.returncode != 0
    assert "QubeletTasksFailing" in proc.stdout + proc.stderr


def test_queue_wait_buckets_reach_past_the_alert_threshold() -> None:
    """histogram_quantile() never returns more than the last finite bucket's bound, so with
    buckets ending at the threshold QubeletQueueWaitHigh could never fire."""
    from pipeline import metrics

    [rule] = [
        r for g in rule_groups()["groups"] for r in g["rules"] if r.get("alert") == "QubeletQueueWaitHigh"
    ]
    match = re.search(r">\s*([0-9.]+)\s*$", rule["expr"].strip())
    assert match, rule["expr"]
    threshold = float(match.group(1))
    buckets = [b for b in metrics.QUEUE_WAIT_BUCKETS if b != float("inf")]
    assert max(buckets) > threshold
