"""The mitigation a run asks for: level, ZNE scale factors and extrapolation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.mitigation.zne import (
    DEFAULT_EXTRAPOLATION,
    DEFAULT_FOLD,
    DEFAULT_SCALES,
    EXTRAPOLATIONS,
    FOLDS,
    validate_scales,
)

#: ``none`` < ``readout`` < ``zne`` (``zne`` includes readout mitigation).
MITIGATION_LEVELS = ("none", "readout", "zne")
DEFAULT_LEVEL = "readout"


@dataclass(frozen=True)
class MitigationConfig:
    """What mitigation QPU results get. Simulator results carry no readout error: nothing to do."""

    level: str = DEFAULT_LEVEL
    zne_scales: tuple[int, ...] = field(default=DEFAULT_SCALES)
    extrapolation: str = DEFAULT_EXTRAPOLATION
    fold: str = DEFAULT_FOLD

    def __post_init__(self) -> None:
        if self.level not in MITIGATION_LEVELS:
            raise ValueError(
                f"unknown mitigation {self.level!r}: choose one of {', '.join(MITIGATION_LEVELS)}"
            )
        if self.extrapolation not in EXTRAPOLATIONS:
            raise ValueError(
                f"unknown extrapolation {self.extrapolation!r}: choose one of {', '.join(EXTRAPOLATIONS)}"
            )
        if self.fold not in FOLDS:
            raise ValueError(f"unknown ZNE fold {self.fold!r}: choose one of {', '.join(FOLDS)}")
        object.__setattr__(self, "zne_scales", validate_scales(self.zne_scales))

    @property
    def readout(self) -> bool:
        """Whether readout errors are inverted (``readout`` and ``zne``)."""
        return self.level != "none"

    @property
    def zne(self) -> bool:
        """Whether folded circuits run and values are extrapolated to zero noise."""
        return self.level == "zne"

    @property
    def circuits_per_subexperiment(self) -> int:
        """QPU circuits one subexperiment costs: one, or one per ZNE scale factor."""
        return len(self.zne_scales) if self.zne else 1

    @property
    def relative_qpu_work(self) -> float:
        """Gate layers run per subexperiment, relative to no mitigation (Σ scales)."""
        return float(sum(self.zne_scales)) if self.zne else 1.0

    def to_json(self) -> dict[str, Any]:
        """The form stored in the manifest and the summary."""
        return {
            "level": self.level,
            "zne_scales": list(self.zne_scales),
            "extrapolation": self.extrapolation,
            "fold": self.fold,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | str | None) -> MitigationConfig:
        """Accepts the stored dict, a bare level name, or nothing (an older run: no mitigation)."""
        if data is None:
            return cls(level="none")
        if isinstance(data, str):
            return cls(level=data)
        return cls(
            level=data.get("level", DEFAULT_LEVEL),
            zne_scales=tuple(data.get("zne_scales", DEFAULT_SCALES)),
            extrapolation=data.get("extrapolation", DEFAULT_EXTRAPOLATION),
            fold=data.get("fold", DEFAULT_FOLD),
        )
