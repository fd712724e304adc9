"""Build the backends a run asked for, reporting the ones this machine cannot offer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline.backends.base import Backend
from pipeline.backends.exact import EXACT, ExactBackend
from pipeline.backends.lazy_qpu import LazyFakeQPUBackend
from pipeline.backends.qpu import IQMBackend, resolve_qpu_target
from pipeline.backends.simulators import AerStatevectorBackend
from pipeline.errors import BackendUnavailableError
from pipeline.mitigation.levels import MitigationConfig
from qubelet.inventory.names import DEFAULT_QPU_SPEC


def make_backend(
    kind: str,
    *,
    qpu_spec: str = DEFAULT_QPU_SPEC,
    cpu_workers: int = 1,
    env: Mapping[str, str] | None = None,
    mitigation: MitigationConfig | None = None,
) -> Backend:
    """One backend of class ``kind``; raises BackendUnavailableError when it cannot run here.

    ``mitigation`` matters to QPUs only: ZNE runs folded copies of each circuit there.
    """
    if kind == "cpu":
        return AerStatevectorBackend("cpu", workers=cpu_workers)
    if kind == "gpu":
        return AerStatevectorBackend("gpu")
    if kind == EXACT:
        return ExactBackend(workers=cpu_workers)
    if kind == "qpu":
        target = resolve_qpu_target(qpu_spec, env)
        # A fake QPU is built on its first batch (most runs give it none); a real one connects now.
        if target.is_fake:
            return LazyFakeQPUBackend(target, mitigation=mitigation)
        return IQMBackend(target, mitigation=mitigation)
    raise BackendUnavailableError(f"unknown backend class {kind!r}")


def available_backends(
    kinds: Sequence[str],
    *,
    qpu_spec: str = DEFAULT_QPU_SPEC,
    cpu_workers: int = 1,
    env: Mapping[str, str] | None = None,
    mitigation: MitigationConfig | None = None,
) -> tuple[list[Backend], dict[str, str]]:
    """The usable backends among ``kinds`` and, for the others, why they are unavailable."""
    usable: list[Backend] = []
    unavailable: dict[str, str] = {}
    for kind in kinds:
        try:
            usable.append(
                make_backend(kind, qpu_spec=qpu_spec, cpu_workers=cpu_workers, env=env, mitigation=mitigation)
            )
        except BackendUnavailableError as exc:
            unavailable[kind] = str(exc)
    return usable, unavailable
