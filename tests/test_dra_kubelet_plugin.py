"""The DRA kubelet plugin against a test kubelet on real unix sockets.

Registration, NodePrepare/NodeUnprepare (v1 and v1beta1), idempotence, restart from the
checkpoint, per-claim errors for bad claims, a corrupt checkpoint, and the health stream.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from doubles.fake_resource_api import FakeResourceAPI, allocated_claim
from doubles.kubelet_dra import TestKubeletDRA

from dra_driver.cdi import spec_path
from dra_driver.constants import SUPPORTED_VERSIONS
from dra_driver.kubelet_plugin import KubeletPlugin
from dra_driver.metrics import DRAMetrics
from dra_driver.slices import node_slices
from qubelet.inventory import Config, parse_config
from qubelet.inventory.names import CDI_KIND, DRIVER_NAME, TOKENS_MOUNT_PATH

pytestmark = pytest.mark.timeout(30)

NODE = "node-a"
ONPREM_POOL = NODE
CLOUD_POOL = "cloud/apollo-cloud"


def inventory(health_dir: Path) -> Config:
    """The example inventory's two QPUs, with file probes the tests can flip."""
    return parse_config(
        {
            "version": "v1",
            "qpus": [
                {
                    "name": "adonis-onprem",
                    "vendor": "IQM",
                    "model": "Adonis",
                    "qubits": 5,
                    "technology": "superconducting",
                    "location": "onprem",
                    "nodes": [NODE],
                    "topology": "star",
                    "backend": "fake:IQMFakeAdonis",
                    "calibration": {"fidelity2q": 0.965, "readoutFidelity": 0.95},
                    "health": {"probe": "file", "path": str(health_dir / "adonis"), "intervalSeconds": 0.1},
                    "replicas": 2,
                },
                {
                    "name": "apollo-cloud",
                    "vendor": "IQM",
                    "model": "Apollo",
                    "qubits": 20,
                    "technology": "superconducting",
                    "location": "cloud",
                    "topology": "square-lattice",
                    "backend": "fake:IQMFakeApollo",
                    "endpoint": "https://cocos.example.com/apollo",
                    "tokensFile": str(health_dir.parent / "tokens.json"),
                    "health": {"probe": "file", "path": str(health_dir / "apollo"), "intervalSeconds": 0.1},
                    "replicas": 2,
                },
            ],
        },
        "test-inventory",
    )


class Env:
    """Directories (short paths: unix socket paths are limited to 107 bytes) and the fake API."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dra"))
        self.health = self.root / "health"
        self.health.mkdir()
        for name in ("adonis", "apollo"):
            (self.health / name).write_text("healthy")
        self.tokens = self.root / "tokens.json"
        self.tokens.write_text('{"access_token": "t"}')
        self.plugins = self.root / "plugins"
        self.registry = self.root / "registry"
        self.cdi = self.root / "cdi"
        self.api = FakeResourceAPI()
        self.config = inventory(self.health)

    def plugin(self, **kw: Any) -> KubeletPlugin:
        kw.setdefault("resync_seconds", 0.2)
        kw.setdefault("tokens_root", self.root)  # the tokens Secret's mount: tokens.json is in it
        return KubeletPlugin(
            self.config, NODE, self.plugins, self.registry, self.cdi, self.api, metrics=DRAMetrics(), **kw
        )

    def claim(
        self,
        name: str,
        device: str,
        pool: str = ONPREM_POOL,
        driver: str = DRIVER_NAME,
        request: str = "qpu",
    ) -> tuple:
        c = self.api.put_claim(allocated_claim("team-a", name, [(driver, pool, device, request)]))
        return ("team-a", c.metadata.uid, name)


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    shutil.rmtree(e.root, ignore_errors=True)


Running = tuple[Env, KubeletPlugin, TestKubeletDRA]


@pytest.fixture
def running(env: Env) -> Iterator[Running]:
    plugin = env.plugin()
    plugin.start()
    kubelet = TestKubeletDRA(env.registry)
    kubelet.register()
    yield env, plugin, kubelet
    kubelet.close()
    plugin.stop()


def test_registration_fields(running: Running) -> None:
    env, plugin, kubelet = running
    info = kubelet.info
    assert info is not None
    assert info.type == "DRAPlugin"
    assert info.name == DRIVER_NAME
    assert info.endpoint == str(env.plugins / DRIVER_NAME / "dra.sock")
    assert list(info.supported_versions) == list(SUPPORTED_VERSIONS)
    assert list(info.supported_versions) == [  # as kubeletplugin.Start lists them (1.37)
        "v1.DRAPlugin",
        "v1beta1.DRAPlugin",
        "v1.DRAResourceHealth",
        "v1alpha1.DRAResourceHealth",
    ]
    assert kubelet.health_service == "v1.DRAResourceHealth"  # what a 1.37 kubelet picks
    assert (env.registry / f"{DRIVER_NAME}-reg.sock").is_socket()
    assert plugin.registration.registered is True


def test_rejected_registration_keeps_serving(env: Env) -> None:
    plugin = env.plugin()
    plugin.start()
    try:
        kubelet = TestKubeletDRA(env.registry)
        kubelet.register(accept=False, error="kubelet says no")
        assert plugin.registration.registered is False
        assert plugin.registration.last_error == "kubelet says no"
        again = TestKubeletDRA(env.registry)
        assert again.register().name == DRIVER_NAME  # still answering
        again.close()
        kubelet.close()
    finally:
        plugin.stop()
    assert not (env.registry / f"{DRIVER_NAME}-reg.sock").exists()


def test_probes_follow_serving_and_registration(env: Env) -> None:
    """/healthz: both sockets served; /readyz: kubelet accepted the registration."""
    plugin = env.plugin()
    assert plugin.liveness_problem() == "gRPC servers not started"
    plugin.start()
    kubelet = TestKubeletDRA(env.registry)
    try:
        assert plugin.liveness_problem() == ""
        assert plugin.readiness_problem() == "waiting for kubelet to register the plugin"
        kubelet.register(accept=False, error="kubelet says no")
        assert plugin.readiness_problem() == "kubelet rejected the registration: kubelet says no"
        TestKubeletDRA(env.registry).register()
        assert plugin.readiness_problem() == ""
        plugin.dra_socket.unlink()
        assert "is gone" in plugin.liveness_problem()
    finally:
        kubelet.close()
        plugin.stop()


def test_prepare_writes_cdi_and_returns_ids(running: Running) -> None:
    env, _, kubelet = running
    ref = env.claim("cloud-job", "apollo-cloud-r1", pool=CLOUD_POOL)
    uid = ref[1]
    out = kubelet.prepare([ref])
    entry: Any = out[uid]
    assert entry.error == ""
    assert len(entry.devices) == 1
    d = entry.devices[0]
    assert (d.pool_name, d.device_name, list(d.request_names)) == (CLOUD_POOL, "apollo-cloud-r1", ["qpu"])
    assert list(d.cdi_device_ids) == [f"{CDI_KIND}={uid}-apollo-cloud-r1"]
    spec = json.loads(spec_path(env.cdi, uid).read_text())
    assert spec["kind"] == "qpu.quantum.example.com/qpu"
    assert spec["cdiVersion"]
    (dev,) = spec["devices"]
    assert dev["name"] == f"{uid}-apollo-cloud-r1"
    env_vars = dict(e.split("=", 1) for e in dev["containerEdits"]["env"])
    assert env_vars == {
        "QUBELET_QPU_NAME": "apollo-cloud",
        "QUBELET_QPU_BACKEND": "fake:IQMFakeApollo",
        "IQM_SERVER_URL": "https://cocos.example.com/apollo",
        "IQM_TOKENS_FILE": TOKENS_MOUNT_PATH,
    }
    (mount,) = dev["containerEdits"]["mounts"]
    assert mount["hostPath"] == str(env.tokens)
    assert mount["containerPath"] == TOKENS_MOUNT_PATH
    assert "ro" in mount["options"]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_container_naming_its_request_gets_the_subrequest_device(running: Running, version: str) -> None:
    """Issue 19 (4): a ``firstAvailable`` allocation is for ``qpu/<subrequest>``; kubelet matches a
    container's ``resources.claims[].request`` (``qpu``) against the request names we return, so
    they carry the parent request, as the upstream kubeletplugin helper strips them."""
    env, _, kubelet = running
    ref = env.claim("ranked", "apollo-cloud-r0", pool=CLOUD_POOL, request="qpu/model-apollo")
    entry: Any = kubelet.prepare([ref], version=version)[ref[1]]
    assert entry.error == ""
    assert [list(d.request_names) for d in entry.devices] == [["qpu"]]
    ids = kubelet.container_cdi_devices(entry, request="qpu")
    assert ids == [f"{CDI_KIND}={ref[1]}-apollo-cloud-r0"]
    (dev,) = json.loads(spec_path(env.cdi, ref[1]).read_text())["devices"]
    assert f"{CDI_KIND}={dev['name']}" == ids[0]
    assert "QUBELET_QPU_NAME=apollo-cloud" in dev["containerEdits"]["env"]
    assert dev["containerEdits"]["mounts"][0]["containerPath"] == TOKENS_MOUNT_PATH
    assert kubelet.container_cdi_devices(entry, request="other") == []


def test_onprem_device_has_no_token_mount(running: Running) -> None:
    env, _, kubelet = running
    ref = env.claim("local", "adonis-onprem-r0")
    assert kubelet.prepare([ref])[ref[1]].error == ""
    (dev,) = json.loads(spec_path(env.cdi, ref[1]).read_text())["devices"]
    assert "mounts" not in dev["containerEdits"]
    assert "QUBELET_QPU_NAME=adonis-onprem" in dev["containerEdits"]["env"]


def test_unprepare_and_repeat_calls_are_idempotent(
    running: tuple[Env, KubeletPlugin, TestKubeletDRA],
) -> None:
    env, plugin, kubelet = running
    ref = env.claim("job", "adonis-onprem-r1")
    uid = ref[1]
    first: Any = kubelet.prepare([ref])[uid]
    reads = env.api.calls["read_resource_claim"]
    second: Any = kubelet.prepare([ref])[uid]
    assert second == first
    assert env.api.calls["read_resource_claim"] == reads  # answered from the checkpoint
    assert spec_path(env.cdi, uid).exists()
    assert kubelet.unprepare([ref])[uid].error == ""
    assert not spec_path(env.cdi, uid).exists()
    assert kubelet.unprepare([ref])[uid].error == ""
    unknown = ("team-a", "no-such-uid", "ghost")
    assert kubelet.unprepare([unknown])["no-such-uid"].error == ""
    assert plugin.driver.state.uids() == []


def test_v1beta1_service(running: Running) -> None:
    env, _, kubelet = running
    ref = env.claim("old-kubelet", "adonis-onprem-r0")
    entry: Any = kubelet.prepare([ref], version="v1beta1")[ref[1]]
    assert entry.error == ""
    assert entry.devices[0].device_name == "adonis-onprem-r0"
    assert kubelet.unprepare([ref], version="v1beta1")[ref[1]].error == ""
    assert not spec_path(env.cdi, ref[1]).exists()


def test_restart_from_checkpoint(env: Env) -> None:
    plugin = env.plugin()
    plugin.start()
    kubelet = TestKubeletDRA(env.registry)
    kubelet.register()
    a = env.claim("a", "adonis-onprem-r0")
    b = env.claim("b", "apollo-cloud-r0", pool=CLOUD_POOL)
    before = kubelet.prepare([a, b])
    kubelet.close()
    plugin.stop()
    env.api.delete_claim("team-a", "a")  # gone from the API while the plugin was down

    plugin2 = env.plugin()
    plugin2.start()
    kubelet2 = TestKubeletDRA(env.registry)
    kubelet2.register()
    try:
        assert sorted(plugin2.driver.state.uids()) == sorted([a[1], b[1]])
        again = kubelet2.prepare([b])
        assert again[b[1]] == before[b[1]]
        assert kubelet2.unprepare([a])[a[1]].error == ""
        assert not spec_path(env.cdi, a[1]).exists()
        assert spec_path(env.cdi, b[1]).exists()
    finally:
        kubelet2.close()
        plugin2.stop()


def test_bad_claims_get_per_claim_errors(running: Running) -> None:
    env, plugin, kubelet = running
    good = env.claim("good", "adonis-onprem-r0")
    gone = ("team-a", "uid-gone", "never-existed")
    real = env.claim("mismatch", "adonis-onprem-r1")
    mismatch = ("team-a", "some-other-uid", "mismatch")
    unalloc_claim = env.api.put_claim(allocated_claim("team-a", "pending", None))
    unallocated = ("team-a", unalloc_claim.metadata.uid, "pending")
    unknown = env.claim("unknown", "no-such-qpu-r0")
    other_node = env.claim("elsewhere", "adonis-onprem-r0", pool="node-b")
    other_driver = env.claim("gpu", "gpu-0", driver="gpu.example.com")
    out: Any = kubelet.prepare([good, gone, mismatch, unallocated, unknown, other_node, other_driver])
    assert out[good[1]].error == ""
    assert "not found" in out["uid-gone"].error
    assert "uid" in out["some-other-uid"].error and real[1] in out["some-other-uid"].error
    assert "no allocation" in out[unallocated[1]].error
    assert "no-such-qpu-r0" in out[unknown[1]].error
    assert "node-b/adonis-onprem-r0" in out[other_node[1]].error
    assert "no allocation" in out[other_driver[1]].error
    for bad in (gone, mismatch, unallocated, unknown, other_node):
        assert not spec_path(env.cdi, bad[1]).exists()
    assert plugin.driver.state.uids() == [good[1]]
    errors = {
        s.labels["reason"]: s.value
        for m in plugin.metrics.registry.collect()
        if m.name == "qubelet_dra_prepare_errors"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert errors["not_found"] == 1 and errors["uid_mismatch"] == 1 and errors["unknown_device"] == 2
    # the server keeps serving afterwards
    later = env.claim("later", "apollo-cloud-r0", pool=CLOUD_POOL)
    assert kubelet.prepare([later])[later[1]].error == ""


def test_corrupt_checkpoint_starts_empty(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = env.plugins / DRIVER_NAME / "checkpoint.json"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text('{"version": "v1", "checksum": "00", "claims": {}')  # truncated JSON
    plugin = env.plugin()
    assert plugin.driver.state.uids() == []
    doc = {"version": "v1", "checksum": "deadbeef", "claims": {"x": {}}}
    ckpt.write_text(json.dumps(doc))
    plugin = env.plugin()
    assert plugin.driver.state.uids() == []
    plugin.start()
    kubelet = TestKubeletDRA(env.registry)
    kubelet.register()
    try:
        ref = env.claim("fresh", "adonis-onprem-r0")
        assert kubelet.prepare([ref])[ref[1]].error == ""
        saved = json.loads(ckpt.read_text())
        assert saved["version"] == "v1" and list(saved["claims"]) == [ref[1]]
    finally:
        kubelet.close()
        plugin.stop()


@pytest.mark.parametrize("version", ["v1", "v1alpha1"])
def test_health_stream_reports_changes(running: Running, version: str) -> None:
    """Issue 19 (6): kubelet 1.37 prefers dra-health v1, 1.34-1.36 speak v1alpha1; both served."""
    env, _, kubelet = running
    stream = kubelet.watch_health(timeout=10, version=version)
    first = next(stream)
    status = {(d.device.pool_name, d.device.device_name): d.health for d in first.devices}
    assert status[(ONPREM_POOL, "adonis-onprem-r0")] == 1  # HEALTHY
    assert status[(CLOUD_POOL, "apollo-cloud-r1")] == 1
    (env.health / "adonis").write_text("maintenance")
    deadline = time.monotonic() + 5
    seen = None
    for msg in stream:
        seen = {(d.device.pool_name, d.device.device_name): d.health for d in msg.devices}
        if seen[(ONPREM_POOL, "adonis-onprem-r0")] == 2 or time.monotonic() > deadline:
            break
    stream.cancel()
    assert seen is not None and seen[(ONPREM_POOL, "adonis-onprem-r0")] == 2  # UNHEALTHY
    assert seen[(CLOUD_POOL, "apollo-cloud-r0")] == 1


def test_node_slice_follows_health(running: Running) -> None:
    env, _, _ = running

    def devices() -> list[str] | None:
        slices = env.api.list_resource_slices(field_selector=f"spec.nodeName={NODE}")
        return sorted(d.name for d in slices[0].spec.devices or []) if slices else None

    def wait_for(want: list[str]) -> None:
        deadline = time.monotonic() + 5
        while devices() != want and time.monotonic() < deadline:
            time.sleep(0.05)
        assert devices() == want

    wait_for(["adonis-onprem-r0", "adonis-onprem-r1"])
    (env.health / "adonis").write_text("down")
    wait_for([])
    (env.health / "adonis").write_text("healthy")
    wait_for(["adonis-onprem-r0", "adonis-onprem-r1"])
    (only,) = env.api.list_resource_slices()
    assert only.spec.node_name == NODE and only.spec.pool.generation == 3


def test_token_staged_into_host_dir(env: Env) -> None:
    """In a pod the token comes from a Secret; it is copied to a hostPath the runtime can mount."""
    from dataclasses import replace

    from dra_driver.cdi import CDIWriter
    from dra_driver.devices import all_devices

    secret = env.root / "secret-tokens.json"
    secret.write_text('{"access_token": "s3cr3t"}')
    cloud = replace(env.config.qpu("apollo-cloud"), tokens_file=str(secret))
    device = all_devices([cloud], NODE)["apollo-cloud-r0"]
    writer = CDIWriter(env.cdi, tokens_dir=env.root / "tokens", tokens_root=env.root)
    (cdi_id,) = writer.write_claim("uid-1", [device])
    assert cdi_id == f"{CDI_KIND}=uid-1-apollo-cloud-r0"
    staged = env.root / "tokens" / "apollo-cloud.json"
    assert staged.read_text() == secret.read_text()
    assert oct(staged.stat().st_mode & 0o777) == "0o440"  # never world-readable (issue 23)
    assert oct((env.root / "tokens").stat().st_mode & 0o777) == "0o700"
    (dev,) = json.loads(spec_path(env.cdi, "uid-1").read_text())["devices"]
    assert dev["containerEdits"]["mounts"][0]["hostPath"] == str(staged)
    assert "s3cr3t" not in spec_path(env.cdi, "uid-1").read_text()
    secret.write_text('{"access_token": "rotated"}')
    writer.write_claim("uid-2", [device])
    assert "rotated" in staged.read_text()
    secret.unlink()
    writer.write_claim("uid-3", [device])  # a fake backend needs no token: no mount, no env
    (dev,) = json.loads(spec_path(env.cdi, "uid-3").read_text())["devices"]
    assert "mounts" not in dev["containerEdits"]
    assert not any(e.startswith("IQM_TOKENS_FILE=") for e in dev["containerEdits"]["env"])


def test_fake_backend_prepares_without_secret_as_deployed(env: Env) -> None:
    """The DaemonSet's flags (--stage-tokens-dir) with the optional Secret absent: still prepared."""
    env.tokens.unlink()
    plugin = env.plugin(tokens_dir=env.root / "staged")
    plugin.start()
    kubelet = TestKubeletDRA(env.registry)
    try:
        kubelet.register()
        ref = env.claim("cloud-job", "apollo-cloud-r0", pool=CLOUD_POOL)
        entry: Any = kubelet.prepare([ref])[ref[1]]
        assert entry.error == ""
        (dev,) = json.loads(spec_path(env.cdi, ref[1]).read_text())["devices"]
        assert "mounts" not in dev["containerEdits"]
        assert "IQM_TOKENS_FILE=" + TOKENS_MOUNT_PATH not in dev["containerEdits"]["env"]
    finally:
        kubelet.close()
        plugin.stop()


def test_real_backend_without_secret_fails_that_claim_naming_the_secret(env: Env) -> None:
    from dataclasses import replace

    from dra_driver.cdi import CDIWriter, MissingTokenError
    from dra_driver.devices import all_devices

    real = replace(env.config.qpu("apollo-cloud"), backend="iqm", tokens_file=str(env.root / "absent.json"))
    device = all_devices([real], NODE)["apollo-cloud-r0"]
    writer = CDIWriter(
        env.cdi, tokens_dir=env.root / "staged", tokens_secret="qpu-ns/iqm-tokens", tokens_root=env.root
    )
    with pytest.raises(MissingTokenError, match="Secret iqm-tokens in namespace qpu-ns"):
        writer.write_claim("uid-4", [device])
    assert not spec_path(env.cdi, "uid-4").exists()
    # on the host (no staging) the rule is the same: never a dangling mount
    plain = CDIWriter(env.cdi, tokens_root=env.root)
    with pytest.raises(MissingTokenError, match=r"absent\.json"):
        plain.write_claim("uid-5", [device])
    assert not spec_path(env.cdi, "uid-5").exists()


def test_metrics_exposition(running: Running) -> None:
    from prometheus_client import generate_latest

    env, plugin, kubelet = running
    ref = env.claim("m", "adonis-onprem-r0")
    kubelet.prepare([ref])
    kubelet.unprepare([ref])
    plugin.reconcile_slices()
    text = generate_latest(plugin.metrics.registry).decode()
    assert "qubelet_dra_prepare_duration_seconds_count 1.0" in text
    assert "qubelet_dra_unprepare_duration_seconds_count 1.0" in text
    assert "qubelet_dra_slices_published 1.0" in text
    assert 'qubelet_dra_devices{health="healthy"} 2.0' in text
    assert "qubelet_dra_prepared_claims 0.0" in text


def test_cli_daemon_serves_without_api_server(env: Env, qpu_entry: Callable[..., dict[str, Any]]) -> None:
    """`qubelet dra-driver kubelet-plugin` against an unreachable API server: it still registers,
    answers prepare with a per-claim error, and exits 0 on SIGTERM with its sockets removed."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    kubeconfig = env.root / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "sekrit-token-123"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    inv = env.root / "qpus.yaml"
    inv.write_text(
        yaml.safe_dump(
            {
                "version": "v1",
                "qpus": [qpu_entry(health={"probe": "file", "path": str(env.health / "adonis")})],
            }
        )
    )
    qubelet = str(Path(sys.executable).with_name("qubelet"))
    args = [qubelet, "dra-driver", "kubelet-plugin", "--config", str(inv), "--node-name", NODE]
    args += [
        "--plugins-dir",
        str(env.plugins),
        "--registry-dir",
        str(env.registry),
        "--cdi-dir",
        str(env.cdi),
    ]
    args += ["--kubeconfig", str(kubeconfig), "--resync-seconds", "0.5"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kubelet = TestKubeletDRA(env.registry, timeout=15)
    try:
        assert kubelet.register().name == DRIVER_NAME
        kubelet.timeout = 20
        out = kubelet.prepare([("ns", "uid-1", "claim")])
        assert out["uid-1"].error.startswith("read resourceclaim ns/claim")
        assert proc.poll() is None
    finally:
        kubelet.close()
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    assert proc.returncode == 0, stderr[-2000:]
    assert "resource slice reconcile failed" in stderr
    assert "sekrit-token-123" not in stderr
    assert not (env.registry / f"{DRIVER_NAME}-reg.sock").exists()


def test_node_slices_are_owned_by_their_node(env: Env) -> None:
    """Issue 19 (6): like the upstream helper, node slices carry a controller ownerReference to
    the Node (uid looked up once), so the garbage collector removes them with the node; a slice
    published before, without one, is updated to carry it."""
    uid = env.api.put_node(NODE)
    plugin = env.plugin(publish_slices=False)
    for name in ("adonis", "apollo"):
        plugin.broadcaster.set(f"{name}-{'onprem' if name == 'adonis' else 'cloud'}", True)
    legacy = node_slices(env.config.qpus, NODE, plugin.broadcaster.snapshot())
    env.api.create_resource_slice(legacy[0])
    result = plugin.reconcile_slices()
    assert result.updated and not result.created
    (s,) = env.api.slices.values()
    (owner,) = s.metadata.owner_references
    assert (owner.api_version, owner.kind, owner.name, owner.uid) == ("v1", "Node", NODE, uid)
    assert owner.controller is True
    reads = env.api.calls["read_node"]
    assert not plugin.reconcile_slices().changed
    assert env.api.calls["read_node"] == reads  # the uid is cached
