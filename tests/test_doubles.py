"""The conftest fixtures hand out working doubles that answer like the real services."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from doubles.fake_argo_api import WF_PATH, FakeArgoApiServer
from doubles.fake_resource_api import FakeResourceAPI
from doubles.kubelet_deviceplugin import TestKubelet
from doubles.kubelet_dra import TestKubeletDRA

from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc
from qubelet.errors import NotFound
from qubelet.inventory import parse_config

pytestmark = pytest.mark.timeout(60)


def test_kubelet_serves_registration(kubelet: TestKubelet) -> None:
    with grpc.insecure_channel(f"unix://{kubelet.socket_path}") as channel:
        stub = api_pb2_grpc.RegistrationStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.Register(api_pb2.RegisterRequest(version="v0", endpoint="x.sock", resource_name="a/b"))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_fake_resource_api_answers_not_found(fake_resource_api: FakeResourceAPI) -> None:
    with pytest.raises(NotFound, match="leases"):
        fake_resource_api.read_lease("qubelet-system", "nope")


def test_dra_kubelet_waits_for_a_registration_socket(dra_kubelet: TestKubeletDRA) -> None:
    dra_kubelet.timeout = 0.2
    with pytest.raises(TimeoutError, match="no registration socket"):
        dra_kubelet.wait_for_socket()


def test_fake_argo_api_speaks_status_objects(fake_argo_api: FakeArgoApiServer) -> None:
    url = f"http://127.0.0.1:{fake_argo_api.server_address[1]}{WF_PATH}/missing"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=5)
    assert exc.value.code == 404
    assert json.loads(exc.value.read())["kind"] == "Status"


def test_qpu_entry_is_a_valid_inventory_entry(qpu_entry: Callable[..., dict[str, Any]]) -> None:
    config = parse_config({"version": "v1", "qpus": [qpu_entry(), qpu_entry(name="b", replicas=3)]})
    assert [(q.name, q.replicas) for q in config.qpus] == [("adonis-onprem", 1), ("b", 3)]


def test_fake_kueue_api_and_prometheus_fixtures(fake_kueue_api: Any, fake_prometheus: Any) -> None:
    assert fake_kueue_api.workloads == {}
    from policy.telemetry_sources import PrometheusSource

    source = PrometheusSource(fake_prometheus.url, timeout=2.0)
    assert source.snapshots() and source.last_error is None
