"""Execution backends, one per class: ``cpu`` and ``gpu`` (qiskit-aer), ``qpu`` (IQM).

Every backend takes a batch of cutting subexperiments and returns sampled outcome counts per
circuit, so the reconstruction never needs to know where a subexperiment ran.
"""

from pipeline.backends.base import Backend, Counts
from pipeline.backends.factory import available_backends, make_backend

__all__ = ["Backend", "Counts", "available_backends", "make_backend"]
