"""The admin's policy config file (``--policy-config FILE.yaml``, ``version: v1``), validated.

What an admin may tune without touching code (docs/policy.md, "Admin knobs")::

    version: v1
    epsilon: 0.02              # exploration probability of the telemetry policy
    loop:
      rounds: 4                # hand-outs per worker of a backend's planned share
      replanFraction: 0.1      # re-plan after this share of the pending work finished
      refitRows: 20            # refit after this many new telemetry rows
    backends:
      - name: qpu:apollo       # a backend name, or kind: cpu|gpu|qpu for a whole class
        weight: 2.0            # predicted run time x weight: > 1 disfavours, < 1 favours
      - kind: gpu
        prior: {base: 0.02, perShot: 1e-7, perAmpLayer: 2e-10, perShotLayer: 0}

Like the inventory (``qubelet.inventory.config``) every problem is ONE line naming the file and
the field: ``policy.yaml: backends[1] (gpu): weight: must be a positive number, got -1``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from policy.interface import BACKEND_KINDS, BackendKind, BackendState
from policy.loop import LoopSettings
from policy.models import CostCoefficients
from qubelet.errors import ConfigError
from qubelet.yamlfile import read_yaml_file

_PRIOR_KEYS = {
    "base": "base",
    "perShot": "per_shot",
    "perAmpLayer": "per_amp_layer",
    "perShotLayer": "per_shot_layer",
}


@dataclass(frozen=True)
class BackendKnobs:
    """One ``backends`` entry: which backends it matches and what it changes."""

    name: str | None = None
    kind: BackendKind | None = None
    weight: float = 1.0
    prior: CostCoefficients | None = None

    def matches(self, state: BackendState) -> bool:
        """Whether this entry applies to ``state`` (by name, else by kind)."""
        return state.name == self.name if self.name is not None else state.kind == self.kind


@dataclass(frozen=True)
class PolicyConfig:
    """The validated file (defaults: no file)."""

    epsilon: float | None = None
    rounds: int | None = None
    replan_fraction: float | None = None
    refit_rows: int | None = None
    backends: tuple[BackendKnobs, ...] = field(default_factory=tuple)

    def weight(self, state: BackendState) -> float:
        """The run-time weight of ``state``: a name entry wins over a kind entry; 1 without."""
        by_name = [b for b in self.backends if b.name is not None and b.matches(state)]
        by_kind = [b for b in self.backends if b.name is None and b.matches(state)]
        chosen = (by_name or by_kind or [BackendKnobs()])[0]
        return chosen.weight

    def priors(self) -> dict[BackendKind, CostCoefficients]:
        """Prior cost overrides per backend class."""
        return {b.kind: b.prior for b in self.backends if b.kind is not None and b.prior is not None}

    def loop_settings(self, base: LoopSettings) -> LoopSettings:
        """``base`` with the file's loop knobs applied."""
        changes: dict[str, Any] = {}
        if self.rounds is not None:
            changes["rounds"] = self.rounds
        if self.replan_fraction is not None:
            changes["replan_fraction"] = self.replan_fraction
        if self.refit_rows is not None:
            changes["refit_rows"] = self.refit_rows
        return LoopSettings(**{**base.__dict__, **changes})


def _number(value: Any, where: str, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and (float(value) > low if low_open else float(value) >= low) and float(value) <= high:
        return float(value)
    bound = f"> {low}" if low_open else f">= {low}"
    if high != math.inf:
        bound += f" and <= {high}"
    raise ConfigError(f"{where}: must be a number {bound}, got {value!r}")


def _integer(value: Any, where: str, *, low: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= low:
        return value
    raise ConfigError(f"{where}: must be an integer >= {low}, got {value!r}")


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(map(str, value)) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return value


def parse_policy_config(data: Any, source: str) -> PolicyConfig:
    """Validate parsed YAML; any problem raises a one-line :class:`ConfigError` naming ``source``."""
    top = _mapping(data, source, {"version", "epsilon", "loop", "backends"})
    if top.get("version") != "v1":
        raise ConfigError(f"{source}: version: must be v1, got {top.get('version')!r}")
    epsilon = None
    if "epsilon" in top:
        epsilon = _number(top["epsilon"], f"{source}: epsilon", low=0.0, high=1.0)
    loop = _mapping(top.get("loop") or {}, f"{source}: loop", {"rounds", "replanFraction", "refitRows"})
    rounds = _integer(loop["rounds"], f"{source}: loop.rounds", low=1) if "rounds" in loop else None
    fraction = (
        _number(loop["replanFraction"], f"{source}: loop.replanFraction", low=0.0, high=1.0, low_open=True)
        if "replanFraction" in loop
        else None
    )
    refit = _integer(loop["refitRows"], f"{source}: loop.refitRows", low=1) if "refitRows" in loop else None
    entries = top.get("backends") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: backends: must be a list")
    backends = []
    seen: set[str] = set()
    for index, raw in enumerate(entries):
        where = f"{source}: backends[{index}]"
        entry = _mapping(raw, where, {"name", "kind", "weight", "prior"})
        name, kind = entry.get("name"), entry.get("kind")
        if (name is None) == (kind is None):
            raise ConfigError(f"{where}: give exactly one of name (a backend) or kind (cpu|gpu|qpu)")
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"{where}: name: must be a backend name like qpu:apollo, got {name!r}")
        if kind is not None and kind not in BACKEND_KINDS:
            raise ConfigError(f"{where}: kind: must be one of {', '.join(BACKEND_KINDS)}, got {kind!r}")
        label = str(name or kind)
        where = f"{where} ({label})"
        if label in seen:
            raise ConfigError(f"{where}: {label} is configured twice")
        seen.add(label)
        weight = _number(entry.get("weight", 1.0), f"{where}: weight", low=0.0, low_open=True)
        prior = None
        if "prior" in entry:
            if kind is None:
                raise ConfigError(f"{where}: prior: priors are per kind (cpu|gpu|qpu), not per name")
            raw_prior = _mapping(entry["prior"], f"{where}: prior", set(_PRIOR_KEYS))
            prior = CostCoefficients(
                **{_PRIOR_KEYS[k]: _number(v, f"{where}: prior.{k}", low=0.0) for k, v in raw_prior.items()}
            )
        backends.append(BackendKnobs(name=name, kind=kind, weight=weight, prior=prior))
    return PolicyConfig(epsilon, rounds, fraction, refit, tuple(backends))


def load_policy_config(path: str | os.PathLike[str]) -> PolicyConfig:
    """Read and validate a policy config file (one-line :class:`ConfigError` on any problem)."""
    source = os.fspath(path)
    return parse_policy_config(read_yaml_file(source), source)
