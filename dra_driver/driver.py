"""The driver's node-side logic: prepare and unprepare ResourceClaims (no gRPC here).

``NodePrepareResources`` for one claim: answer from the checkpoint when it is already prepared
(idempotent, no API call); otherwise read the ResourceClaim, check its uid (a claim deleted and
re-created under the same name is another claim), take the allocation results of this driver,
map them to inventory devices by (pool, device), write the CDI spec and persist. Every failure
is a per-claim error string; one bad claim never fails the whole call or the server.
``NodeUnprepareResources`` uses local state only: the claim may be gone from the API already.

Concurrency: each claim has its own lock (:class:`ClaimLocks`), so a ResourceClaim read that
hangs (until the API client's request timeout) delays only the call that waits for that claim,
never prepare or unprepare of another claim. Order of effects, so that a failure at any step
leaves no CDI device that kubelet was told about without a spec, and no spec the checkpoint
does not own for longer than the next start-up sweep:

- prepare: write the CDI spec, persist the checkpoint, then answer; when persisting fails the
  spec is removed again and the claim answers an error (nothing is logged as prepared).
- unprepare: persist the removal, then delete the spec; when persisting fails the claim stays
  prepared (spec kept) and answers an error; kubelet retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dra_driver.cdi import DEFAULT_TOKENS_SECRET, CDIWriter, MissingTokenError
from dra_driver.checkpoint import PreparedClaim, PreparedDevice
from dra_driver.claim_locks import ClaimLocks
from dra_driver.client import ResourceAPI
from dra_driver.devices import QPUDevice
from dra_driver.metrics import DRAMetrics
from dra_driver.state import PreparedClaims
from qubelet import klog
from qubelet.errors import ApiError, NotFound, QubeletError
from qubelet.inventory.names import DRIVER_NAME

log = klog.get_logger("qubelet.dra.driver")


@dataclass(frozen=True)
class ClaimRef:
    """What kubelet names a claim by (the gRPC ``Claim`` message)."""

    namespace: str
    uid: str
    name: str


@dataclass(frozen=True)
class PrepareResult:
    """Per-claim answer: devices, or a one-line error (then devices are ignored by kubelet)."""

    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""


class PrepareError(QubeletError):
    """One claim could not be prepared; ``reason`` labels the error metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class QPUDriver:
    """Prepares claims for the devices in ``devices`` (keyed by (pool, device name))."""

    def __init__(
        self,
        api: ResourceAPI,
        devices: Iterable[QPUDevice],
        cdi_dir: str | Path,
        checkpoint_path: str | Path,
        metrics: DRAMetrics | None = None,
        tokens_dir: str | Path | None = None,
        tokens_secret: str = DEFAULT_TOKENS_SECRET,
    ) -> None:
        self.api = api
        self.devices = {(d.pool, d.name): d for d in devices}
        self.cdi = CDIWriter(cdi_dir, tokens_dir, tokens_secret)
        self.state = PreparedClaims(checkpoint_path)
        self.metrics = metrics or DRAMetrics()
        self.claim_locks = ClaimLocks()
        self.metrics.prepared_claims.set(len(self.state.uids()))

    def _prepare_one(self, ref: ClaimRef) -> PreparedClaim:
        where = f"{ref.namespace}/{ref.name}"
        try:
            claim = self.api.read_resource_claim(ref.namespace, ref.name)
        except NotFound as exc:
            raise PrepareError("not_found", f"resourceclaim {where} not found") from exc
        except ApiError as exc:
            raise PrepareError("api_error", f"read resourceclaim {where}: {api_error_text(exc)}") from exc
        uid = claim.metadata.uid if claim.metadata else None
        if uid != ref.uid:
            raise PrepareError(
                "uid_mismatch", f"resourceclaim {where} has uid {uid}, kubelet asked for {ref.uid}"
            )
        allocation = claim.status.allocation if claim.status else None
        results = allocation.devices.results if allocation and allocation.devices else None
        ours = [r for r in results or [] if r.driver == DRIVER_NAME]
        if not ours:
            raise PrepareError("not_allocated", f"resourceclaim {where} has no allocation for {DRIVER_NAME}")
        picked: list[QPUDevice] = []
        prepared: list[PreparedDevice] = []
        for r in ours:
            device = self.devices.get((r.pool, r.device))
            if device is None:
                raise PrepareError(
                    "unknown_device", f"resourceclaim {where}: device {r.pool}/{r.device} is not on this node"
                )
            picked.append(device)
            prepared.append(
                PreparedDevice(
                    request_names=(r.request,),
                    pool_name=r.pool,
                    device_name=r.device,
                    cdi_device_ids=(),
                    share_id=getattr(r, "share_id", None),
                )
            )
        try:
            ids = self.cdi.write_claim(ref.uid, picked)
        except MissingTokenError as exc:
            raise PrepareError("missing_token", f"resourceclaim {where}: {exc}") from exc
        except OSError as exc:
            what = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
            raise PrepareError("cdi_error", f"write CDI spec for {where}: {what}") from exc
        devices = tuple(
            PreparedDevice(p.request_names, p.pool_name, p.device_name, (cdi_id,), p.share_id)
            for p, cdi_id in zip(prepared, ids, strict=True)
        )
        return PreparedClaim(namespace=ref.namespace, name=ref.name, uid=ref.uid, devices=devices)

    def prepare(self, claims: Iterable[ClaimRef]) -> dict[str, PrepareResult]:
        """NodePrepareResources: one result per claim uid."""
        start = time.perf_counter()
        refs = list(claims)
        out: dict[str, PrepareResult] = {}
        new: list[PreparedClaim] = []
        with self.claim_locks.hold(ref.uid for ref in refs):
            for ref in refs:
                if ref.uid in out:
                    continue  # the same claim twice in one call
                known = self.state.get(ref.uid)
                if known is not None:
                    out[ref.uid] = PrepareResult(devices=known.devices)
                    continue
                try:
                    claim = self._prepare_one(ref)
                except PrepareError as exc:
                    self.metrics.prepare_errors.labels(reason=exc.reason).inc()
                    log.warning(
                        "prepare failed", claim=f"{ref.namespace}/{ref.name}", uid=ref.uid, err=str(exc)
                    )
                    out[ref.uid] = PrepareResult(error=str(exc))
                    continue
                except Exception as exc:
                    # Not a known failure (a client error nobody translated, a bug): this claim
                    # fails, and the claims already prepared in this call are still persisted
                    # below instead of leaving their CDI specs unowned.
                    self.metrics.prepare_errors.labels(reason="internal").inc()
                    text = str(exc).splitlines()[0] if str(exc) else ""
                    where = f"{ref.namespace}/{ref.name}"
                    why = f"prepare {where}: internal error: {type(exc).__name__} {text}".strip()
                    log.error("prepare failed", claim=f"{ref.namespace}/{ref.name}", uid=ref.uid, err=why)
                    out[ref.uid] = PrepareResult(error=why)
                    continue
                new.append(claim)
                out[ref.uid] = PrepareResult(devices=claim.devices)
            try:
                self.state.add_many(new)
            except OSError as exc:
                # Not persisted means not prepared: kubelet retries, and no orphan spec stays.
                why = f"write checkpoint: {exc.strerror or exc}"
                for claim in new:
                    self._remove_spec_quietly(claim.uid)
                    self.metrics.prepare_errors.labels(reason="checkpoint_error").inc()
                    out[claim.uid] = PrepareResult(error=why)
                log.error("prepare failed: checkpoint not written", claims=len(new), err=why)
                new = []
            self.metrics.prepared_claims.set(len(self.state.uids()))
        for claim in new:
            log.info(
                "prepared claim",
                claim=f"{claim.namespace}/{claim.name}",
                uid=claim.uid,
                devices=",".join(d.device_name for d in claim.devices),
            )
        self.metrics.prepare_duration.observe(time.perf_counter() - start)
        return out

    def sweep_orphan_specs(self) -> list[str]:
        """Remove CDI specs that no checkpointed claim owns (start-up, before serving)."""
        try:
            removed = self.cdi.sweep(set(self.state.uids()))
        except OSError as exc:
            log.error(
                "could not sweep orphan CDI specs", dir=str(self.cdi.cdi_dir), err=exc.strerror or str(exc)
            )
            return []
        if removed:
            log.info("removed orphan CDI specs", count=len(removed), uids=",".join(removed))
        return removed

    def _remove_spec_quietly(self, uid: str) -> None:
        """Remove a spec on an error path; a failure here is left to the start-up sweep."""
        try:
            self.cdi.remove_claim(uid)
        except OSError as exc:
            log.warning(
                "could not remove CDI spec; start-up sweep will", uid=uid, err=exc.strerror or str(exc)
            )

    def unprepare(self, claims: Iterable[ClaimRef]) -> dict[str, str]:
        """NodeUnprepareResources from local state: uid → error ("" on success, also for unknown)."""
        start = time.perf_counter()
        refs = list(claims)
        out: dict[str, str] = {}
        removed: list[PreparedClaim] = []
        with self.claim_locks.hold(ref.uid for ref in refs):
            try:
                removed = self.state.remove_many([ref.uid for ref in refs])
            except OSError as exc:
                # The claims stay prepared (checkpoint and spec untouched); kubelet retries.
                for ref in refs:
                    out[ref.uid] = f"write checkpoint: {exc.strerror or exc}"
                log.error("unprepare failed: checkpoint not written", claims=len(refs), err=out[refs[0].uid])
            else:
                for ref in refs:
                    try:
                        self.cdi.remove_claim(ref.uid)
                        out[ref.uid] = ""
                    except OSError as exc:
                        # Already forgotten: a retry removes the spec, so does the start-up sweep.
                        out[ref.uid] = f"remove CDI spec of {ref.namespace}/{ref.name}: {exc.strerror or exc}"
            self.metrics.prepared_claims.set(len(self.state.uids()))
        for claim in removed:
            log.info("unprepared claim", claim=f"{claim.namespace}/{claim.name}", uid=claim.uid)
        self.metrics.unprepare_duration.observe(time.perf_counter() - start)
        return out


def api_error_text(exc: ApiError) -> str:
    """A short reason for a failed API call; a timeout says so in words."""
    reason = exc.reason or str(exc)
    if "timeout" in reason.lower():
        return f"API request timed out ({reason})"
    return reason
