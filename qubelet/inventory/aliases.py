"""One name per QPU from laptop to cluster: a local fake QPU's name, and the inventory's for it.

A laptop run names its embedded QPU after the fake class (``fake:IQMFakeApollo`` is
``qpu:apollo``, :func:`local_qpu_name`); on a cluster the device plugin or DRA driver names it
after the inventory entry (``qpu:apollo-cloud``). The inventory says which fake stands in for
which QPU (``backend: fake:IQMFakeApollo``), so that is the explicit mapping: telemetry and a
policy model fitted on a laptop are read under the cluster's names (:func:`telemetry_aliases`).
"""

from __future__ import annotations

from collections import Counter

from qubelet.inventory.config import Config

FAKE_PREFIX = "fake:"


def local_qpu_name(spec: str) -> str:
    """The name a laptop run gives the embedded QPU ``spec`` (``fake:IQMFakeApollo`` → ``apollo``)."""
    if spec.startswith(FAKE_PREFIX):
        return spec[len(FAKE_PREFIX) :].removeprefix("IQMFake").lower()
    return spec


def telemetry_aliases(config: Config) -> dict[str, str]:
    """Backend names as a laptop records them → the inventory's names for the same QPUs.

    Only unambiguous ones: a fake that stands in for two inventory QPUs maps to neither (its
    telemetry could be either's), and a QPU already named like the fake needs no alias.
    """
    uses = Counter(q.backend for q in config.qpus if q.backend.startswith(FAKE_PREFIX))
    aliases = {}
    for qpu in config.qpus:
        if uses.get(qpu.backend) != 1:
            continue
        local = f"qpu:{local_qpu_name(qpu.backend)}"
        if local != f"qpu:{qpu.name}":
            aliases[local] = f"qpu:{qpu.name}"
    return aliases
