"""qubelet.serde: the declared dataclass is the JSON format, defaults included."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.config import RunConfig
from pipeline.planning import Batch, Plan
from qubelet import serde


@dataclass
class Inner:
    name: str
    weight: float = 1.0


@dataclass
class Outer:
    path: Path
    tags: tuple[str, ...]
    inners: list[Inner]
    by_key: dict[str, Inner] = field(default_factory=dict)
    pairs: list[tuple[float, str]] = field(default_factory=list)
    maybe: Path | None = None


def test_round_trip_converts_paths_tuples_and_nested_dataclasses() -> None:
    value = Outer(Path("a/b"), ("x", "y"), [Inner("i", 2.5)], {"k": Inner("j")}, [(0.5, "exact")])
    data = serde.to_json(value)
    assert data == {
        "path": "a/b",
        "tags": ["x", "y"],
        "inners": [{"name": "i", "weight": 2.5}],
        "by_key": {"k": {"name": "j", "weight": 1.0}},
        "pairs": [[0.5, "exact"]],
        "maybe": None,
    }
    back = serde.from_json(Outer, data)
    assert back == value
    assert isinstance(back.path, Path) and isinstance(back.tags, tuple) and isinstance(back.pairs[0], tuple)


def test_unknown_keys_are_ignored_missing_ones_defaulted_ints_widened() -> None:
    back = serde.from_json(Inner, {"name": "n", "weight": 3, "added_in_a_later_version": True})
    assert back == Inner("n", 3.0) and isinstance(back.weight, float)
    assert serde.from_json(Inner, {"name": "n"}).weight == 1.0
    with pytest.raises(TypeError):
        serde.from_json(Inner, {"weight": 1.0})  # name is required
    with pytest.raises(TypeError, match="expected an object"):
        serde.from_json(Inner, ["not", "a", "mapping"])  # type: ignore[arg-type]


def test_run_config_and_plan_round_trip() -> None:
    config = RunConfig(qubits=6, backends=("cpu", "qpu"), circuit_file=Path("c.qpy"), partition="AAABBB")
    data = config.to_json()
    assert data["circuit_file"] == "c.qpy" and data["backends"] == ["cpu", "qpu"]
    assert RunConfig.from_json(data) == config
    plan = Plan("r", "size", [Batch("qpu-000", "qpu", "qpu", ["k1"], min_qubits=5)], invalid={"k2": "torn"})
    assert Plan.from_json(plan.to_json()) == plan


def test_cli_defaults_are_the_run_configs(capsys: pytest.CaptureFixture[str]) -> None:
    from qubelet.cli import build_parser

    args = build_parser().parse_args(["run"])
    declared = RunConfig()
    # --qubits/--cuts default to None so that giving them with --circuit can be refused; the run
    # then takes RunConfig's values, which the help text names.
    assert args.qubits is None and args.cuts is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default {declared.qubits}" in help_text and f"default {declared.cuts}" in help_text
    for name in ("shots", "seed", "policy", "qpu_backend", "batch_size", "max_attempts"):
        assert getattr(args, name) == getattr(declared, name), name
    assert tuple(args.backends.split(",")) == declared.backends
