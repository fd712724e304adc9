"""The mirror probe: a QPU's error measured on subexperiments too wide to simulate.

The exact probe (``pipeline.mitigation.observed``) compares a batch's results with ideal values
it computes by statevector simulation, so it stops at
:data:`~policy.interface.OBSERVED_ERROR_MAX_WIDTH` qubits plus clbits. For a wider QPU batch the
pipeline appends ONE *mirror circuit* to the same job: the unitary part ``U`` of one of the
batch's subexperiments (the one with the most two-qubit gates; measurements, resets, classical
control and barriers stripped), a barrier, then ``U†``, and every qubit of ``U`` measured. Its
ideal outcome is ``|0…0⟩``, so it measures the device with no classical simulation at all.

Which statistic: the fraction of shots that read ``0…0`` (not the mean all-qubit parity).

* It is the quantity the error prior is made of. The prior ``1 − f2q^{n2q} · fro^{n_measured}``
  is one minus the probability that no gate error and no readout flip happened; the mirror's
  ``P(0…0)`` is that same probability for ``U·U†`` (twice the gates, every qubit read once). So
  a measured gate survival slots into the prior's own shape for every mitigation level
  (:func:`policy.models.error_from_survival`), and the learned factor stays comparable to the
  calibration's prediction.
* It sees every error that moves the state, including an even number of bit flips, which
  leaves the parity unchanged: for a budget, under- rather than over-counting errors is the
  risk.
* It is binomial with a known variance at any width.

Conversion (:func:`mirror_error`): the mirror's survival is ``F = P(0…0)`` (an error that
moved the state rarely moves it back: no random-outcome floor is taken off, which would be right
only for a globally depolarised register). One probe measures one number, so the model has one
free parameter: the device is ``k`` times as bad, in log-fidelity, as its published calibration
says, every error source alike. The calibration predicts the
mirror's log-survival ``L_m = 2·n2q·ln f2q + n·ln fro`` (twice the gates, its ``n`` qubits read
once), so ``k = ln F / L_m``, and the subexperiment's gate and readout survivals are
``f2q^{k·n2q}`` and ``fro^{k·n_measured}``: its error at the row's mitigation level is
:func:`policy.models.error_from_survival` of those, the prior's own shape. ``k = 1`` gives back the
calibration's prediction; with perfect readout this is the plain ``g = sqrt(F)`` gate survival.
The alternative split, "readout is as calibrated, the rest is gates" (``g = sqrt(F / fro^n)``),
reads a readout drift as gate error at half its weight and so under-reports it (by 0.02–0.03 at
an error of 0.35 on drift_gradual's device); attributing in proportion to the calibration errs
the other way when only gates drift (over-reports), which for a budget is the safer side.

Both the pipeline (``pipeline.mitigation.mirror``) and the simulator (``policy.simulator``)
call :func:`mirror_error`, and the simulator uses :func:`mirror_features` for what the mirror
costs and how wrong it comes out, so the two measure the same way.
"""

from __future__ import annotations

import math
from dataclasses import replace

from policy.interface import EXACT_PROBE, MIRROR_PROBE, PROBES, CircuitFeatures
from policy.models import error_from_survival

__all__ = [
    "EXACT_PROBE",
    "MIRROR_PROBE",
    "PROBES",
    "batch_mirror",
    "mirror_error",
    "mirror_features",
    "mirrored_index",
]


def mirror_features(task: CircuitFeatures) -> CircuitFeatures:
    """The mirror circuit of ``task`` as a circuit of its own: twice the layers and gates.

    It runs at the job's shots: an IQM job runs every circuit with one shot count
    (``CircuitJobParameters.shots``), and the mirror rides in the batch's job.
    """
    return replace(
        task,
        key=f"{task.key}/mirror",
        depth=2 * task.depth,
        num_2q_gates=2 * task.num_2q_gates,
        num_clbits=task.num_qubits,
        multiplicity=1,
    )


def mirrored_index(tasks: list[CircuitFeatures]) -> int:
    """Which subexperiment of a batch is mirrored: the most two-qubit gates (first on ties)."""
    return max(range(len(tasks)), key=lambda i: (tasks[i].num_2q_gates, -i))


def batch_mirror(tasks: list[CircuitFeatures], exact_max_width: int) -> CircuitFeatures | None:
    """The mirror circuit a QPU batch of ``tasks`` carries, or None when the exact probe covers it.

    The exact probe measures a batch with any subexperiment of at most ``exact_max_width`` qubits
    plus clbits; a batch with none gets the mirror of :func:`mirrored_index`'s subexperiment.
    What it costs is part of the batch's QPU time, so the dry run's rehearsal counts it too.
    """
    if not tasks or any(t.num_qubits + t.num_clbits <= exact_max_width for t in tasks):
        return None
    return mirror_features(tasks[mirrored_index(tasks)])


def mirror_error(
    zero_fraction: float,
    mirror_qubits: int,
    task: CircuitFeatures,
    fidelity_2q: float,
    readout_fidelity: float,
    mitigation: str = "none",
) -> float:
    """Estimated error of ``task``'s result at ``mitigation`` from its mirror's ``0…0`` fraction.

    ``mirror_qubits`` is how many qubits the mirror measured (those ``U`` acts on);
    ``fidelity_2q`` and ``readout_fidelity`` are the published calibration. See the module
    docstring for the model.
    """
    survival = min(max(zero_fraction, 0.0), 1.0)
    if survival <= 0.0:
        return 1.0
    log_f2q = math.log(min(max(fidelity_2q, 1e-9), 1.0))
    log_fro = math.log(min(max(readout_fidelity, 1e-9), 1.0))
    predicted = 2 * task.num_2q_gates * log_f2q + mirror_qubits * log_fro
    measured = task.num_clbits or task.num_qubits
    if predicted < -1e-12:
        k = math.log(survival) / predicted
        gates, readout = math.exp(k * task.num_2q_gates * log_f2q), math.exp(k * measured * log_fro)
    else:  # a calibration that predicts no error at all: every error seen is the gates'
        gates, readout = math.sqrt(survival), 1.0
    return float(min(max(error_from_survival(gates, readout, mitigation), 0.0), 1.0))
