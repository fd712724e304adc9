"""The real IQM server path: connect with iqm-client, run batches as jobs, fail in one clear line.

Why its own module: the remote path has concerns the noisy fake does not. Authentication comes
from exactly one source (iqm-client 36 refuses a token file given both as an argument and via
``IQM_TOKENS_FILE``, which is how the device plugin injects it). Every failure must name the
server and never the token. A job already submitted must not be paid for twice when the
executor retries a batch: the retry re-attaches to it, and resubmits only if the server says
it failed or was cancelled. And a run stopped with SIGTERM cancels its jobs on the server.

The client is assembled as ``IQMProvider.get_backend`` does (``IQMServerClient`` →
``IQMClient`` → ``qiskit_iqm.IQMBackend``), with the request timeout it does not expose.
Knobs, from the environment (as injected into a pod): ``IQM_QUANTUM_COMPUTER`` (which QC, when
the server has several), ``QUBELET_IQM_REQUEST_TIMEOUT`` (seconds per HTTP request, default
120), ``QUBELET_IQM_JOB_TIMEOUT`` (seconds to wait for one job, default 3600), and for the
health check the policy sees (:meth:`RemoteIQM.health_check`) ``QUBELET_IQM_HEALTH_TTL``
(seconds a verdict is reused, default 30) and ``QUBELET_IQM_HEALTH_TIMEOUT`` (seconds one check
may take, default 5).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from qiskit import QuantumCircuit

from pipeline.backends.base import Counts
from pipeline.backends.health import DEFAULT_HEALTH_TIMEOUT, DEFAULT_HEALTH_TTL
from pipeline.backends.reservation import ReservationWindow
from pipeline.errors import BackendFailedError, BackendUnavailableError, RunTerminated
from qubelet import klog

if TYPE_CHECKING:
    from pipeline.mitigation.readout import ReadoutError

log = klog.get_logger("qubelet.pipeline")

ENV_QUANTUM_COMPUTER = "IQM_QUANTUM_COMPUTER"
ENV_REQUEST_TIMEOUT = "QUBELET_IQM_REQUEST_TIMEOUT"
ENV_JOB_TIMEOUT = "QUBELET_IQM_JOB_TIMEOUT"
ENV_HEALTH_TTL = "QUBELET_IQM_HEALTH_TTL"
ENV_HEALTH_TIMEOUT = "QUBELET_IQM_HEALTH_TIMEOUT"
DEFAULT_REQUEST_TIMEOUT = 120.0
DEFAULT_JOB_TIMEOUT = 3600.0
_TOKEN_ENV = ("IQM_TOKEN", "IQM_TOKENS_FILE")


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BackendUnavailableError(f"{name}={raw!r}: not a number of seconds") from None
    if value <= 0:
        raise BackendUnavailableError(f"{name}={raw!r}: must be positive")
    return value


def split_server_url(url: str, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """Base URL and quantum computer from a URL that may name the QC in its path.

    The inventory (and so the device plugin and DRA driver) injects URLs such as
    ``https://qpu.example.com/apollo``; iqm-client 36 wants the base URL and the QC apart.
    ``IQM_QUANTUM_COMPUTER``, when set, wins over the path.
    """
    parsed = urlparse(url)
    segments = [s for s in parsed.path.split("/") if s]
    chosen = environ.get(ENV_QUANTUM_COMPUTER) or None
    if not segments:
        return url.rstrip("/"), chosen
    base = parsed._replace(path="/".join(["", *segments[:-1]]), params="", query="", fragment="").geturl()
    return base.rstrip("/"), chosen or segments[-1]


def auth_arguments(tokens_file: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The authentication keyword arguments for iqm-client: from one source only.

    iqm-client reads ``IQM_TOKEN``/``IQM_TOKENS_FILE`` itself and raises if an argument is given
    too. So when the environment carries the token file (the device plugin's contract) nothing
    is passed; an explicit argument is used only when the environment has none.
    """
    given = [name for name in _TOKEN_ENV if environ.get(name)]
    if len(given) > 1:
        raise BackendUnavailableError("IQM_TOKEN and IQM_TOKENS_FILE are both set: set only one")
    env_file = environ.get("IQM_TOKENS_FILE")
    if env_file and tokens_file is not None and Path(env_file).resolve() != tokens_file.resolve():
        raise BackendUnavailableError(
            f"IQM_TOKENS_FILE={env_file} differs from the configured token file {tokens_file}: set only one"
        )
    if given:
        return {}
    return {"tokens_file": str(tokens_file)} if tokens_file is not None else {}


def _secrets(tokens_file: Path | None, environ: Mapping[str, str]) -> list[str]:
    """Token values that must never appear in a message (read only to scrub them out)."""
    values = [environ.get("IQM_TOKEN") or ""]
    try:
        data = json.loads(tokens_file.read_text()) if tokens_file is not None else {}
        if isinstance(data, dict):
            values += [str(v) for k, v in data.items() if "token" in k and v]
    except (OSError, ValueError):
        pass
    return [v for v in values if len(v) >= 8]


def describe_failure(exc: BaseException, server: str, tokens_file: Path | None, timeout: float) -> str:
    """One line for an iqm-client or transport failure: names the server, states the reason."""
    import requests
    from exa.common.errors.iqm_error import (
        AuthenticationError,
        ForbiddenError,
        IQMError,
        OperationTimeoutError,
    )
    from iqm.station_control.client.authentication import (
        ClientAuthenticationError,
        ClientConfigurationError,
    )

    source = f"token file {tokens_file}" if tokens_file is not None else "token"
    if isinstance(exc, AuthenticationError | ForbiddenError):
        reason = f"rejected the {source} ({type(exc).__name__}: {exc})"
    elif isinstance(exc, ClientAuthenticationError):
        reason = f"cannot use the {source}: {exc}"
    elif isinstance(exc, ClientConfigurationError):
        reason = f"client configuration refused: {exc}"
    elif isinstance(exc, OperationTimeoutError | requests.Timeout):
        reason = f"no answer within {timeout:g} s ({exc})"
    elif isinstance(exc, requests.ConnectionError):
        reason = "cannot connect (connection refused or host unreachable)"
    elif isinstance(exc, IQMError):
        reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return " ".join(f"IQM server {server}: {reason}".split())


def submission_fingerprint(circuits: Sequence[QuantumCircuit], shots: int, extra: str = "") -> str:
    """Identity of a submission: what was asked for, not how it was compiled.

    Built from the *input* circuits in canonical form (the run directory's content keys), the
    shots and anything else that changes the job (``extra``: seeds, ZNE scales), so a retry in
    this process and a resumed run in another one find the same job.
    """
    from pipeline.store import canonical_qpy

    digest = hashlib.sha256(f"{shots}|{extra}|".encode())
    for circuit in circuits:
        digest.update(hashlib.sha256(canonical_qpy(circuit)).digest())
    return digest.hexdigest()


class RemoteIQM:
    """A connection to one quantum computer of an IQM server, through iqm-client."""

    def __init__(
        self, server_url: str, tokens_file: Path | None, environ: Mapping[str, str] | None = None
    ) -> None:
        environ = os.environ if environ is None else environ
        self.server = server_url
        self.tokens_file = tokens_file
        self.request_timeout = _seconds(environ, ENV_REQUEST_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
        self.job_timeout = _seconds(environ, ENV_JOB_TIMEOUT, DEFAULT_JOB_TIMEOUT)
        self.health_ttl = _seconds(environ, ENV_HEALTH_TTL, DEFAULT_HEALTH_TTL)
        self.health_timeout = _seconds(environ, ENV_HEALTH_TIMEOUT, DEFAULT_HEALTH_TIMEOUT)
        #: the connection health checks use: its own, with the short timeout (built on first use)
        self._health_transport: Any = None
        self._secrets = _secrets(tokens_file, environ)
        self._lock = threading.Lock()
        #: submission fingerprint -> job id, for jobs not known to have finished well
        self._journal: dict[str, str] = {}
        #: where submitted jobs are also recorded, so a run killed outright re-attaches on resume
        self.journal_dir: Path | None = None
        self._in_flight: dict[str, Any] = {}
        #: the QPU reservation this pod was given (jobs go to its timeslot), or None
        self.reservation = ReservationWindow.from_env(environ)
        base_url, quantum_computer = split_server_url(server_url, environ)
        try:
            from iqm.iqm_client import IQMClient
            from iqm.iqm_server_client.iqm_server_client import IQMServerClient
            from iqm.iqm_server_client.iqm_server_executor import IQMServerExecutor
            from iqm.iqm_server_client.iqm_server_storage import IQMServerStorage
            from iqm.qiskit_iqm.iqm_provider import IQMBackend as QiskitIQMBackend

            auth = auth_arguments(tokens_file, environ)
            self._transport_arguments: dict[str, Any] = {
                "quantum_computer": quantum_computer,
                "tokens_file": auth.get("tokens_file"),
                "client_signature": "qubelet",
            }
            self._base_url = base_url
            transport = IQMServerClient(base_url, timeout=self.request_timeout, **self._transport_arguments)
            self.client = IQMClient(
                executor=IQMServerExecutor(client=transport), storage=IQMServerStorage(client=transport)
            )
            self.backend = QiskitIQMBackend(self.client)
        except BackendUnavailableError:
            raise
        except Exception as exc:  # every failure is a one-liner, the token never in it
            raise BackendUnavailableError(self._describe(exc)) from None
        self._metrics: Any = None
        self.fidelity_2q, self.readout_fidelity = self._calibration()

    def _describe(self, exc: BaseException) -> str:
        message = describe_failure(exc, self.server, self.tokens_file, self.request_timeout)
        for secret in self._secrets:
            message = message.replace(secret, "<redacted>")
        return message

    def _calibration(self) -> tuple[float | None, float | None]:
        """Mean CZ and readout fidelity from the server's quality metrics (best effort)."""
        try:
            from iqm.station_control.client.qon import ObservationFinder

            calset = self.backend.architecture.calibration_set_id
            metrics = self.client.get_quality_metric_set(calset)
            finder = ObservationFinder(metrics.observations, skip_unparseable=True)
            gates = self.backend.architecture.gates
            self._metrics = finder
        except Exception as exc:
            log.warning("IQM quality metrics unavailable", server=self.server, err=self._describe(exc))
            return None, None

        def mean_fidelity(gate: str) -> float | None:
            info = gates.get(gate)
            if info is None:
                return None
            values = [
                f
                for impl, impl_info in info.implementations.items()
                for locus in impl_info.loci
                if (f := finder.get_gate_fidelity(gate, impl, locus)) is not None
            ]
            return sum(values) / len(values) if values else None

        return mean_fidelity("cz"), mean_fidelity("measure")

    def health_check(self) -> None:
        """Return if the server says this quantum computer can take work; raise why not.

        Two requests through iqm-client, on a connection of its own whose requests time out
        after ``health_timeout`` seconds: ``IQMClient.get_health`` (``GET
        quantum-computers/{qc}/health``; any answer but an error status counts, since
        iqm-client passes its body on unparsed and documents no fields) and the default
        calibration's dynamic quantum architecture (``GET calibration-sets/{qc}/default/
        dynamic-quantum-architecture``), which every job needs: a QPU whose calibration cannot
        be read cannot run one. Called by :class:`~pipeline.backends.health.CachedHealthCheck`,
        which bounds it in time and caches the verdict.

        Raises:
            BackendUnavailableError: one line naming the server and the reason, never the token.
        """
        try:
            from iqm.iqm_server_client.iqm_server_client import IQMServerClient
            from iqm.iqm_server_client.iqm_server_storage import IQMServerStorage

            if self._health_transport is None:
                self._health_transport = IQMServerClient(
                    self._base_url, timeout=self.health_timeout, **self._transport_arguments
                )
            self._health_transport.get_health()
            IQMServerStorage(client=self._health_transport).get_dynamic_quantum_architecture("default")
        except Exception as exc:
            message = describe_failure(exc, self.server, self.tokens_file, self.health_timeout)
            for secret in self._secrets:
                message = message.replace(secret, "<redacted>")
            raise BackendUnavailableError(message) from None

    def readout_errors(self) -> dict[int, ReadoutError]:
        """Per physical qubit index, the readout errors the server publishes (empty if none).

        Read from the quality metric set (``metrics.ssro.measure.<impl>.<qubit>.error_0_to_1``
        and ``error_1_to_0``), so readout mitigation uses the device's own calibration and never
        spends a job on measuring it.
        """
        from pipeline.mitigation.readout import ReadoutError

        measure = self.backend.architecture.gates.get("measure")
        if self._metrics is None or measure is None:
            return {}
        out: dict[int, ReadoutError] = {}
        for impl, info in measure.implementations.items():
            for locus in info.loci:
                errors = self._metrics.get_measure_errors("measure", impl, locus)
                if errors is not None and len(locus) == 1:
                    index = self.backend.qubit_name_to_index(locus[0])
                    try:
                        out[int(index)] = ReadoutError(p1_given_0=errors[0], p0_given_1=errors[1])
                    except ValueError as exc:
                        log.warning("unusable published readout error", qubit=locus[0], err=str(exc))
        return out

    # --- jobs ---------------------------------------------------------------------------------
    def run(self, compiled: Sequence[QuantumCircuit], shots: int, fingerprint: str) -> list[Counts]:
        """Run device-transpiled circuits as one job; re-attach to it on a retry.

        ``fingerprint`` identifies the submission (see :func:`submission_fingerprint`): a job
        recorded under it is collected instead of being submitted again, unless the server
        says it failed or was cancelled.

        Raises:
            BackendFailedError: the job failed, was cancelled, timed out, or the server could
                not be reached; the message names the server and the job.
        """
        from exa.common.errors.iqm_error import OperationTimeoutError

        job: Any = None
        try:
            job = self._attach_or_submit(fingerprint, compiled, shots)
            job_id = job.job_id()
            with self._lock:
                self._in_flight[job_id] = job
            try:
                job.result(timeout=self.job_timeout)
            except OperationTimeoutError as exc:
                if "didn't finish" not in str(exc):
                    raise
            finally:
                with self._lock:
                    self._in_flight.pop(job_id, None)
            status = job.status().name
            if status == "ERROR":
                errors = " ".join((job.error_message() or "no reason given").split())
                raise BackendFailedError(f"IQM server {self.server}: job {job_id} failed: {errors}")
            if status == "CANCELLED":
                raise BackendFailedError(f"IQM server {self.server}: job {job_id} was cancelled")
            if status != "DONE":
                raise BackendFailedError(
                    f"IQM server {self.server}: job {job_id} did not finish within {self.job_timeout:g} s "
                    "(left running; a retry waits for it again)"
                )
            from uuid import UUID

            measurements = self.client.get_job_measurements(UUID(job_id))
        except BackendFailedError:
            raise
        except RunTerminated as stop:  # SIGTERM while this thread waited: cancel the job first
            if job is not None and job.cancel():
                stop.cancelled.append(f"job {job.job_id()} on IQM server {self.server}")
            raise
        except Exception as exc:
            raise BackendFailedError(self._describe(exc)) from None
        self._forget(fingerprint)
        if len(measurements) != len(compiled):
            raise BackendFailedError(
                f"IQM server {self.server}: job {job_id} returned {len(measurements)} results "
                f"for {len(compiled)} circuits"
            )
        return [counts_from_measurements(m, c, shots) for m, c in zip(measurements, compiled, strict=True)]

    def _attach_or_submit(self, fingerprint: str, compiled: Sequence[QuantumCircuit], shots: int) -> Any:
        known = self._recall(fingerprint)
        if known is not None:
            job = self.backend.retrieve_job(known)
            status = job.status().name
            if status not in ("ERROR", "CANCELLED"):
                log.info("re-attaching to submitted IQM job", server=self.server, job=known, status=status)
                return job
            log.warning(
                "IQM job ended without results, resubmitting", server=self.server, job=known, status=status
            )
        if self.reservation is not None:
            self.reservation.wait_open()
            job = self.backend.run(list(compiled), shots=shots, use_timeslot=True)
            log.info("submitting within reservation", server=self.server, reservation=self.reservation.id)
        else:
            job = self.backend.run(list(compiled), shots=shots)
        self._remember(fingerprint, job.job_id())
        log.info(
            "submitted IQM job", server=self.server, job=job.job_id(), circuits=len(compiled), shots=shots
        )
        return job

    # --- the job journal: in memory, and one small file per job in ``journal_dir`` ---------------
    def _journal_file(self, fingerprint: str) -> Path | None:
        return self.journal_dir / f"{fingerprint}.json" if self.journal_dir is not None else None

    def _recall(self, fingerprint: str) -> str | None:
        with self._lock:
            known = self._journal.get(fingerprint)
        path = self._journal_file(fingerprint)
        if known is None and path is not None:
            try:
                entry = json.loads(path.read_text())
                if entry.get("server") == self.server:
                    known = str(entry["job"])
            except (OSError, ValueError, KeyError, AttributeError):
                pass
        return known

    def _remember(self, fingerprint: str, job_id: str) -> None:
        with self._lock:
            self._journal[fingerprint] = job_id
        path = self._journal_file(fingerprint)
        if path is not None:
            from pipeline.store import write_json

            write_json(path, {"server": self.server, "job": job_id})

    def _forget(self, fingerprint: str) -> None:
        with self._lock:
            self._journal.pop(fingerprint, None)
        path = self._journal_file(fingerprint)
        if path is not None:
            path.unlink(missing_ok=True)

    def cancel_in_flight(self) -> list[str]:
        """Cancel every job this process is waiting for (on SIGTERM); returns their ids."""
        with self._lock:
            jobs = dict(self._in_flight)
        cancelled = []
        for job_id, job in jobs.items():
            try:
                if job.cancel():
                    cancelled.append(job_id)
            except Exception as exc:
                log.warning("IQM job cancel failed", server=self.server, job=job_id, err=self._describe(exc))
        return cancelled


def counts_from_measurements(
    measurements: Mapping[str, Sequence[Sequence[int]]], circuit: QuantumCircuit, shots: int
) -> Counts:
    """Counts from one circuit's raw IQM results, placing each measurement key on its clbit.

    Why not qiskit-iqm's counts strings: they leave out classical registers that no measurement
    wrote (its own documented limitation), which would shift every later bit.
    """
    import numpy as np
    from iqm.qiskit_iqm.qiskit_to_iqm import MeasurementKey

    outcomes = np.zeros(shots, dtype=np.int64)
    for key, column in measurements.items():
        mk = MeasurementKey.from_string(key)
        clbit = circuit.find_bit(circuit.cregs[mk.creg_idx][mk.clbit_idx]).index
        bits = np.asarray(column, dtype=np.int64).reshape(-1)
        if bits.shape[0] != shots:
            raise BackendFailedError(f"measurement {key}: {bits.shape[0]} shots, expected {shots}")
        outcomes |= bits << clbit
    histogram = np.bincount(outcomes, minlength=1 << circuit.num_clbits)
    return Counts.from_samples(histogram, circuit.num_clbits)
