"""IQMServerDouble: an IQM Server on loopback that speaks the REST contract iqm-client 36 uses.

No IQM quantum computer can be reached from here, so this double stands in for one. It serves
exactly the endpoints that ``iqm.iqm_server_client`` (the HTTP layer under ``IQMClient`` and
``qiskit_iqm.IQMBackend``) calls for circuit jobs, under ``/api/v1``:

- ``GET quantum-computers``: the one quantum computer (alias, id, display name);
- ``GET quantum-computers/{qc}/health``: its health (``IQMClient.get_health``);
- ``GET calibration-sets/{qc}/{id|default}``, ``.../metrics``,
  ``.../dynamic-quantum-architecture``: calibration set, quality metric set, DQA;
- ``POST jobs/{qc}/circuit``: submit a ``CircuitJobDefinition`` (``PostJobsRequest``), answered
  with ``JobData``;
- ``GET jobs/{id}``, ``GET jobs/{id}/payload``, ``GET jobs/{id}/artifacts/measurements``,
  ``GET jobs/{id}/artifacts/measurement_counts``, ``POST jobs/{id}/cancel``.

Beside IQM's job API it serves the reservation contract qubelet's DRA controller speaks
(``dra_driver/reservations/http_provider.py``; IQM's API has no booking call, timeslots are
booked outside it): ``POST reservations`` (idempotent on ``idempotency_key``),
``GET reservations?owner=&quantum_computer=`` (pending and granted), ``GET reservations/{id}``,
``DELETE reservations/{id}``. Reservations are granted at once, held ``pending`` until
:meth:`IQMServerDouble.grant_pending`, or refused (``Faults``). A job submitted with
``use_timeslot=true`` is accepted only while a granted reservation's window is open, as IQM
runs timeslot jobs only in a booked slot.

Every body is built from and validated with iqm-client's own pydantic models
(``iqm.station_control.interface.models``), so a shape the real client cannot read fails here
too. Like the real server it checks the ``Authorization: Bearer`` token on every request
(401 with an ``IQMServerError`` body), rejects unknown calibration sets, validates submitted
circuits against its dynamic quantum architecture with iqm-client's validators, and answers
errors in the ``{"message", "error_code", "source"}`` form the client maps to exceptions.

The QPU is IQM's Apollo (20 qubits, from ``IQMFakeApollo``): its architecture and error
profile become the DQA and the quality metrics. Jobs are simulated with Aer from the submitted
IQM instructions (``deserialize_instructions``), seeded per job: gates noise-free, readout with
the published readout errors, so a test can check the physics of what came back. Scripted
faults: failing jobs, jobs that never finish, requests that hang, transient 503s on status
polls, a health check or the default calibration's DQA answering an error, a hung health check.
It records every request, submission and cancel.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

API_PREFIX = "/api/v1/"


def make_token(lifetime_seconds: float = 3600.0) -> str:
    """A JWT-shaped access token with an ``exp`` claim, as iqm-client's tokens-file reader needs."""

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims = {"exp": int(time.time() + lifetime_seconds), "sub": "qubelet-test", "nonce": uuid.uuid4().hex}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


def write_tokens_file(path: Path, token: str) -> Path:
    """The tokens file format iqm-client reads (``{"access_token": ...}``), as IQM's tools write it."""
    path.write_text(json.dumps({"pid": 0, "timestamp": datetime.now(UTC).isoformat(), "access_token": token}))
    return path


@dataclass
class _Job:
    id: uuid.UUID
    definition: Any  # PostJobsRequest
    payload_json: str
    status: str = "waiting"
    errors: list[dict[str, Any]] = field(default_factory=list)
    measurements: list[dict[str, list[list[int]]]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Faults:
    """What the double does wrong, on purpose."""

    #: this many first jobs end ``failed`` with a server error
    fail_jobs: int = 0
    #: jobs stay ``processing`` until cancelled (a QPU queue that never drains)
    stall_jobs: bool = False
    #: every request waits this long before it is answered (a server that hangs)
    hang_seconds: float = 0.0
    #: this many status polls (``GET jobs/{id}``) answer 503 before the next one succeeds
    transient_status_errors: int = 0
    #: the health request (``GET quantum-computers/{qc}/health``) answers this error status
    #: (0: answered normally) — a station down for maintenance
    health_error: int = 0
    #: the default calibration's dynamic quantum architecture answers this error status
    calibration_error: int = 0
    #: the health request alone waits this long before it is answered (a hung status service)
    health_hang_seconds: float = 0.0
    #: new reservations are refused with this reason ("" grants or holds them)
    refuse_reservations: str = ""
    #: new reservations stay ``pending`` until ``grant_pending()``
    hold_reservations: bool = False
    #: this many reservation calls answer 503 before the next one succeeds
    reservation_errors: int = 0


@dataclass
class _Reservation:
    id: str
    key: str
    owner: str
    quantum_computer: str
    duration_seconds: int
    status: str = "pending"
    start: str | None = None
    end: str | None = None
    reason: str = ""

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "idempotency_key": self.key,
            "owner": self.owner,
            "quantum_computer": self.quantum_computer,
            "status": self.status,
            "start": self.start,
            "end": self.end,
            "reason": self.reason,
        }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.double.handle(self, "GET")

    def do_POST(self) -> None:
        self.server.double.handle(self, "POST")

    def do_DELETE(self) -> None:
        self.server.double.handle(self, "DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: IQMServerDouble

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (its timeout) is expected here; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class IQMServerDouble:
    """An IQM Server on ``127.0.0.1`` with one quantum computer; start it with ``running()``."""

    def __init__(self, token: str | None, *, alias: str = "apollo", faults: Faults | None = None) -> None:
        """``token``: the bearer token every request must carry (None: an open server, no auth)."""
        from iqm.qiskit_iqm.fake_backends import IQMFakeApollo

        self.token = token
        self.alias = alias
        self.faults = faults or Faults()
        self.qc_id = uuid.uuid4()
        self.calibration_set_id = uuid.uuid4()
        self._fake = IQMFakeApollo()
        self.dqa = self._make_dqa()
        self._lock = threading.Lock()
        self.jobs: dict[uuid.UUID, _Job] = {}
        #: (method, path) of every request, in arrival order
        self.requests: list[tuple[str, str]] = []
        self.submitted: list[uuid.UUID] = []
        self.cancelled: list[uuid.UUID] = []
        self.rejected_tokens = 0
        #: requests being answered right now (a hung one counts until it is answered)
        self.in_flight = 0
        self.reservations: dict[str, _Reservation] = {}
        #: ids of reservations released by a client, in order
        self.released: list[str] = []
        #: use_timeslot submissions and the reservation whose window they ran in
        self.timeslot_jobs: list[tuple[uuid.UUID, str]] = []
        self._jobs_failed = 0
        self._server: _Server | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the double first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[IQMServerDouble]:
        """Serve on a free loopback port for the ``with`` block."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.double = self
        thread = threading.Thread(target=self._server.serve_forever, name="iqm-double", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)

    def finish_stalled_jobs(self) -> None:
        """Let jobs held ``processing`` by ``stall_jobs`` complete (the queue drains)."""
        with self._lock:
            self.faults.stall_jobs = False
            stalled = [job for job in self.jobs.values() if job.status == "processing"]
        for job in stalled:
            job.measurements = [
                self._simulate(c, job.definition.shots, i, job.id)
                for i, c in enumerate(job.definition.circuits)
            ]
            job.status = "completed"
            self._event(job, "completed")

    def active_reservations(self, owner: str | None = None) -> list[_Reservation]:
        """Pending and granted reservations (of ``owner``, when given)."""
        with self._lock:
            return [
                r
                for r in self.reservations.values()
                if r.status in ("pending", "granted") and (owner is None or r.owner == owner)
            ]

    def grant_pending(self) -> list[str]:
        """Grant every pending reservation now (the provider's queue moved); returns their ids."""
        with self._lock:
            self.faults.hold_reservations = False
            granted = []
            for r in self.reservations.values():
                if r.status == "pending":
                    self._grant(r)
                    granted.append(r.id)
        return granted

    @staticmethod
    def _grant(r: _Reservation) -> None:
        from datetime import timedelta

        now = datetime.now(UTC).replace(microsecond=0)
        r.status = "granted"
        r.start = now.isoformat().replace("+00:00", "Z")
        r.end = (now + timedelta(seconds=r.duration_seconds)).isoformat().replace("+00:00", "Z")

    def _open_window(self) -> _Reservation | None:
        now = datetime.now(UTC)
        for r in self.reservations.values():
            if r.status == "granted" and r.start and r.end:
                start = datetime.fromisoformat(r.start.replace("Z", "+00:00"))
                end = datetime.fromisoformat(r.end.replace("Z", "+00:00"))
                if start <= now < end:
                    return r
        return None

    def _reservation_route(
        self, method: str, rest: list[str], query: dict[str, list[str]], body: bytes
    ) -> tuple[int, Any]:
        with self._lock:
            if self.faults.reservation_errors > 0:
                self.faults.reservation_errors -= 1
                raise _HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "booking service busy, retry", "unavailable")
            match method, rest:
                case "POST", []:
                    try:
                        ask = json.loads(body or b"{}")
                        key, owner = str(ask["idempotency_key"]), str(ask["owner"])
                        qc, duration = str(ask["quantum_computer"]), int(ask["duration_seconds"])
                    except (ValueError, KeyError, TypeError):
                        raise _HTTPError(
                            HTTPStatus.UNPROCESSABLE_ENTITY, "invalid reservation request", "validation"
                        ) from None
                    self._check_qc(qc)
                    for r in self.reservations.values():
                        if r.key == key and r.owner == owner:
                            return 200, r.wire()
                    r = _Reservation(str(uuid.uuid4()), key, owner, qc, duration)
                    if self.faults.refuse_reservations:
                        r.status, r.reason = "refused", self.faults.refuse_reservations
                    elif not self.faults.hold_reservations:
                        self._grant(r)
                    self.reservations[r.id] = r
                    return 201, r.wire()
                case "GET", []:
                    owner = query.get("owner", [None])[0]
                    qc = query.get("quantum_computer", [None])[0]
                    return 200, {
                        "reservations": [
                            r.wire()
                            for r in self.reservations.values()
                            if r.status in ("pending", "granted")
                            and (owner is None or r.owner == owner)
                            and (qc is None or r.quantum_computer == qc)
                        ]
                    }
                case "GET", [rid]:
                    if rid not in self.reservations:
                        raise _HTTPError(HTTPStatus.NOT_FOUND, f"reservation {rid} not found", "not_found")
                    return 200, self.reservations[rid].wire()
                case "DELETE", [rid]:
                    r = self.reservations.get(rid)
                    if r is None:
                        raise _HTTPError(HTTPStatus.NOT_FOUND, f"reservation {rid} not found", "not_found")
                    if r.status in ("pending", "granted"):
                        r.status = "released"
                        self.released.append(rid)
                    return 200, r.wire()
        route = "/".join(rest)
        raise _HTTPError(HTTPStatus.NOT_FOUND, f"no route {method} reservations/{route}", "not_found")

    # --- the static answers ---------------------------------------------------------------------
    def _make_dqa(self) -> Any:
        from iqm.station_control.interface.models import DynamicQuantumArchitecture
        from iqm.station_control.interface.models.dynamic_quantum_architecture import (
            GateImplementationInfo,
            GateInfo,
        )

        implementations = {"prx": "drag_gaussian", "cz": "tgss", "measure": "constant"}
        fake = self._fake.architecture
        gates = {
            name: GateInfo(
                implementations={
                    implementations[name]: GateImplementationInfo(
                        loci=next(iter(info.implementations.values())).loci
                    )
                },
                default_implementation=implementations[name],
                override_default_implementation={},
            )
            for name, info in fake.gates.items()
        }
        return DynamicQuantumArchitecture(
            calibration_set_id=self.calibration_set_id,
            qubits=fake.qubits,
            computational_resonators=fake.computational_resonators,
            gates=gates,
        )

    def expected_fidelities(self) -> tuple[float, float]:
        """Mean CZ fidelity and mean readout fidelity the quality metrics publish."""
        profile = self._fake.error_profile
        cz = [1.0 - p for p in profile.two_qubit_gate_depolarizing_error_parameters["cz"].values()]
        readout = [1.0 - (e["0"] + e["1"]) / 2 for e in profile.readout_errors.values()]
        return sum(cz) / len(cz), sum(readout) / len(readout)

    def _observation_set(self, kind: str) -> dict[str, Any]:
        from iqm.station_control.interface.models import ObservationData
        from iqm.station_control.interface.models.observation_set import (
            ObservationSetType,
            ObservationSetWithObservationData,
        )

        now = datetime.now(UTC)
        profile = self._fake.error_profile
        fields: dict[str, float] = {}
        if kind == "quality-metric-set":
            for locus, p in profile.two_qubit_gate_depolarizing_error_parameters["cz"].items():
                fields[f"metrics.irb.cz.tgss.{'__'.join(locus)}.fidelity"] = 1.0 - p
            for qubit, errors in profile.readout_errors.items():
                fields[f"metrics.ssro.measure.constant.{qubit}.fidelity"] = (
                    1 - (errors["0"] + errors["1"]) / 2
                )
                fields[f"metrics.ssro.measure.constant.{qubit}.error_0_to_1"] = errors["0"]
                fields[f"metrics.ssro.measure.constant.{qubit}.error_1_to_0"] = errors["1"]
            for qubit, p in profile.single_qubit_gate_depolarizing_error_parameters["prx"].items():
                fields[f"metrics.rb.prx.drag_gaussian.{qubit}.fidelity"] = 1.0 - p
        else:
            for qubit, t1 in profile.t1s.items():
                fields[f"characterization.model.{qubit}.t1_time"] = t1
            for qubit, t2 in profile.t2s.items():
                fields[f"characterization.model.{qubit}.t2_time"] = t2
        observations = [
            ObservationData(
                observation_id=i,
                dut_label="M000-W0000-apollo",
                dut_field=name,
                value=value,
                unit="s" if name.endswith("_time") else "",
                source={"type": "analysis_source"},
                created_timestamp=now,
                modified_timestamp=now,
            )
            for i, (name, value) in enumerate(sorted(fields.items()))
        ]
        model = ObservationSetWithObservationData(
            observation_set_type=ObservationSetType(kind),
            dut_label="M000-W0000-apollo",
            observation_set_id=self.calibration_set_id if kind == "calibration-set" else uuid.uuid4(),
            created_timestamp=now,
            end_timestamp=now,
            observations=observations,
            describes_id=self.calibration_set_id if kind != "calibration-set" else None,
        )
        data: dict[str, Any] = model.model_dump(mode="json")
        return data

    # --- request handling -----------------------------------------------------------------------
    def handle(self, handler: _Handler, method: str) -> None:
        """Route one request (runs on the server's request thread)."""
        parsed = urlparse(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append((method, parsed.path))
            self.in_flight += 1
        try:
            self._handle(handler, method, parsed, body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handle(self, handler: _Handler, method: str, parsed: Any, body: bytes) -> None:
        if self.faults.hang_seconds:
            time.sleep(self.faults.hang_seconds)
        try:
            if self.token is not None and handler.headers.get("Authorization") != f"Bearer {self.token}":
                with self._lock:
                    self.rejected_tokens += 1
                raise _HTTPError(HTTPStatus.UNAUTHORIZED, "Invalid or expired access token", "unauthorized")
            if not parsed.path.startswith(API_PREFIX):
                raise _HTTPError(HTTPStatus.NOT_FOUND, f"no route {parsed.path}", "not_found")
            parts = parsed.path[len(API_PREFIX) :].strip("/").split("/")
            status, answer = self._route(method, parts, parse_qs(parsed.query), body)
        except _HTTPError as exc:
            self._error(handler, exc)
            return
        self._send(handler, status, answer)

    def _route(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes
    ) -> tuple[int, Any]:
        match method, parts:
            case _, ["reservations", *rest]:
                return self._reservation_route(method, rest, query, body)
            case "GET", ["quantum-computers"]:
                qc = {"id": str(self.qc_id), "alias": self.alias, "display_name": self.alias.capitalize()}
                return 200, {"quantum_computers": [{**qc, "proxy_path": None}]}
            case "GET", ["quantum-computers", qc, "health"]:
                self._check_qc(qc)
                if self.faults.health_hang_seconds:
                    time.sleep(self.faults.health_hang_seconds)
                self._fail_with(self.faults.health_error)
                # iqm-client passes this body on unparsed (IQMClient.get_health) and documents
                # no fields; qubelet reads only the status code
                return 200, {"status": "healthy"}
            case "GET", ["calibration-sets", qc, calset, *rest]:
                self._check_qc(qc)
                if rest == ["dynamic-quantum-architecture"] and calset == "default":
                    self._fail_with(self.faults.calibration_error)
                if calset not in ("default", str(self.calibration_set_id)):
                    raise _HTTPError(HTTPStatus.NOT_FOUND, f"calibration set {calset} not found", "not_found")
                if rest == ["dynamic-quantum-architecture"]:
                    return 200, self.dqa.model_dump(mode="json")
                if rest == ["metrics"]:
                    return 200, self._observation_set("quality-metric-set")
                if not rest:
                    return 200, self._observation_set("calibration-set")
            case "POST", ["jobs", qc, "circuit"]:
                self._check_qc(qc)
                return 200, self._submit(body, query)
            case "GET", ["jobs", job_id]:
                with self._lock:
                    if self.faults.transient_status_errors > 0:
                        self.faults.transient_status_errors -= 1
                        raise _HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "station busy, retry", "unavailable")
                return 200, self._job_data(self._job(job_id))
            case "GET", ["jobs", job_id, "payload"]:
                return 200, json.loads(self._job(job_id).payload_json)
            case "GET", ["jobs", job_id, "artifacts", "measurements"]:
                return 200, self._completed(self._job(job_id)).measurements
            case "GET", ["jobs", job_id, "artifacts", "measurement_counts"]:
                return 200, self._counts(self._completed(self._job(job_id)))
            case "POST", ["jobs", job_id, "cancel"]:
                job = self._job(job_id)
                with self._lock:
                    if job.status not in ("completed", "failed", "cancelled"):
                        job.status = "cancelled"
                        self._event(job, "cancelled")
                    self.cancelled.append(job.id)
                return 200, None
        raise _HTTPError(HTTPStatus.NOT_FOUND, f"no route {method} /{'/'.join(parts)}", "not_found")

    def _fail_with(self, error: int) -> None:
        if error:
            status = HTTPStatus(error)
            raise _HTTPError(status, f"quantum computer {self.alias}: {status.phrase.lower()}", "unavailable")

    def _check_qc(self, qc: str) -> None:
        if qc not in (self.alias, str(self.qc_id)):
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"quantum computer {qc} not found", "not_found")

    def _job(self, job_id: str) -> _Job:
        try:
            key = uuid.UUID(job_id)
        except ValueError:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"malformed job id {job_id!r}", "validation") from None
        with self._lock:
            job = self.jobs.get(key)
        if job is None:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"job {job_id} not found", "not_found")
        return job

    def _completed(self, job: _Job) -> _Job:
        if job.status != "completed":
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"job {job.id} has no results ({job.status})", "not_found")
        return job

    def _event(self, job: _Job, status: str) -> None:
        job.timeline.append(
            {"source": "iqm-server", "status": status, "timestamp": datetime.now(UTC).isoformat()}
        )

    def _submit(self, body: bytes, query: dict[str, list[str]]) -> dict[str, Any]:
        from iqm.iqm_client.validation import validate_circuit_instructions, validate_qubit_mapping
        from iqm.station_control.interface.models import CircuitJobDefinition
        from pydantic import ValidationError

        window = None
        if query.get("use_timeslot", ["false"]) != ["false"]:
            with self._lock:
                window = self._open_window()
            if window is None:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, "no timeslot booked for this user", "validation")
        try:
            definition = CircuitJobDefinition.model_validate_json(body)
        except ValidationError as exc:
            raise _HTTPError(
                HTTPStatus.UNPROCESSABLE_ENTITY, f"invalid job: {exc.errors()[0]['msg']}", "validation"
            ) from None
        if definition.calibration_set_id not in (None, self.calibration_set_id):
            raise _HTTPError(
                HTTPStatus.NOT_FOUND,
                f"calibration set {definition.calibration_set_id} not found",
                "not_found",
            )
        try:
            validate_qubit_mapping(self.dqa, definition.circuits, definition.qubit_mapping)
            validate_circuit_instructions(self.dqa, definition.circuits, definition.qubit_mapping)
        except ValueError as exc:
            raise _HTTPError(
                HTTPStatus.UNPROCESSABLE_ENTITY, f"invalid circuit: {exc}", "validation"
            ) from None
        job = _Job(id=uuid.uuid4(), definition=definition, payload_json=body.decode())
        self._event(job, "created")
        with self._lock:
            self.jobs[job.id] = job
            self.submitted.append(job.id)
            if window is not None:
                self.timeslot_jobs.append((job.id, window.id))
            fail = self._jobs_failed < self.faults.fail_jobs
            if fail:
                self._jobs_failed += 1
        if fail:
            job.status = "failed"
            job.errors = [
                {
                    "message": "Circuit compilation failed: calibration drifted",
                    "error_code": "compilation_failed",
                    "source": "iqm-server",
                }
            ]
            self._event(job, "failed")
        elif self.faults.stall_jobs:
            job.status = "processing"
            self._event(job, "processing")
        else:
            job.measurements = [
                self._simulate(c, definition.shots, i, job.id) for i, c in enumerate(definition.circuits)
            ]
            job.status = "completed"
            self._event(job, "completed")
        answer = self._job_data(job)
        answer["status"] = "waiting"  # as the real server answers a fresh submission
        return answer

    def _job_data(self, job: _Job) -> dict[str, Any]:
        from iqm.station_control.interface.models.jobs_new import JobData

        data = JobData.model_validate(
            {
                "id": str(job.id),
                "type": "circuit",
                "status": job.status,
                "compilation": {"calibration_set_id": str(self.calibration_set_id)},
                "errors": job.errors,
                "timeline": job.timeline,
                "artifacts": [{"type": "measurements"}] if job.status == "completed" else [],
            }
        )
        answer: dict[str, Any] = data.model_dump(mode="json")
        return answer

    def _simulate(
        self, circuit: Any, shots: int, index: int, job_id: uuid.UUID
    ) -> dict[str, list[list[int]]]:
        """Aer run of one submitted circuit on just the qubits it touches, with readout error only.

        Gates are noise-free and readout flips bits with exactly the probabilities the quality
        metrics publish, so readout-mitigated values are unbiased: a test can compare them with
        the exact values.
        """
        import numpy as np
        from iqm.qiskit_iqm.qiskit_to_iqm import MeasurementKey, deserialize_instructions
        from qiskit_aer import AerSimulator

        used: list[str] = []
        for instruction in circuit.instructions:
            used.extend(q for q in instruction.locus if q not in used)
        qiskit_circuit = deserialize_instructions(circuit.instructions, {q: i for i, q in enumerate(used)})
        seed = int.from_bytes(job_id.bytes[:4], "little") + index
        memory = (
            AerSimulator()
            .run(qiskit_circuit, shots=shots, memory=True, seed_simulator=seed)
            .result()
            .get_memory()
        )
        rng = np.random.default_rng(seed)
        readout = self._fake.error_profile.readout_errors
        results: dict[str, list[list[int]]] = {}
        for instruction in circuit.instructions:
            if instruction.name != "measure":
                continue
            key = instruction.args["key"]
            mk = MeasurementKey.from_string(key)
            clbit = qiskit_circuit.find_bit(qiskit_circuit.cregs[mk.creg_idx][mk.clbit_idx]).index
            bits = np.array([int(shot.replace(" ", "")[::-1][clbit]) for shot in memory], dtype=np.int64)
            # The published readout errors are real: P(1|0) = errors["0"], P(0|1) = errors["1"].
            errors = readout[instruction.locus[0]]
            flip = rng.random(bits.size) < np.where(bits == 0, errors["0"], errors["1"])
            results[key] = [[int(b)] for b in bits ^ flip]
        return results

    def _counts(self, job: _Job) -> list[dict[str, Any]]:
        out = []
        for measurements in job.measurements:
            keys = sorted(measurements)
            shots = len(next(iter(measurements.values()), []))
            counts: dict[str, int] = {}
            for s in range(shots):
                bits = "".join(str(measurements[k][s][0]) for k in keys)
                counts[bits] = counts.get(bits, 0) + 1
            out.append({"measurement_keys": keys, "counts": counts})
        return out

    # --- wire helpers ---------------------------------------------------------------------------
    @staticmethod
    def _send(handler: _Handler, status: int, answer: Any) -> None:
        data = b"" if answer is None else json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _error(self, handler: _Handler, error: _HTTPError) -> None:
        body = {"message": error.message, "error_code": error.code, "source": "iqm-server"}
        self._send(handler, int(error.status), body)


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
