"""What one run is: the knobs of ``qubelet run`` as a plain, JSON-serialisable dataclass.

:class:`RunConfig` is the one declaration of those knobs and their defaults: the CLI takes its
flag defaults from it (:func:`qubelet.serde.defaults`) and ``manifest.json`` stores it through
:mod:`qubelet.serde`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.mitigation.levels import MitigationConfig
from pipeline.mitigation.zne import DEFAULT_EXTRAPOLATION, DEFAULT_FOLD, DEFAULT_SCALES
from policy.interface import OBSERVED_ERROR_MAX_WIDTH
from qubelet import serde
from qubelet.inventory.names import DEFAULT_QPU_SPEC

BACKEND_CLASSES = ("cpu", "gpu", "qpu")
#: the exact backend (pipeline.backends.exact): exact distributions, stderr 0; never a default,
#: and only alone, so no run mixes exact and sampled results
EXACT_BACKEND = "exact"
BACKEND_CHOICES = (*BACKEND_CLASSES, EXACT_BACKEND)
#: Largest number of subexperiments a run starts without being asked to: at a few milliseconds
#: each on a laptop's simulator, a run of this size answers in minutes.
DEFAULT_MAX_SUBEXPERIMENTS = 10_000


@dataclass
class RunConfig:
    """Parameters of a cutting run. Defaults are the paper's experiment: N=10, K=3 (216 terms)."""

    qubits: int = 10
    cuts: int = 3
    shots: int = 4096
    seed: int = 7
    policy: str = "telemetry"
    backends: tuple[str, ...] = BACKEND_CLASSES
    run_dir: Path = field(default_factory=lambda: Path("runs/latest"))
    observables: tuple[str, ...] | None = None
    #: user circuit (QPY or OpenQASM 3) instead of the built-in ansatz, with its A/B partition
    circuit_file: Path | None = None
    partition: str | None = None
    #: IQM fake backend class used as the embedded QPU when no real server is configured
    qpu_backend: str = DEFAULT_QPU_SPEC
    policy_model: Path | None = None
    #: the admin's policy knobs file (``policy.admin``: ε, weights, priors, loop cadence)
    policy_config: Path | None = None
    #: Prometheus base URL the scheduling loop reads live health and Kueue queues from (None: off)
    prometheus: str | None = None
    #: read QPU health from our DRA driver's ResourceSlice device taints at every re-plan
    #: (``policy.cluster_health``)
    cluster_health: bool = False
    #: the kubeconfig ``cluster_health`` reads through (None: the pod's service account, else
    #: ``$KUBECONFIG`` or ``~/.kube/config``)
    kubeconfig: Path | None = None
    #: largest predicted error of one subexperiment's result the policy accepts (None: its
    #: default); see docs/policy.md for what it bounds
    error_budget: float | None = None
    #: refuse (exit 2) instead of running on the least-error backend when no backend meets it
    require_budget: bool = False
    #: upper bound on subexperiments per submitted job (per-job overhead amortised over these)
    batch_size: int = 64
    max_attempts: int = 3
    cpu_workers: int = 1
    #: find cuts automatically (qiskit-addon-cutting's find_cuts) so subcircuits fit this width
    max_subcircuit_width: int | None = None
    #: draw this many samples from the QPD instead of running every term (None: every term)
    num_samples: int | None = None
    #: refuse to start a run with more subexperiments than this
    max_subexperiments: int = DEFAULT_MAX_SUBEXPERIMENTS
    #: error mitigation of QPU results: none | readout | zne (readout plus zero-noise extrapolation)
    mitigation: str = "readout"
    zne_scales: tuple[int, ...] = DEFAULT_SCALES
    zne_extrapolation: str = DEFAULT_EXTRAPOLATION
    zne_fold: str = DEFAULT_FOLD
    #: measure each QPU batch's error against exact ideal values (cheap: subexperiments are
    #: small) and record it in telemetry, so ``policy fit`` learns per mitigation level
    observe_errors: bool = True
    #: widest QPU subexperiment (qubits + clbits) whose error is measured by exact simulation; a
    #: batch with none that narrow is measured by a mirror circuit in its job instead
    #: (pipeline.mitigation.mirror). Tests lower it to exercise the mirror on small circuits.
    exact_probe_max_width: int = OBSERVED_ERROR_MAX_WIDTH

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.backends = tuple(self.backends)
        if self.observables is not None:
            self.observables = tuple(self.observables)
        for name in self.backends:
            if name not in BACKEND_CHOICES:
                raise PipelineError(f"unknown backend {name!r}: choose from {', '.join(BACKEND_CHOICES)}")
        if EXACT_BACKEND in self.backends and len(self.backends) > 1:
            raise PipelineError("--backends exact runs alone: exact and sampled results are not mixed")
        from policy.registry import POLICY_NAMES

        if self.policy not in POLICY_NAMES:
            raise PipelineError(f"unknown policy {self.policy!r}: choose one of {', '.join(POLICY_NAMES)}")
        if self.error_budget is not None and not 0.0 <= self.error_budget <= 1.0:
            raise PipelineError(f"error budget must be in [0, 1], got {self.error_budget}")
        if not self.backends:
            raise PipelineError(f"no backends given: choose from {', '.join(BACKEND_CHOICES)}")
        if self.shots < 1:
            raise PipelineError(f"shots must be at least 1, got {self.shots}")
        if self.batch_size < 1:
            raise PipelineError(f"batch size must be at least 1, got {self.batch_size}")
        if self.max_subcircuit_width is not None and self.max_subcircuit_width < 1:
            raise PipelineError(f"--max-subcircuit-width must be at least 1, got {self.max_subcircuit_width}")
        if self.num_samples is not None and self.num_samples < 1:
            raise PipelineError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.max_subexperiments < 1:
            raise PipelineError(f"--max-subexperiments must be at least 1, got {self.max_subexperiments}")
        self.zne_scales = tuple(int(s) for s in self.zne_scales)
        try:
            self.mitigation_config()
        except ValueError as exc:
            raise PipelineError(str(exc)) from None

    @property
    def exact(self) -> bool:
        """The run computes exact distributions (``--backends exact``), not sampled shots."""
        return self.backends == (EXACT_BACKEND,)

    def mitigation_config(self) -> MitigationConfig:
        """The mitigation QPU results get (:mod:`pipeline.mitigation`)."""
        return MitigationConfig(
            level=self.mitigation,
            zne_scales=self.zne_scales,
            extrapolation=self.zne_extrapolation,
            fold=self.zne_fold,
        )

    def to_json(self) -> dict[str, Any]:
        """The config as stored in ``manifest.json``."""
        data: dict[str, Any] = serde.to_json(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        """Read :meth:`to_json` output back (unknown keys ignored, missing ones defaulted)."""
        return serde.from_json(cls, data)
