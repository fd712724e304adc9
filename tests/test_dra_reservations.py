"""Reservations before binding (DRA binding conditions), against the IQM server double.

The provider is the project's IQM server double on loopback (``tests/doubles/iqm_server.py``,
serving the reservation contract beside IQM's job API); the API server is ``FakeResourceAPI``,
which validates every claim status against the 1.34 schema. What the real scheduler does with
the conditions is checked on the real control plane in ``tests/e2e/test_binding_conditions.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doubles.fake_resource_api import FakeResourceAPI, allocated_claim
from doubles.iqm_server import Faults, IQMServerDouble, make_token, write_tokens_file
from kubernetes.client import V1ResourceClaimConsumerReference

from dra_driver.cdi import build_spec
from dra_driver.constants import RESERVATION_FAILED_CONDITION, RESERVED_CONDITION
from dra_driver.devices import network_devices, network_pool
from dra_driver.metrics import DRAMetrics
from dra_driver.reservations.adapters import providers_for
from dra_driver.reservations.controller import ReservationController
from dra_driver.reservations.http_provider import HTTPReservationProvider
from dra_driver.reservations.provider import ProviderError
from dra_driver.reservations.status import reservation_env
from dra_driver.slices import network_slices, to_dict
from qubelet.errors import ConfigError
from qubelet.inventory import QPUConfig, parse_config
from qubelet.inventory.names import DRIVER_NAME, ENV_RESERVATION_END, ENV_RESERVATION_ID

pytestmark = pytest.mark.timeout(120)

OWNER = "test-cluster"


def _inventory(
    endpoint: str, tokens: Path | None, *, reservation: dict[str, Any] | None, name: str = "apollo-cloud"
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "vendor": "IQM",
        "model": "Apollo",
        "qubits": 20,
        "technology": "superconducting",
        "location": "cloud",
        "backend": "iqm",
        "endpoint": endpoint,
        "health": {"probe": "http", "url": endpoint},
        "replicas": 2,
    }
    if tokens is not None:
        entry["tokensFile"] = str(tokens)
    if reservation is not None:
        entry["reservation"] = reservation
    return {"version": "v1", "qpus": [entry]}


class World:
    """The double, an inventory QPU pointing at it, the fake API server and a controller."""

    def __init__(self, double: IQMServerDouble, tokens: Path, api: FakeResourceAPI) -> None:
        self.double = double
        self.tokens = tokens
        self.api = api
        cfg = parse_config(
            _inventory(f"{double.url}/{double.alias}", tokens, reservation={"cooldownSeconds": 30}), "t.yaml"
        )
        self.qpu: QPUConfig = cfg.qpus[0]
        self.metrics = DRAMetrics()
        self.clock = 1000.0
        self.controller = self.new_controller()

    def new_controller(self, **kwargs: Any) -> ReservationController:
        """A fresh controller (a restart: nothing carried over but the claims and the provider)."""
        return ReservationController(
            [self.qpu],
            self.api,
            providers_for([self.qpu], OWNER, timeout_seconds=kwargs.pop("timeout", 2.0)),
            metrics=self.metrics,
            clock=lambda: self.clock,
            **kwargs,
        )

    def allocate(self, name: str = "step-qpu", device: str = "apollo-cloud-r0", pod: str = "step") -> Any:
        """Store a claim as the scheduler leaves it in PreBind: allocated, reserved, with conditions."""
        claim = allocated_claim("work", name, [(DRIVER_NAME, network_pool(self.qpu), device, "qpu")])
        result = claim.status.allocation.devices.results[0]
        result.binding_conditions = [RESERVED_CONDITION]
        result.binding_failure_conditions = [RESERVATION_FAILED_CONDITION]
        claim.status.allocation.allocation_timestamp = dt.datetime.now(dt.UTC)
        claim.status.reserved_for = [
            V1ResourceClaimConsumerReference(resource="pods", name=pod, uid=f"uid-{pod}")
        ]
        return self.api.put_claim(claim)

    def status(self, name: str = "step-qpu") -> dict[str, Any]:
        """The claim's one status.devices entry, in JSON form: conditions by type, and data."""
        claim = self.api.read_resource_claim("work", name)
        [entry] = to_dict(claim)["status"]["devices"]
        return {"conditions": {c["type"]: c for c in entry["conditions"]}, "data": entry["data"]}

    def sample(self, metric: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(metric, {"qpu": "apollo-cloud", **labels})
        return value or 0.0


@pytest.fixture(scope="module")
def double() -> Iterator[IQMServerDouble]:
    """One double for the module (building its Apollo takes seconds); reset for every test."""
    server = IQMServerDouble(make_token())
    with server.running():
        yield server


@pytest.fixture
def world(tmp_path: Path, double: IQMServerDouble, fake_resource_api: FakeResourceAPI) -> World:
    deadline = time.monotonic() + 10  # a request a previous test left hanging lands first
    while double.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    double.faults = Faults()
    double.reservations.clear()
    double.released.clear()
    tokens = write_tokens_file(tmp_path / "tokens.json", double.token)
    return World(double, tokens, fake_resource_api)


# --- inventory and slices -------------------------------------------------------------------------


def test_reservation_setting_is_off_by_default_and_needs_an_endpoint(qpu_entry: Any) -> None:
    plain = parse_config({"version": "v1", "qpus": [qpu_entry()]}, "q.yaml").qpus[0]
    assert plain.reservation is None
    off = parse_config({"version": "v1", "qpus": [qpu_entry(reservation={"enabled": False})]}, "q.yaml")
    assert off.qpus[0].reservation is None
    with pytest.raises(
        ConfigError, match=r"^q\.yaml: qpus\[0\] \(adonis-onprem\): reservation: needs endpoint"
    ):
        parse_config({"version": "v1", "qpus": [qpu_entry(reservation={})]}, "q.yaml")
    with pytest.raises(ConfigError, match=r"reservation\.durationSeconds: must be a positive integer"):
        parse_config(
            {
                "version": "v1",
                "qpus": [qpu_entry(endpoint="https://h/qc", reservation={"durationSeconds": 0})],
            },
            "q.yaml",
        )


def test_reserving_qpu_publishes_binding_conditions_others_do_not(fake_resource_api: FakeResourceAPI) -> None:
    on = parse_config(_inventory("https://iqm.example/apollo", None, reservation={}), "a.yaml").qpus[0]
    off = parse_config(
        _inventory("https://iqm.example/apollo", None, reservation=None, name="plain"), "b.yaml"
    ).qpus[0]
    health = {"apollo-cloud": True, "plain": True}
    for s in network_slices([on, off], health):
        fake_resource_api.create_resource_slice(s)  # schema-validated as the API server would
    published = {s.spec.pool.name: to_dict(s)["spec"]["devices"] for s in fake_resource_api.slices.values()}
    for device in published["cloud/apollo-cloud"]:
        assert device["bindingConditions"] == ["qpu.quantum.example.com/reserved"]
        assert device["bindingFailureConditions"] == ["qpu.quantum.example.com/reservation-failed"]
        assert "bindsToNode" not in device
    for device in published["cloud/plain"]:
        assert "bindingConditions" not in device and "bindingFailureConditions" not in device
    # A refused QPU is withheld: its pool is published empty, the other one unchanged.
    withheld = {
        s.spec.pool.name: s.spec.devices for s in network_slices([on, off], health, withheld={"apollo-cloud"})
    }
    assert withheld["cloud/apollo-cloud"] == [] and len(withheld["cloud/plain"]) == 2


# --- the provider adapter against the double ------------------------------------------------------


def test_http_provider_grants_idempotently_lists_and_releases(world: World) -> None:
    provider = HTTPReservationProvider(world.qpu, OWNER)
    first = provider.request("key-1", 600)
    again = provider.request("key-1", 600)
    assert first.state == "granted" and again.id == first.id and first.start and first.end
    assert [r.id for r in provider.active()] == [first.id]
    provider.release(first.id)
    provider.release(first.id)  # idempotent
    provider.release("no-such-reservation")  # 404 is "already released"
    assert provider.active() == [] and world.double.released == [first.id]


@pytest.mark.parametrize(
    ("setup", "kind"),
    [
        (lambda w: setattr(w.double.faults, "hang_seconds", 1.5), "timeout"),
        (lambda w: setattr(w.double.faults, "reservation_errors", 5), "unavailable"),
        (lambda w: write_tokens_file(w.tokens, make_token()), "unauthorized"),
    ],
    ids=["timeout", "5xx", "rejected-token"],
)
def test_provider_faults_are_one_line_errors_without_the_token(world: World, setup: Any, kind: str) -> None:
    setup(world)
    provider = HTTPReservationProvider(world.qpu, OWNER, timeout_seconds=0.5)
    with pytest.raises(ProviderError) as err:
        provider.request("key-1", 600)
    assert err.value.kind == kind
    message = str(err.value)
    assert "\n" not in message and world.double.token not in message
    assert json.loads(world.tokens.read_text())["access_token"] not in message


# --- the controller -------------------------------------------------------------------------------


def test_granted_reservation_sets_the_binding_condition_with_id_and_window(world: World) -> None:
    world.allocate()
    world.controller.reconcile()
    status = world.status()
    assert status["conditions"][RESERVED_CONDITION]["status"] == "True"
    assert status["conditions"][RESERVATION_FAILED_CONDITION]["status"] == "False"
    [held] = world.double.active_reservations(OWNER)
    assert status["data"] == {
        "qpu": "apollo-cloud",
        "state": "granted",
        "reservationID": held.id,
        "start": held.start,
        "end": held.end,
    }
    assert world.sample("qubelet_dra_reservations_requested_total") == 1
    assert world.sample("qubelet_dra_reservations_granted_total") == 1
    assert world.sample("qubelet_dra_reservation_grant_duration_seconds_count") == 1
    # A second pass neither asks again nor writes.
    writes = world.api.calls["replace_resource_claim_status"]
    world.controller.reconcile()
    assert world.api.calls["replace_resource_claim_status"] == writes
    assert len(world.double.reservations) == 1
    # The kubelet plugin's CDI spec carries the reservation to the container.
    claim = world.api.read_resource_claim("work", "step-qpu")
    env = reservation_env(claim, network_pool(world.qpu), "apollo-cloud-r0")
    assert env[ENV_RESERVATION_ID] == held.id and env[ENV_RESERVATION_END] == held.end
    device = next(d for d in network_devices([world.qpu]) if d.name == "apollo-cloud-r0")
    spec = build_spec("uid-1", [device], extra_env={device.name: env})
    assert f"{ENV_RESERVATION_ID}={held.id}" in spec["devices"][0]["containerEdits"]["env"]


def test_pending_reservation_holds_the_condition_false_until_granted(world: World) -> None:
    world.double.faults.hold_reservations = True
    world.allocate()
    world.controller.reconcile()
    status = world.status()
    assert status["conditions"][RESERVED_CONDITION]["status"] == "False"
    assert status["conditions"][RESERVED_CONDITION]["reason"] == "Pending"
    assert status["data"]["state"] == "pending"
    assert world.sample("qubelet_dra_reservations_pending") == 1
    world.controller.reconcile()
    assert len(world.double.reservations) == 1  # the same key: asked again, not booked twice
    world.double.grant_pending()
    world.controller.reconcile()
    assert world.status()["conditions"][RESERVED_CONDITION]["status"] == "True"
    assert world.sample("qubelet_dra_reservations_pending") == 0


def test_refusal_sets_the_failure_condition_warns_the_pod_and_withholds_the_qpu(world: World) -> None:
    world.double.faults.refuse_reservations = "calendar full until 18:00"
    world.allocate()
    world.controller.reconcile()
    status = world.status()
    assert status["conditions"][RESERVATION_FAILED_CONDITION]["status"] == "True"
    assert status["conditions"][RESERVATION_FAILED_CONDITION]["reason"] == "Refused"
    assert "calendar full until 18:00" in status["conditions"][RESERVATION_FAILED_CONDITION]["message"]
    assert status["conditions"][RESERVED_CONDITION]["status"] == "False"
    events = {(e["involvedObject"]["kind"], e["involvedObject"]["name"]): e for e in world.api.events}
    assert set(events) == {("Pod", "step"), ("ResourceClaim", "step-qpu")}
    pod_event = events[("Pod", "step")]
    assert pod_event["type"] == "Warning" and pod_event["reason"] == "ReservationRefused"
    assert "calendar full until 18:00" in pod_event["message"] and "withheld" in pod_event["message"]
    assert world.controller.withheld() == {"apollo-cloud"}
    assert world.sample("qubelet_dra_reservations_refused_total") == 1
    world.clock += 31  # the cool-down is over: the QPU comes back
    assert world.controller.withheld() == set()


def test_deallocated_or_deleted_claim_releases_its_reservation(world: World) -> None:
    world.allocate("a", "apollo-cloud-r0", "pod-a")
    world.allocate("b", "apollo-cloud-r1", "pod-b")
    world.controller.reconcile()
    assert len(world.double.active_reservations(OWNER)) == 2
    world.api.delete_claim("work", "a")  # its pod was deleted
    claim_b = world.api.read_resource_claim("work", "b")
    claim_b.status.allocation = None  # deallocated
    claim_b.status.devices = None
    claim_b.status.reserved_for = None
    world.api.put_claim(claim_b)
    world.controller.reconcile()
    assert world.double.active_reservations(OWNER) == []
    assert len(world.double.released) == 2
    assert world.sample("qubelet_dra_reservations_released_total") == 2


def test_restart_reconciles_from_claims_and_leaks_nothing(world: World) -> None:
    """A controller that died after asking (before recording) leaves a reservation only the
    provider knows; the next one finds it through the claim's key, or releases it."""
    world.double.faults.hold_reservations = True
    world.allocate("kept", "apollo-cloud-r0", "pod-kept")
    world.allocate("gone", "apollo-cloud-r1", "pod-gone")
    provider = providers_for([world.qpu], OWNER)["apollo-cloud"]
    from dra_driver.reservations.status import reservation_key

    for name in ("kept", "gone"):  # asked, never recorded: the kill -9 window
        claim = world.api.read_resource_claim("work", name)
        provider.request(reservation_key(claim, claim.status.allocation.devices.results[0]), 600)
    world.api.delete_claim("work", "gone")
    restarted = world.new_controller()
    restarted.reconcile()
    [kept] = world.double.active_reservations(OWNER)
    assert world.status("kept")["data"]["reservationID"] == kept.id  # the same one, not a second
    assert len(world.double.reservations) == 2 and len(world.double.released) == 1
    world.double.grant_pending()
    restarted.reconcile()
    assert world.status("kept")["conditions"][RESERVED_CONDITION]["status"] == "True"


def test_provider_faults_are_retried_then_give_up_after_the_deadline(world: World) -> None:
    world.double.faults.reservation_errors = 2  # two 503s, then the booking service answers
    world.allocate()
    world.controller.reconcile()  # POST -> 503
    assert world.api.calls["replace_resource_claim_status"] == 0  # nothing recorded: still waiting
    assert world.sample("qubelet_dra_reservation_provider_errors_total", kind="unavailable") >= 1
    world.controller.reconcile()
    world.controller.reconcile()
    assert world.status()["conditions"][RESERVED_CONDITION]["status"] == "True"

    # A provider that stays unreachable past the deadline: the device is given up.
    world.double.faults.reservation_errors = 1000
    world.allocate("late", "apollo-cloud-r1", "pod-late")
    claim = world.api.read_resource_claim("work", "late")
    claim.status.allocation.allocation_timestamp = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=300)
    world.api.put_claim(claim)
    world.controller.reconcile()
    late = world.status("late")
    assert late["conditions"][RESERVATION_FAILED_CONDITION]["status"] == "True"
    assert late["conditions"][RESERVATION_FAILED_CONDITION]["reason"] == "ProviderUnavailable"


def test_rejected_token_keeps_the_pod_waiting_and_never_logs_the_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    write_tokens_file(world.tokens, make_token())  # the provider no longer accepts our token
    world.allocate()
    with caplog.at_level(logging.INFO):
        world.controller.reconcile()
    assert world.api.calls["replace_resource_claim_status"] == 0
    assert world.sample("qubelet_dra_reservation_provider_errors_total", kind="unauthorized") >= 1
    logged = [r.getMessage() + " " + str(getattr(r, "kv", {})) for r in caplog.records]
    assert any("rejected the token" in line for line in logged), logged
    for token in (world.double.token, json.loads(world.tokens.read_text())["access_token"]):
        assert not any(token in line for line in logged)


# --- the step submits within its reservation ----------------------------------------------------


def test_iqm_backend_submits_within_the_reservation_and_not_after_it(world: World) -> None:
    from qiskit import QuantumCircuit, transpile

    from pipeline.backends.iqm_remote import RemoteIQM
    from pipeline.errors import BackendFailedError

    held = HTTPReservationProvider(world.qpu, OWNER).request("step-key", 600)
    env = {
        ENV_RESERVATION_ID: held.id,
        "QUBELET_RESERVATION_START": held.start,
        ENV_RESERVATION_END: held.end,
    }
    remote = RemoteIQM(f"{world.double.url}/{world.double.alias}", world.tokens, environ=env)
    circuit = QuantumCircuit(1)
    circuit.x(0)
    circuit.measure_all()
    compiled = transpile(circuit, remote.backend, optimization_level=0)
    [counts] = remote.run([compiled], 50, "fingerprint-1")
    assert int(counts.counts.sum()) == 50
    [(job, reservation)] = world.double.timeslot_jobs
    assert reservation == held.id and job in world.double.submitted

    submitted = len(world.double.submitted)
    ended = dict(
        env,
        **{ENV_RESERVATION_END: "2020-01-01T00:00:00Z", "QUBELET_RESERVATION_START": "2019-12-31T23:00:00Z"},
    )
    late = RemoteIQM(f"{world.double.url}/{world.double.alias}", world.tokens, environ=ended)
    with pytest.raises(
        BackendFailedError, match=rf"^reservation {held.id} ended at 2020-01-01T00:00:00\+00:00"
    ):
        late.run([compiled], 50, "fingerprint-2")
    assert len(world.double.submitted) == submitted


def test_a_claim_being_deleted_keeps_its_reservation_while_a_pod_uses_it(world: World) -> None:
    world.allocate("doomed", "apollo-cloud-r0", "runner")
    world.controller.reconcile()
    [held] = world.double.active_reservations(OWNER)
    claim = world.api.read_resource_claim("work", "doomed")
    claim.metadata.deletion_timestamp = dt.datetime.now(dt.UTC)  # deleted while its pod still runs
    world.api.put_claim(claim)
    world.controller.reconcile()
    assert world.double.active_reservations(OWNER) == [held]
    claim = world.api.read_resource_claim("work", "doomed")
    claim.status.reserved_for = None  # the pod is gone
    world.api.put_claim(claim)
    world.controller.reconcile()
    assert world.double.active_reservations(OWNER) == [] and world.double.released == [held.id]
