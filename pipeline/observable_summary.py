"""What a run's summary says about each observable: its value, stderr, systematic term, exact value.

The value is the mitigated reconstruction when QPU results carry mitigation data, with the raw
(unmitigated) reconstruction of the same samples beside it. ``stderr`` is the estimator's
statistical error; ``systematic`` the zero-noise extrapolation's model spread
(:mod:`pipeline.mitigation.systematic`, zero without ZNE). Errors are meant to be read against
their combined uncertainty ``sqrt(stderr² + systematic²)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.mitigation.moments import RAW
from pipeline.mitigation.systematic import extrapolation_systematics
from pipeline.reconstruct import reconstruct

if TYPE_CHECKING:
    from pipeline.backends.base import Counts
    from pipeline.stages import Manifest


def observable_estimates(manifest: Manifest, counts: Mapping[str, Counts]) -> list[dict[str, Any]]:
    """One summary entry per observable, in the manifest's order."""
    mitigation = manifest.config.mitigation_config()
    mitigated = mitigation.readout and any(c.readout for c in counts.values())
    if not mitigated:
        mitigation = RAW
    recon = reconstruct(manifest.cut, counts.__getitem__, mitigation=mitigation)
    raw = reconstruct(manifest.cut, counts.__getitem__, mitigation=RAW) if mitigated else recon
    terms_of = [(manifest.observable_terms[n], manifest.weights_of(n)) for n in manifest.observable_names]
    systematics = extrapolation_systematics(manifest.cut, counts, mitigation, recon, terms_of)
    entries = []
    for name, (terms, weights), systematic in zip(
        manifest.observable_names, terms_of, systematics, strict=True
    ):
        value = recon.value_of(terms, weights)
        exact = (
            float(sum(w * manifest.exact[p] for p, w in zip(terms, weights, strict=True)))
            if manifest.exact is not None
            else None
        )
        entry: dict[str, Any] = {
            "name": name,
            "value": value,
            "stderr": recon.stderr_of(terms, weights),
            "systematic": systematic,
            "exact": exact,
            "error": (value - exact) if exact is not None else None,
        }
        if mitigated:
            raw_value = raw.value_of(terms, weights)
            entry["raw"] = {
                "value": raw_value,
                "stderr": raw.stderr_of(terms, weights),
                "error": (raw_value - exact) if exact is not None else None,
            }
        entries.append(entry)
    return entries
