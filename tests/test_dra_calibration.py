"""Device attributes a scheduler selects on, and their refresh when the calibration changes."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from doubles.fake_resource_api import FakeResourceAPI

from dra_driver.calibration import CalibrationSource, from_quality_metrics
from dra_driver.constants import PUBLISHER_LABEL
from dra_driver.reconcile import SliceReconciler
from dra_driver.slices import KUBELET_PLUGIN_PUBLISHER, network_slices, node_slices, to_dict
from qubelet.errors import ConfigError
from qubelet.inventory import QPUConfig, load_config, parse_config
from qubelet.inventory.names import DRIVER_NAME

pytestmark = pytest.mark.timeout(30)
NODE = "node-a"
C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")


def _inventory(f2q: float, readout: float, when: str, backend: str = "fake:IQMFakeAdonis") -> dict[str, Any]:
    qpu = {
        "name": "adonis-onprem", "vendor": "IQM", "model": "Adonis", "qubits": 5,
        "technology": "superconducting", "location": "onprem", "nodes": [NODE], "topology": "star",
        "backend": backend, "calibration": {"fidelity2q": f2q, "readoutFidelity": readout, "time": when},
    }  # fmt: skip
    if backend == "iqm":
        qpu["endpoint"] = "https://iqm.example.com/adonis"
        qpu["health"] = {"probe": "http", "url": "https://iqm.example.com/adonis/health"}
    return {"version": "v1", "qpus": [qpu]}


def _attributes(qpus: tuple[QPUConfig, ...]) -> dict[str, dict[str, Any]]:
    (s,) = node_slices(qpus, NODE, {"adonis-onprem": True})
    return to_dict(s)["spec"]["devices"][0]["attributes"]  # type: ignore[no-any-return]


def test_attributes_carry_calibration_for_cel_and_obey_the_resourceslice_rules() -> None:
    cfg = parse_config(_inventory(0.9912, 0.953, "2026-11-25T06:00:00Z"), "test")
    attrs = _attributes(cfg.qpus)
    assert attrs["model"] == {"string": "Adonis"} and attrs["qubits"] == {"int": 5}
    assert attrs["topology"] == {"string": "star"}
    assert attrs["fidelity2qPpm"] == {"int": 991200} and attrs["readoutFidelityPpm"] == {"int": 953000}
    assert attrs["fidelity2q"] == {"string": "0.9912"}
    assert attrs["calibrationTime"] == {"int": int(dt.datetime(2026, 11, 25, 6, tzinfo=dt.UTC).timestamp())}
    for name, value in attrs.items():
        assert C_IDENTIFIER.match(name), name  # qualified names: <domain>/<C identifier, <= 32>
        ((kind, v),) = value.items()
        assert kind in {"bool", "int", "string", "version"}
        assert kind != "string" or len(v) <= 64


def test_bad_calibration_time_is_one_clear_line() -> None:
    with pytest.raises(ConfigError, match=r"calibration\.time: must be an RFC 3339 time or unix seconds"):
        parse_config(_inventory(0.99, 0.95, "yesterday"), "test")


def test_inventory_edit_refreshes_attributes_with_a_new_pool_generation(tmp_path: Path) -> None:
    path = tmp_path / "qpus.yaml"
    path.write_text(yaml.safe_dump(_inventory(0.99, 0.95, "2026-11-25T06:00:00Z")))
    config = load_config(path)  # the daemon's view, loaded once at start
    source = CalibrationSource(path)
    api = FakeResourceAPI()
    reconciler = SliceReconciler(
        api,
        label_selector=f"{PUBLISHER_LABEL}={KUBELET_PLUGIN_PUBLISHER}",
        field_selector=f"spec.driver={DRIVER_NAME},spec.nodeName={NODE}",
    )

    def publish() -> dict[str, Any]:
        reconciler.reconcile(node_slices(source.current(config.qpus), NODE, {"adonis-onprem": True}))
        (stored,) = api.list_resource_slices()
        return to_dict(stored)  # type: ignore[no-any-return]

    first = publish()
    assert first["spec"]["devices"][0]["attributes"]["fidelity2qPpm"] == {"int": 990000}
    assert publish()["spec"]["pool"]["generation"] == first["spec"]["pool"]["generation"]  # no change
    path.write_text(yaml.safe_dump(_inventory(0.97, 0.94, "2026-11-25T12:00:00Z")))  # recalibrated
    second = publish()
    attrs = second["spec"]["devices"][0]["attributes"]
    assert attrs["fidelity2qPpm"] == {"int": 970000} and attrs["readoutFidelityPpm"] == {"int": 940000}
    assert second["spec"]["pool"]["generation"] == first["spec"]["pool"]["generation"] + 1
    path.write_text("version: v1\nqpus: [")  # a broken edit keeps the last good calibration
    assert publish()["spec"]["devices"][0]["attributes"]["fidelity2qPpm"] == {"int": 970000}


def _metric_set(cz: list[float], ssro: list[float], created: dt.datetime) -> Any:
    observations = [
        SimpleNamespace(
            dut_field=f"metrics.irb.cz.crf_crf.QB{i}__QB{i + 1}.fidelity:par=d2", value=v, invalid=False
        )
        for i, v in enumerate(cz)
    ] + [
        SimpleNamespace(dut_field=f"metrics.ssro.measure.constant.QB{i}.fidelity", value=v, invalid=False)
        for i, v in enumerate(ssro)
    ]
    bad = SimpleNamespace(dut_field="metrics.irb.cz.crf_crf.QB9__QB8.fidelity", value=0.1, invalid=True)
    observations.append(bad)
    # the separate readout characterisation reports other numbers; it is not the measure gate's
    other = SimpleNamespace(
        dut_field="metrics.ssro.measure_fidelity.constant.QB1.fidelity", value=0.5, invalid=False
    )
    observations.append(other)
    observations.append(SimpleNamespace(dut_field="metrics.t1_time.QB1", value=3e-5, invalid=False))
    return SimpleNamespace(observations=observations, created_timestamp=created)


def test_iqm_quality_metrics_become_the_calibration() -> None:
    created = dt.datetime(2026, 11, 25, 7, tzinfo=dt.UTC)
    calibration = from_quality_metrics(_metric_set([0.98, 0.96], [0.95, 0.97], created))
    assert calibration.fidelity_2q == pytest.approx(0.97)
    assert calibration.readout_fidelity == pytest.approx(0.96)
    assert calibration.time == int(created.timestamp())


def test_iqm_calibration_is_polled_at_an_interval_and_failures_keep_the_last() -> None:
    cfg = parse_config(_inventory(0.9, 0.9, "2026-11-25T00:00:00Z", backend="iqm"), "test")
    answers: list[Any] = [_metric_set([0.99], [0.98], dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC))]
    now = [0.0]

    def fetch(qpu: QPUConfig) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = CalibrationSource(None, fetch_iqm=fetch, min_interval_seconds=60, clock=lambda: now[0])
    assert _attributes(source.current(cfg.qpus))["fidelity2qPpm"] == {"int": 990000}
    now[0] = 30.0  # within the interval: not asked again (answers is empty)
    assert _attributes(source.current(cfg.qpus))["fidelity2qPpm"] == {"int": 990000}
    now[0] = 61.0
    answers.append(ConnectionError("server down"))
    assert _attributes(source.current(cfg.qpus))["fidelity2qPpm"] == {"int": 990000}
    now[0] = 122.0
    answers.append(_metric_set([0.95], [0.9], dt.datetime(2026, 11, 25, 9, tzinfo=dt.UTC)))
    attrs = _attributes(source.current(cfg.qpus))
    assert attrs["fidelity2qPpm"] == {"int": 950000}
    assert attrs["calibrationTime"] == {"int": int(dt.datetime(2026, 11, 25, 9, tzinfo=dt.UTC).timestamp())}


def test_network_slices_carry_the_same_attributes() -> None:
    data = _inventory(0.99, 0.95, "2026-11-25T06:00:00Z")
    data["qpus"][0]["location"] = "cloud"
    del data["qpus"][0]["nodes"]
    cfg = parse_config(data, "test")
    (s,) = network_slices(cfg.qpus, {"adonis-onprem": True})
    assert to_dict(s)["spec"]["devices"][0]["attributes"]["fidelity2qPpm"] == {"int": 990000}
