"""Each QPU's current calibration, re-read on every resync so its device attributes follow it.

A scheduler selects QPUs on ``fidelity2qPpm``/``readoutFidelityPpm``/``calibrationTime``
(``dra_driver/slices.py``), so those must be the device's *current* numbers, not the ones the
driver started with:

- An IQM QPU (``backend: iqm``) reads the quality metrics of its server's current default
  calibration set (iqm-client ``get_quality_metric_set``): the mean of the CZ gate fidelities
  from interleaved RB (``metrics.irb.cz.<impl>.<QBa__QBb>.fidelity``) and of the ``measure``
  gate's single-shot readout fidelities (``metrics.ssro.measure.<impl>.<QB>.fidelity``; the
  separate ``measure_fidelity`` characterisation is not mixed in), stamped with the set's
  creation time. It is asked at most every
  ``min_interval_seconds``; a failure is logged once per change and the last known (else the
  inventory's) numbers stay.
- A fake QPU (and an IQM QPU before its first answer) takes the inventory file's ``calibration:``
  section, re-read whenever the file changes, so a calibration job or an operator can publish a
  new calibration by editing the ConfigMap.

A changed attribute changes the desired slice, and the reconciler then bumps the pool generation
(``dra_driver/reconcile.py``), so the scheduler never mixes old and new calibrations of a pool.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from qubelet import klog
from qubelet.errors import ConfigError
from qubelet.inventory import QPUConfig, load_config

log = klog.get_logger("qubelet.dra.calibration")


@dataclass(frozen=True)
class Calibration:
    """The numbers a calibration run produced for one QPU."""

    fidelity_2q: float | None
    readout_fidelity: float | None
    time: int | None  #: unix seconds


def apply(qpu: QPUConfig, calibration: Calibration) -> QPUConfig:
    """``qpu`` with ``calibration``'s numbers (unknown ones keep the inventory's)."""
    return dataclasses.replace(
        qpu,
        fidelity_2q=calibration.fidelity_2q if calibration.fidelity_2q is not None else qpu.fidelity_2q,
        readout_fidelity=(
            calibration.readout_fidelity if calibration.readout_fidelity is not None else qpu.readout_fidelity
        ),
        calibration_time=calibration.time if calibration.time is not None else qpu.calibration_time,
    )


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v) and 0.0 < v <= 1.0]
    return sum(finite) / len(finite) if finite else None


def from_quality_metrics(metric_set: Any) -> Calibration:
    """Summarise an IQM quality metric set (``ObservationSetWithObservationData``)."""
    two_qubit: list[float] = []
    readout: list[float] = []
    for observation in getattr(metric_set, "observations", None) or []:
        if getattr(observation, "invalid", False):
            continue
        field = str(getattr(observation, "dut_field", ""))
        try:
            value = float(getattr(observation, "value", math.nan))
        except (TypeError, ValueError):
            continue
        name = field.split(":", 1)[0]
        if not name.endswith(".fidelity"):
            continue
        if name.startswith("metrics.irb.cz."):
            two_qubit.append(value)
        elif name.startswith("metrics.ssro.measure."):
            readout.append(value)
    created = getattr(metric_set, "created_timestamp", None)
    stamp = int(created.timestamp()) if created is not None and hasattr(created, "timestamp") else None
    return Calibration(fidelity_2q=_mean(two_qubit), readout_fidelity=_mean(readout), time=stamp)


def iqm_quality_metrics(qpu: QPUConfig) -> Any:
    """The current quality metric set of an IQM server (network; iqm-client imported lazily)."""
    from iqm.iqm_client import IQMClient

    client = IQMClient.from_url(qpu.endpoint, tokens_file=qpu.tokens_file)
    return client.get_quality_metric_set()


class CalibrationSource:
    """Applies every QPU's current calibration (see the module docstring)."""

    def __init__(
        self,
        inventory_path: str | os.PathLike[str] | None = None,
        *,
        fetch_iqm: Callable[[QPUConfig], Any] = iqm_quality_metrics,
        min_interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inventory_path = None if inventory_path is None else os.fspath(inventory_path)
        self.fetch_iqm = fetch_iqm
        self.min_interval_seconds = min_interval_seconds
        self.clock = clock
        self._inventory_stamp: tuple[float, int] | None = None
        self._from_inventory: dict[str, Calibration] = {}
        self._iqm: dict[str, Calibration] = {}
        self._asked_at: dict[str, float] = {}
        self._last_error: dict[str, str] = {}

    def current(self, qpus: Iterable[QPUConfig]) -> tuple[QPUConfig, ...]:
        """``qpus`` with their current calibration applied."""
        self._reread_inventory()
        out = []
        for qpu in qpus:
            calibration = self._from_inventory.get(qpu.name)
            if qpu.backend == "iqm":
                calibration = self._ask_iqm(qpu) or calibration
            out.append(apply(qpu, calibration) if calibration is not None else qpu)
        return tuple(out)

    def _reread_inventory(self) -> None:
        if self.inventory_path is None:
            return
        try:
            info = os.stat(self.inventory_path)
        except OSError as exc:
            self._warn("inventory", f"cannot stat {self.inventory_path}: {exc.strerror or exc}")
            return
        stamp = (info.st_mtime, info.st_size)
        if stamp == self._inventory_stamp:
            return
        try:
            config = load_config(self.inventory_path)
        except ConfigError as exc:
            self._warn("inventory", f"keeping the last calibration: {exc}")
            return
        self._inventory_stamp = stamp
        self._from_inventory = {
            q.name: Calibration(q.fidelity_2q, q.readout_fidelity, q.calibration_time) for q in config.qpus
        }
        self._last_error.pop("inventory", None)

    def _ask_iqm(self, qpu: QPUConfig) -> Calibration | None:
        now = self.clock()
        asked = self._asked_at.get(qpu.name)
        if asked is not None and now - asked < self.min_interval_seconds:
            return self._iqm.get(qpu.name)
        self._asked_at[qpu.name] = now
        try:
            calibration = from_quality_metrics(self.fetch_iqm(qpu))
        except Exception as exc:  # any client/network failure: keep the last known numbers
            self._warn(qpu.name, f"IQM calibration unavailable: {exc.__class__.__name__}: {exc}")
            return self._iqm.get(qpu.name)
        if calibration.fidelity_2q is None and calibration.readout_fidelity is None:
            self._warn(qpu.name, "IQM quality metrics carry no CZ or readout fidelity")
            return self._iqm.get(qpu.name)
        if self._iqm.get(qpu.name) != calibration:
            log.info(
                "calibration changed",
                qpu=qpu.name,
                fidelity2q=calibration.fidelity_2q,
                readoutFidelity=calibration.readout_fidelity,
                calibrationTime=calibration.time,
            )
        self._iqm[qpu.name] = calibration
        self._last_error.pop(qpu.name, None)
        return calibration

    def _warn(self, key: str, message: str) -> None:
        if self._last_error.get(key) != message:
            log.warning(message, source=key)
            self._last_error[key] = message
