"""Every dashboard query reads its metrics as docs/metrics.md says (``qubelet.metrics_doc.READINGS``).

- a ``totals`` metric (pushed once per run at its final value) is never inside ``rate()`` or
  ``increase()``: a series that appears at its final value has no increase, so such a panel
  would show nothing for a short run (issue 24: the policy-decisions panel did exactly that);
- a ``rate`` metric (counter or histogram) is only read through ``rate()``/``increase()``;
- a ``gauge`` is never inside ``rate()``;
- every panel on pipeline and policy series filters on the dashboard's namespace;
- the policy panels exist: decisions split per backend (which QPU got the work), the prediction
  error and the error-budget breaches.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from qubelet.metrics_doc import READINGS, catalogue

DASHBOARD = Path(__file__).resolve().parents[1] / "manifests" / "monitoring" / "grafana-dashboard.json"
QUBELET_SERIES = re.compile(
    r"\b(qubelet_(?:pipeline|policy)_[a-z0-9_]+?)(_bucket|_sum|_count)?\b(\{[^}]*\})?"
)


def _queries() -> list[tuple[dict[str, Any], str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel, target["expr"]) for panel in panels for target in panel.get("targets", [])]


def _enclosing_functions(expr: str, position: int) -> list[str]:
    """Names of the functions whose parentheses enclose ``position``, innermost first."""
    out, depth = [], 0
    for index in range(position - 1, -1, -1):
        char = expr[index]
        if char == ")":
            depth += 1
        elif char == "(":
            if depth == 0:
                name = re.search(r"([a-z_]+)\s*$", expr[:index])
                out.append(name.group(1) if name else "")
            else:
                depth -= 1
    return out


def _uses() -> list[tuple[str, str, str, list[str], str]]:
    """(panel title, metric, selector, enclosing functions, expr) of every qubelet series in a query."""
    out = []
    for panel, expr in _queries():
        for match in QUBELET_SERIES.finditer(expr):
            metric = match.group(1)
            out.append(
                (
                    panel["title"],
                    metric,
                    match.group(3) or "",
                    _enclosing_functions(expr, match.start()),
                    expr,
                )
            )
    return out


def test_every_documented_reading_names_an_exported_metric() -> None:
    exported = {d.name for d in catalogue()}
    assert set(READINGS) <= exported
    assert {reading for reading, _ in READINGS.values()} == {"rate", "totals", "gauge"}


@pytest.mark.parametrize("use", _uses(), ids=lambda u: f"{u[0]}:{u[1]}")
def test_panel_reads_the_metric_as_documented(use: tuple[str, str, str, list[str], str]) -> None:
    title, metric, selector, functions, expr = use
    assert metric in READINGS, f"panel {title!r}: {metric} has no documented reading in docs/metrics.md"
    reading = READINGS[metric][0]
    windowed = {"rate", "increase", "irate"} & set(functions[:1])
    if reading == "rate":
        assert windowed, f"panel {title!r}: {metric} is read with rate()/increase() (docs/metrics.md): {expr}"
    else:
        assert not ({"rate", "increase", "irate"} & set(functions)), (
            f"panel {title!r}: {metric} is read as {reading}, never with rate() (docs/metrics.md): {expr}"
        )
    assert 'namespace="$namespace"' in selector, f"panel {title!r}: {metric} without the namespace filter"


def test_the_policy_panels_exist_and_split_per_backend() -> None:
    by_metric: dict[str, list[str]] = {}
    for _, metric, _, _, expr in _uses():
        by_metric.setdefault(metric, []).append(expr)
    [decisions] = by_metric["qubelet_policy_decisions_total"]
    grouping = re.search(r"sum by \(([^)]*)\)", decisions)
    assert grouping and "backend" in [g.strip() for g in grouping.group(1).split(",")], decisions
    assert "qubelet_policy_prediction_error_seconds" in by_metric
    assert "qubelet_policy_error_budget_breaches_total" in by_metric


def test_the_checker_catches_the_old_decisions_panel() -> None:
    """The query issue 24 found (rate() of the pushed totals, no namespace) fails the check."""
    old = "sum by (policy, backend_kind) (rate(qubelet_policy_decisions_total[$__rate_interval]))"
    match = QUBELET_SERIES.search(old)
    assert match is not None
    assert "rate" in _enclosing_functions(old, match.start())
    assert 'namespace="$namespace"' not in (match.group(3) or "")


def test_every_policy_counts_its_decisions_per_backend() -> None:
    """The decisions panel has data for the size and all_cpu policies too, per QPU by name."""
    from policy import metrics
    from policy.interface import BackendState, CircuitFeatures
    from policy.registry import make_policy

    qpu = BackendState(name="qpu:apollo-cloud", kind="qpu", max_qubits=20)
    cpu = BackendState(name="cpu", kind="cpu")
    task = CircuitFeatures("k", 5, 10, 4, 5, 128)
    for name, backend in (("size", qpu), ("all_cpu", cpu)):
        counter = metrics.DECISIONS.labels(policy=name, backend_kind=backend.kind, backend=backend.name)
        before = counter._value.get()
        [decision] = make_policy(name).select([task], [cpu, qpu])
        assert decision.backend == backend.name
        assert counter._value.get() == before + 1
