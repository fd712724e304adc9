"""Error mitigation of QPU results, applied on the CPU before and during reconstruction.

Three levels (``--mitigation``): ``none``; ``readout`` (tensored confusion inverse,
:mod:`pipeline.mitigation.readout`); ``zne`` (readout, plus zero-noise extrapolation over folded
two-qubit gates, :mod:`pipeline.mitigation.zne`). The QPU backend records, with each result,
the readout error of every measured clbit and, for ``zne``, the counts of the folded circuits.
Everything else happens here, in the reconstruct step: mitigation is a linear map of each
subexperiment's samples, so :func:`subexperiment_moments` returns the mean and covariance the
reconstruction's error propagation already uses, and :func:`quasi_distribution` the (possibly
negative) quasi-probabilities qiskit-addon-cutting's reconstruction takes.
"""

from pipeline.mitigation.levels import MITIGATION_LEVELS, MitigationConfig
from pipeline.mitigation.moments import quasi_distribution, subexperiment_moments

__all__ = ["MITIGATION_LEVELS", "MitigationConfig", "quasi_distribution", "subexperiment_moments"]
