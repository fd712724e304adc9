"""Scenarios as data: ``qubelet policy eval --scenario-file FILE.yaml`` and the built-ins.

A scenario file (``version: v1``) describes a workload and a simulated cluster; every field of
:class:`policy.scenarios.Scenario`, :class:`~policy.scenarios.PartitionSpec` and
:class:`~policy.scenarios.BackendSpec` is a camelCase key (``num_2q_gates`` → ``num2qGates``,
``fidelity_2q`` → ``fidelity2q``); omitted fields take the dataclass defaults. The built-in
scenarios are such files (``policy/builtin_scenarios/*.yaml``) and docs/policy.md documents the schema.

Like the inventory, any problem is ONE line naming the file and the field, e.g.
``my.yaml: backends[2] (qpu:x): failureProb: must be a number, got 'high'``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

import yaml

from policy.interface import BACKEND_KINDS
from policy.models import CostCoefficients
from qubelet.errors import ConfigError
from qubelet.yamlfile import read_yaml_file

if TYPE_CHECKING:  # policy.scenarios reads its built-ins through this module: imported late
    from policy.scenarios import Scenario

#: where the built-in scenario files live
BUILTIN_DIR = Path(__file__).with_name("builtin_scenarios")


def camel(name: str) -> str:
    """``num_2q_gates`` → ``num2qGates``, ``fidelity_2q`` → ``fidelity2q``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] if not part[:1].isdigit() else part for part in rest)


def _number(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value)):
        return float(value)
    raise ConfigError(f"{where}: must be a number, got {value!r}")


def _convert(value: Any, hint: Any, where: str) -> Any:
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{where}: must be set")
    if hint is CostCoefficients or "CostCoefficients" in text:
        return _build(CostCoefficients, value, where)
    if "tuple[tuple[float, float, float]" in text or "tuple[tuple[float, float]" in text:
        size = 3 if "float, float, float" in text else 2
        if not isinstance(value, list) or any(not isinstance(v, list) or len(v) != size for v in value):
            raise ConfigError(
                f"{where}: must be a list of [{', '.join(['start', 'end', 'factor'][:size])}] lists"
            )
        return tuple(tuple(_number(x, where) for x in item) for item in value)
    if text.startswith("bool") or hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    if hint is int or text.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: must be an integer, got {value!r}")
    if hint is float or text.startswith("float"):
        return _number(value, where)
    if hint is str or text.startswith("str") or "Literal" in text:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported value {value!r}")  # pragma: no cover


def _build(cls: Any, data: Any, where: str, skip: tuple[str, ...] = (), **given: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {camel(f.name): f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(map(str, data)) - set(fields) - {camel(s) for s in skip})
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
    kwargs = {}
    for key, field in fields.items():
        if key in data:
            kwargs[field.name] = _convert(data[key], hints[field.name], f"{where}: {key}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: {key} is required")
    return cls(**kwargs, **given)


def parse_scenario(data: Any, source: str) -> Scenario:
    """Validate a parsed scenario file; one-line :class:`ConfigError` naming ``source``."""
    from policy.scenarios import BackendSpec, PartitionSpec, Scenario

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping")
    if data.get("version") != "v1":
        raise ConfigError(f"{source}: version: must be v1, got {data.get('version')!r}")
    body = {k: v for k, v in data.items() if k != "version"}
    for key in ("partitions", "backends"):
        if not isinstance(body.get(key), list) or not body[key]:
            raise ConfigError(f"{source}: {key}: must be a non-empty list")
    partitions = tuple(
        _build(PartitionSpec, p, f"{source}: partitions[{i}]") for i, p in enumerate(body["partitions"])
    )
    backends = []
    for i, raw in enumerate(body["backends"]):
        label = raw.get("name") if isinstance(raw, dict) else None
        where = f"{source}: backends[{i}]" + (f" ({label})" if label else "")
        spec = _build(BackendSpec, raw, where)
        if spec.kind not in BACKEND_KINDS:
            raise ConfigError(f"{where}: kind: must be one of {', '.join(BACKEND_KINDS)}, got {spec.kind!r}")
        backends.append(spec)
    names = [b.name for b in backends]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: backends: names must be unique, got {names}")
    top = {k: v for k, v in body.items() if k not in ("partitions", "backends")}
    return _build(
        Scenario,
        top,
        source,
        skip=("partitions", "backends"),
        partitions=partitions,
        backends=tuple(backends),
    )


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario file."""
    source = os.fspath(path)
    return parse_scenario(read_yaml_file(source), source)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {camel(f.name): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def dump_scenario(scenario: Scenario) -> str:
    """The scenario as a ``version: v1`` file (every field spelled out)."""
    text: str = yaml.safe_dump({"version": "v1", **_plain(scenario)}, sort_keys=False, width=100)
    return text


def builtin_scenarios() -> dict[str, Scenario]:
    """The built-in scenarios, from their files, in the order of ``order.txt``."""
    order = (BUILTIN_DIR / "order.txt").read_text(encoding="utf-8").split()
    return {name: load_scenario(BUILTIN_DIR / f"{name}.yaml") for name in order}
