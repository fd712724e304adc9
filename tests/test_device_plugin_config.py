"""The QPU inventory file: the example parses, and every bad case is one line naming file/entry/field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from qubelet.inventory import ConfigError, devices_for, load_config, parse_config, qpu_env
from qubelet.inventory.names import TOKENS_MOUNT_PATH

pytestmark = pytest.mark.timeout(30)

EXAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "qpus.yaml"


def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.version == "v1"
    assert config.source == str(EXAMPLE)
    assert [q.name for q in config.qpus] == ["adonis-onprem", "apollo-cloud"]
    adonis, apollo = config.qpus
    assert (adonis.qubits, adonis.location, adonis.replicas) == (5, "onprem", 2)
    assert (apollo.qubits, apollo.location, apollo.replicas) == (20, "cloud", 4)
    assert apollo.fidelity_2q == pytest.approx(0.975)
    assert apollo.health.interval_seconds == 10 and apollo.health.timeout_seconds == 2
    # adonis does not set an interval: it inherits flags.healthCheckIntervalSeconds
    assert adonis.health.interval_seconds == config.flags.health_check_interval_seconds == 5
    assert config.qpu("apollo-cloud") is apollo
    assert len(devices_for(config)) == 6
    assert [d.id for d in devices_for(config)][:3] == [
        "adonis-onprem-r0",
        "adonis-onprem-r1",
        "apollo-cloud-r0",
    ]


def test_qpu_env_contract() -> None:
    config = load_config(EXAMPLE)
    assert qpu_env(config.qpu("adonis-onprem")) == {
        "QUBELET_QPU_NAME": "adonis-onprem",
        "QUBELET_QPU_BACKEND": "fake:IQMFakeAdonis",
    }
    env = qpu_env(config.qpu("apollo-cloud"))
    assert env["IQM_SERVER_URL"] == "https://cocos.resonance.meetiqm.com/apollo"
    assert env["IQM_TOKENS_FILE"] == TOKENS_MOUNT_PATH


def test_defaults_from_sharing_and_flags() -> None:
    data = example()
    data["sharing"]["timeSlicing"]["replicas"] = 3
    del data["qpus"][0]["replicas"]
    del data["flags"]
    config = parse_config(data, "inline")
    assert config.qpus[0].replicas == 3
    assert config.flags.cdi_enabled is False and config.flags.fail_on_init_error is False


def test_unknown_qpu_lookup_is_config_error() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ConfigError, match=r"unknown QPU 'nope' \(known: adonis-onprem, apollo-cloud\)"):
        config.qpu("nope")


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split("/")
    target: Any = data
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value


_DELETE = object()

BAD_CASES = [
    ("qpus/1/qubits", "x", "qpus[1] (apollo-cloud): qubits: must be a positive integer, got 'x'"),
    ("qpus/1/qubits", 0, "qpus[1] (apollo-cloud): qubits: must be a positive integer, got 0"),
    ("qpus/0/qubits", True, "qpus[0] (adonis-onprem): qubits: must be a positive integer, got True"),
    ("qpus/0/location", "moon", "qpus[0] (adonis-onprem): location: must be one of onprem, cloud"),
    ("qpus/0/name", "Bad_Name", "qpus[0] (Bad_Name): name: must be a DNS-1123 label"),
    ("qpus/1/name", "adonis-onprem", "qpus[1] (adonis-onprem): name: duplicate of qpus[0]"),
    ("qpus/0/colour", "blue", "qpus[0] (adonis-onprem): colour: unknown field"),
    ("qpus/0/vendor", _DELETE, "qpus[0] (adonis-onprem): vendor: required field is missing"),
    ("qpus/0/backend", "ibm", "qpus[0] (adonis-onprem): backend: must be 'iqm' or 'fake:"),
    ("qpus/1/backend", "iqm", "qpus[1] (apollo-cloud): health.probe: 'fake' only probes fake: backends"),
    ("qpus/0/replicas", 0, "qpus[0] (adonis-onprem): replicas: must be a positive integer, got 0"),
    (
        "qpus/0/health",
        {"probe": "http"},
        "qpus[0] (adonis-onprem): health.url: required when probe is 'http'",
    ),
    (
        "qpus/0/health",
        {"probe": "file"},
        "qpus[0] (adonis-onprem): health.path: required when probe is 'file'",
    ),
    (
        "qpus/0/health",
        {"probe": "ping"},
        "qpus[0] (adonis-onprem): health.probe: must be one of fake, http, file",
    ),
    ("qpus/0/health", {"timeout": 1}, "qpus[0] (adonis-onprem): health.timeout: unknown field"),
    (
        "qpus/0/calibration",
        {"fidelity2q": 1.5},
        "qpus[0] (adonis-onprem): calibration.fidelity2q: must be a number in (0, 1], got 1.5",
    ),
    ("qpus/1/endpoint", "ftp://x", "qpus[1] (apollo-cloud): endpoint: must be an http(s) URL"),
    ("qpus/0/nodeSelector", ["a"], "qpus[0] (adonis-onprem): nodeSelector: must be a mapping"),
    ("flags/cdiEnabled", "yes", "flags.cdiEnabled: must be a boolean, got 'yes'"),
    ("flags/healthCheckIntervalSeconds", -1, "flags.healthCheckIntervalSeconds: must be a positive number"),
    ("sharing/timeSlicing/replicas", "2", "sharing.timeSlicing.replicas: must be a positive integer"),
    ("version", "v2", "version: must be one of v1, got 'v2'"),
    ("extra", 1, "extra: unknown field"),
    ("qpus", [], "qpus: must be a non-empty list"),
    ("qpus/0/name", "a" * 62, "name: too long: device id 'aaaa"),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD_CASES, ids=[c[2][:40] for c in BAD_CASES])
def test_bad_values_are_one_line_errors(tmp_path: Path, path: str, value: Any, expected: str) -> None:
    data = copy.deepcopy(example())
    _set(data, path, value)
    file = tmp_path / "qpus.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(file)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{file}: "), message
    assert expected in message, message


def test_iqm_backend_needs_endpoint() -> None:
    data = example()
    qpu = data["qpus"][1]
    qpu["backend"] = "iqm"
    qpu["health"] = {"probe": "http", "url": "https://example.invalid/health"}
    del qpu["endpoint"]
    with pytest.raises(
        ConfigError, match=r"^f: qpus\[1\] \(apollo-cloud\): endpoint: required when backend is 'iqm'$"
    ):
        parse_config(data, "f")


def test_unreadable_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read: No such file or directory"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: v1\nqpus: [\n  - name: a\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}: invalid YAML: line ")
    assert "\n" not in str(info.value)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)
