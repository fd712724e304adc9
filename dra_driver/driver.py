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

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dra_driver.cdi import DEFAULT_TOKENS_SECRET, CDIWriter, MissingTokenError, cdi_device_id
from dra_driver.checkpoint import PreparedClaim, PreparedDevice
from dra_driver.claim_locks import ClaimLocks
from dra_driver.client import ResourceAPI
from dra_driver.devices import QPUDevice
from dra_driver.metrics import DRAMetrics
from dra_driver.reservations.status import reservation_env
from dra_driver.state import PreparedClaims
from qubelet import klog
from qubelet.errors import ApiError, NotFound, QubeletError
from qubelet.inventory.names import DRIVER_NAME
from qubelet.inventory.tokens import TOKENS_ROOT, TokenRefused

log = klog.get_logger("qubelet.dra.driver")

#: One NodePrepareResources call answers within this many seconds, whatever the API does
#: (kubelet gives up after 45 s; the margin covers writing the specs and the checkpoint).
PREPARE_DEADLINE_SECONDS = 30.0
#: A claim whose read did not answer by the deadline.
_UNREAD = object()


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
        prepare_deadline: float = PREPARE_DEADLINE_SECONDS,
        tokens_root: str | Path = TOKENS_ROOT,
        tokens_gid: int | None = None,
    ) -> None:
        self.api = api
        self.devices = {(d.pool, d.name): d for d in devices}
        self.cdi = CDIWriter(cdi_dir, tokens_dir, tokens_secret, tokens_root, tokens_gid)
        self.state = PreparedClaims(checkpoint_path)
        self.metrics = metrics or DRAMetrics()
        self.claim_locks = ClaimLocks()
        self.metrics.prepared_claims.set(len(self.state.uids()))
        self.prepare_deadline = prepare_deadline
        #: set when the plugin stops: a prepare waiting on the API answers at once
        self.stopping = threading.Event()

    def _read_claims(self, refs: list[ClaimRef], deadline: float) -> dict[str, Any]:
        """Read the claims in parallel, once each; uid → claim or the exception its read raised.

        A claim whose read has not answered by ``deadline`` (``time.monotonic``), or when the
        plugin is stopping, is absent from the result. The reads run in daemon threads: one the
        deadline left behind ends at its request timeout and never holds the process at exit.
        """
        results: dict[str, Any] = {}
        answered = threading.Condition()

        def read(ref: ClaimRef) -> None:
            value: Any
            try:
                value = self.api.read_resource_claim(ref.namespace, ref.name)
            except Exception as exc:
                value = exc
            with answered:
                results[ref.uid] = value
                answered.notify_all()

        for ref in refs:
            threading.Thread(target=read, args=(ref,), name=f"read-claim-{ref.uid}", daemon=True).start()
        with answered:
            while len(results) < len(refs) and not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                answered.wait(min(left, 0.2))
            return dict(results)

    def _prepare_one(self, ref: ClaimRef, read: Any) -> PreparedClaim:
        """Prepare one claim from its read (a claim object, the read's exception, or ``_UNREAD``)."""
        where = f"{ref.namespace}/{ref.name}"
        if read is _UNREAD:
            if self.stopping.is_set():
                raise PrepareError("shutting_down", f"read resourceclaim {where}: plugin is shutting down")
            raise PrepareError(
                "timeout",
                f"read resourceclaim {where}: API request timed out "
                f"(no answer within the {self.prepare_deadline:g} s prepare deadline)",
            )
        if isinstance(read, NotFound):
            raise PrepareError("not_found", f"resourceclaim {where} not found") from read
        if isinstance(read, ApiError):
            raise PrepareError("api_error", f"read resourceclaim {where}: {api_error_text(read)}") from read
        if isinstance(read, Exception):
            raise read
        claim = read
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
        #: a reservation granted before binding reaches the container as env (docs/dra-driver.md)
        reserved = {r.device: env for r in ours if (env := reservation_env(claim, r.pool, r.device))}
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
            ids = self.cdi.write_claim(ref.uid, picked, ref.namespace, reserved)
        except MissingTokenError as exc:
            raise PrepareError("missing_token", f"resourceclaim {where}: {exc}") from exc
        except TokenRefused as exc:
            raise PrepareError("token_refused", f"resourceclaim {where}: {exc}") from exc
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
        deadline = time.monotonic() + self.prepare_deadline
        refs = list(claims)
        out: dict[str, PrepareResult] = {}
        new: list[PreparedClaim] = []
        to_read: list[ClaimRef] = []
        with self.claim_locks.hold(ref.uid for ref in refs):
            for ref in refs:
                if ref.uid in out or any(r.uid == ref.uid for r in to_read):
                    continue  # the same claim twice in one call
                known = self.state.get(ref.uid)
                if known is not None and not known.recovered:
                    out[ref.uid] = PrepareResult(devices=known.devices)
                    continue
                to_read.append(ref)
            reads = self._read_claims(to_read, deadline)
            for ref in to_read:
                try:
                    claim = self._prepare_one(ref, reads.get(ref.uid, _UNREAD))
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
                    if self.state.get(claim.uid) is None:  # a recovered claim's spec stays live
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

    def restore(self) -> None:
        """Start-up, before serving: make checkpoint and device files agree again, losing nothing.

        - The checkpoint was unusable (set aside) or is absent while specs exist: every spec of
          this driver may belong to a running pod, and kubelet will not prepare those claims
          again, so the checkpoint is rebuilt from the specs (entries marked ``recovered``).
        - Otherwise specs the checkpoint does not own are orphans of a kill -9: swept.
        - Checkpointed claims whose spec is gone (``/var/run/cdi`` is a tmpfs: a reboot) get it
          written again, from the inventory, so restarted containers find their CDI devices.
        """
        on_disk = self._spec_uids()
        rebuilt_ok = True
        if self.state.checkpoint_lost or (self.state.checkpoint_missing and on_disk):
            rebuilt_ok = self._rebuild_from_specs(on_disk)
        if rebuilt_ok:
            self.sweep_orphan_specs()
        self._recreate_missing_specs()
        self.metrics.prepared_claims.set(len(self.state.uids()))

    def _spec_uids(self) -> list[str]:
        try:
            return sorted(self.cdi.claim_specs())
        except OSError as exc:
            log.error("could not list CDI specs", dir=str(self.cdi.cdi_dir), err=exc.strerror or str(exc))
            return []

    def _rebuild_from_specs(self, uids: list[str]) -> bool:
        """Checkpoint every spec on disk as a recovered claim; False when that could not be saved."""
        by_name = {d.name: d for d in self.devices.values()}
        rebuilt = []
        for uid in uids:
            if self.state.get(uid) is not None:
                continue
            names = self.cdi.spec_device_names(uid) or []
            devices = tuple(
                PreparedDevice((), by_name[n].pool, n, (cdi_device_id(uid, n),))
                for n in names
                if n in by_name
            )
            rebuilt.append(PreparedClaim(namespace="", name="", uid=uid, devices=devices, recovered=True))
        try:
            self.state.add_many(rebuilt)
        except OSError as exc:
            log.error(
                "could not rebuild checkpoint from CDI specs; keeping every spec",
                specs=len(rebuilt),
                err=exc.strerror or str(exc),
            )
            return False
        if rebuilt:
            log.warning(
                "rebuilt checkpoint from CDI specs",
                claims=len(rebuilt),
                uids=",".join(c.uid for c in rebuilt),
            )
        return True

    def _recreate_missing_specs(self) -> None:
        """Write again the spec of every checkpointed claim that has none (after a reboot)."""
        recreated = []
        for uid in self.state.uids():
            claim = self.state.get(uid)
            if claim is None or claim.recovered or self.cdi.has_spec(uid):
                continue
            picked = [self.devices.get((d.pool_name, d.device_name)) for d in claim.devices]
            missing = [
                f"{d.pool_name}/{d.device_name}"
                for d, p in zip(claim.devices, picked, strict=True)
                if p is None
            ]
            if missing:
                log.error(
                    "cannot recreate CDI spec: device no longer in the inventory",
                    claim=f"{claim.namespace}/{claim.name}",
                    uid=uid,
                    devices=",".join(missing),
                )
                continue
            try:
                self.cdi.write_claim(uid, [p for p in picked if p is not None], claim.namespace)
            except (MissingTokenError, TokenRefused, OSError) as exc:
                log.error(
                    "cannot recreate CDI spec", claim=f"{claim.namespace}/{claim.name}", uid=uid, err=str(exc)
                )
                continue
            recreated.append(uid)
        if recreated:
            log.warning(
                "recreated CDI specs of checkpointed claims", count=len(recreated), uids=",".join(recreated)
            )

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
