"""Faults of the DRA kubelet plugin that used to lose data or stall the node (issue 10).

Each test reproduces one fault against the real plugin on real unix sockets and fails on the
code before its fix: an undecodable checkpoint, a checkpoint path that is a directory, a
checkpoint write that fails (disk full) in prepare and in unprepare, one hung ResourceClaim read
(per-claim locks), an API server that never answers (request timeout), and orphan CDI specs
left by a kill -9 (start-up sweep). docs/reliability.md maps each guarantee to its test.
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from doubles.kubelet_dra import TestKubeletDRA
from test_dra_kubelet_plugin import CLOUD_POOL, Env

from dra_driver import checkpoint as checkpoint_module
from dra_driver.cdi import spec_path
from dra_driver.constants import DRIVER_NAME
from dra_driver.kubelet_plugin import KubeletPlugin

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def env() -> Iterator[Env]:
    import shutil

    e = Env()
    yield e
    shutil.rmtree(e.root, ignore_errors=True)


def checkpoint_file(env: Env) -> Path:
    return env.plugins / DRIVER_NAME / "checkpoint.json"


def errors_logged(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno >= logging.ERROR]


class Started:
    """A started plugin and a registered test kubelet (closed by :meth:`close`)."""

    def __init__(self, env: Env, **kw: Any) -> None:
        self.plugin = env.plugin(**kw)
        self.plugin.start()
        self.kubelet = TestKubeletDRA(env.registry)
        self.kubelet.register()

    def close(self) -> None:
        self.kubelet.close()
        self.plugin.stop()


# -- Severe 1: a checkpoint that cannot be decoded ------------------------------------------


def test_checkpoint_with_flipped_high_bit_is_set_aside(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """One high bit flipped makes the file invalid UTF-8: log, set it aside, start empty."""
    first = Started(env)
    ref = env.claim("a", "adonis-onprem-r0")
    assert first.kubelet.prepare([ref])[ref[1]].error == ""
    first.close()
    path = checkpoint_file(env)
    data = bytearray(path.read_bytes())
    middle = data.index(b'"namespace"')
    data[middle + 2] |= 0x80  # 'a' → 0xE1: a UTF-8 lead byte without continuation bytes
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        plugin = env.plugin()  # used to raise UnicodeDecodeError here, every start
    assert plugin.driver.state.uids() == []
    (line,) = errors_logged(caplog, "qubelet.dra.checkpoint")
    assert "unusable checkpoint" in line
    assert not path.exists()
    (aside,) = path.parent.glob("checkpoint.json.bad-*")
    assert aside.read_bytes() == bytes(data)  # kept for inspection, byte for byte
    second = Started(env)
    try:  # kubelet re-prepares the claim, and the checkpoint is written anew
        assert second.kubelet.prepare([ref])[ref[1]].error == ""
        assert list(json.loads(path.read_text())["claims"]) == [ref[1]]
    finally:
        second.close()


def test_checkpoint_path_that_is_a_directory_is_set_aside(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    path = checkpoint_file(env)
    path.mkdir(parents=True)
    (path / "junk").write_text("x")
    with caplog.at_level(logging.ERROR):
        started = Started(env)  # used to raise IsADirectoryError
    try:
        assert len(errors_logged(caplog, "qubelet.dra.checkpoint")) == 1
        (aside,) = path.parent.glob("checkpoint.json.bad-*")
        assert (aside / "junk").read_text() == "x"
        ref = env.claim("a", "adonis-onprem-r0")
        assert started.kubelet.prepare([ref])[ref[1]].error == ""
        assert path.is_file()
    finally:
        started.close()


def test_deeply_nested_checkpoint_is_set_aside(env: Env) -> None:
    path = checkpoint_file(env)
    path.parent.mkdir(parents=True)
    path.write_text("[" * 100_000 + "]" * 100_000)
    plugin = env.plugin()
    assert plugin.driver.state.uids() == []
    assert not path.exists()


# -- Severe 2: a checkpoint write that fails -------------------------------------------------


class DiskFull:
    """Makes every checkpoint write fail with ENOSPC while armed (the write, not the CDI spec)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        real = checkpoint_module.atomic_write_json

        def write(path: Path, doc: Any) -> None:
            if self.armed:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            real(path, doc)

        monkeypatch.setattr(checkpoint_module, "atomic_write_json", write)


def test_failed_checkpoint_write_in_prepare_leaves_nothing_behind(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = DiskFull(monkeypatch)
    started = Started(env)
    try:
        ref = env.claim("job", "apollo-cloud-r0", pool=CLOUD_POOL)
        uid = ref[1]
        disk.armed = True
        with caplog.at_level(logging.INFO, logger="qubelet.dra.driver"):
            first = started.kubelet.prepare([ref])[uid]
        assert first.error == "write checkpoint: No space left on device"
        assert not spec_path(env.cdi, uid).exists()
        assert started.plugin.driver.state.uids() == []
        assert not [r for r in caplog.records if r.getMessage() == "prepared claim"]
        # The retry while the disk is still full must fail again, not answer a dangling CDI id.
        assert started.kubelet.prepare([ref])[uid].error.startswith("write checkpoint")
        assert not spec_path(env.cdi, uid).exists()
        disk.armed = False
        retry = started.kubelet.prepare([ref])[uid]
        assert retry.error == ""
        (cdi_id,) = retry.devices[0].cdi_device_ids
        assert spec_path(env.cdi, uid).exists() and cdi_id.endswith(f"={uid}-apollo-cloud-r0")
    finally:
        started.close()


def test_failed_checkpoint_write_in_unprepare_keeps_the_claim(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskFull(monkeypatch)
    started = Started(env)
    ref = env.claim("job", "adonis-onprem-r1")
    uid = ref[1]
    try:
        assert started.kubelet.prepare([ref])[uid].error == ""
        disk.armed = True
        assert started.kubelet.unprepare([ref])[uid].error.startswith("write checkpoint")
        # Still prepared everywhere: memory, checkpoint and CDI spec agree.
        assert started.plugin.driver.state.uids() == [uid]
        assert spec_path(env.cdi, uid).exists()
        # A retried prepare (kubelet did not see the unprepare succeed) still answers the claim.
        assert started.kubelet.prepare([ref])[uid].error == ""
    finally:
        started.close()
    disk.armed = False
    # After a restart the claim is still there (memory never forgot what disk remembers) ...
    again = Started(env)
    try:
        assert again.plugin.driver.state.uids() == [uid]
        assert again.kubelet.unprepare([ref])[uid].error == ""
        assert not spec_path(env.cdi, uid).exists()
    finally:
        again.close()
    # ... and an unprepare that succeeded stays done across the next restart.
    assert env.plugin().driver.state.uids() == []


# -- Severe 3: one slow API read stalls every call -------------------------------------------


class HangingReads:
    """Wraps the fake API: reading the claims named in ``hang`` blocks until released."""

    def __init__(self, api: Any, hang: set[str]) -> None:
        self._api = api
        self.hang = hang
        self.release = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def read_resource_claim(self, namespace: str, name: str) -> Any:
        if name in self.hang:
            self.entered.set()
            self.release.wait(30)
        return self._api.read_resource_claim(namespace, name)


def test_hung_claim_read_blocks_no_other_claim(env: Env) -> None:
    hanging = HangingReads(env.api, {"slow"})
    env.api = hanging  # type: ignore[assignment]
    started = Started(env)
    try:
        done = env.claim("done", "adonis-onprem-r1")
        assert started.kubelet.prepare([done])[done[1]].error == ""
        slow = env.claim("slow", "adonis-onprem-r0")
        results: dict[str, Any] = {}
        blocked = threading.Thread(target=lambda: results.update(started.kubelet.prepare([slow])))
        blocked.start()
        assert hanging.entered.wait(5)
        # Unrelated claims go through while "slow" is stuck (the test kubelet's deadline is 5 s).
        fast = env.claim("fast", "apollo-cloud-r0", pool=CLOUD_POOL)
        assert started.kubelet.prepare([fast])[fast[1]].error == ""
        assert started.kubelet.unprepare([done])[done[1]].error == ""
        assert started.kubelet.unprepare([fast])[fast[1]].error == ""
        assert blocked.is_alive()
        hanging.release.set()
        blocked.join(10)
        assert results[slow[1]].error == ""
        assert sorted(started.plugin.driver.state.uids()) == [slow[1]]
        assert len(started.plugin.driver.claim_locks) == 0  # no lock left behind
    finally:
        hanging.release.set()
        started.close()


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung API server or QPU)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connected = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            self.connected.set()

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def test_unexpected_client_error_fails_only_its_claim(env: Env) -> None:
    """An exception nobody translated fails its own claim; the others in the call are kept."""

    class Broken(HangingReads):
        def read_resource_claim(self, namespace: str, name: str) -> Any:
            if name == "broken":
                raise RuntimeError("connection pool is closed")
            return self._api.read_resource_claim(namespace, name)

    env.api = Broken(env.api, set())  # type: ignore[assignment]
    started = Started(env)
    try:
        good = env.claim("good", "adonis-onprem-r0")
        broken = env.claim("broken", "adonis-onprem-r1")
        out = started.kubelet.prepare([good, broken])
        assert out[good[1]].error == ""
        assert (
            out[broken[1]].error
            == "prepare team-a/broken: internal error: RuntimeError connection pool is closed"
        )
        assert started.plugin.driver.state.uids() == [good[1]]  # persisted, so its spec is owned
        assert spec_path(env.cdi, good[1]).exists() and not spec_path(env.cdi, broken[1]).exists()
    finally:
        started.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def silent_api_server(silent_server: SilentServer) -> str:
    return silent_server.url


def test_claim_read_from_hung_api_server_times_out(env: Env, silent_api_server: str) -> None:
    """The real kubernetes client against a server that never answers: a per-claim error."""
    from kubernetes import client

    from dra_driver.client import KubeResourceAPI

    configuration = client.Configuration()
    configuration.host = silent_api_server
    configuration.retries = False
    api = KubeResourceAPI(api_client=client.ApiClient(configuration), request_timeout=0.5)
    env.api = api  # type: ignore[assignment]
    started = Started(env, publish_slices=False)
    try:
        started.kubelet.timeout = 10
        out = started.kubelet.prepare([("team-a", "uid-1", "claim")])
        assert out["uid-1"].error.startswith("read resourceclaim team-a/claim: ")
        assert "timed out" in out["uid-1"].error.lower()
    except grpc.RpcError as exc:  # before the fix: no request timeout, kubelet's deadline hits
        pytest.fail(f"prepare did not answer: {exc.code()}")
    finally:
        started.close()


# -- After a kill -9: orphan CDI specs ------------------------------------------------------


def test_start_up_sweeps_orphan_cdi_specs(env: Env) -> None:
    first = Started(env)
    kept = env.claim("kept", "adonis-onprem-r0")
    assert first.kubelet.prepare([kept])[kept[1]].error == ""
    first.close()
    # What a kill -9 leaves: a spec written but never checkpointed, a torn temp file.
    orphan = spec_path(env.cdi, "uid-orphan")
    orphan.write_text(spec_path(env.cdi, kept[1]).read_text())
    torn = env.cdi / f".{DRIVER_NAME}-uid-torn.json.abc123.tmp"
    torn.write_text("{")
    other_driver = env.cdi / "gpu.example.com-uid-orphan.json"
    other_driver.write_text("{}")
    second = Started(env)
    try:
        assert not orphan.exists()
        assert not torn.exists()
        assert other_driver.exists()  # another driver's spec is not ours to remove
        assert spec_path(env.cdi, kept[1]).exists()
        assert second.kubelet.prepare([kept])[kept[1]].error == ""
    finally:
        second.close()


def test_kubelet_plugin_keeps_serving_when_cdi_sweep_fails(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin: KubeletPlugin = env.plugin()

    def broken(owned: set[str]) -> list[str]:
        raise PermissionError(errno.EACCES, "Permission denied", str(env.cdi))

    monkeypatch.setattr(plugin.driver.cdi, "sweep", broken)
    assert plugin.driver.sweep_orphan_specs() == []


# -- SIGTERM during start-up -----------------------------------------------------------------


def test_sigterm_during_start_up_probe_exits_promptly(env: Env, silent_server: SilentServer) -> None:
    """A QPU health endpoint that hangs must not hold the daemon past Kubernetes' 30 s grace."""
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
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    qpu = {
        "vendor": "IQM",
        "model": "Adonis",
        "qubits": 5,
        "technology": "superconducting",
        "location": "onprem",
        "backend": "fake:IQMFakeAdonis",
        "health": {"probe": "http", "url": f"{silent_server.url}/health", "timeoutSeconds": 25},
    }
    inv = env.root / "qpus.yaml"
    inv.write_text(yaml.safe_dump({"version": "v1", "qpus": [{**qpu, "name": f"q{i}"} for i in range(2)]}))
    args = [sys.executable, "-c", "import sys; from qubelet.cli import main; sys.exit(main())"]
    args += ["dra-driver", "kubelet-plugin", "--config", str(inv), "--node-name", "node-a"]
    args += [
        "--plugins-dir",
        str(env.plugins),
        "--registry-dir",
        str(env.registry),
        "--cdi-dir",
        str(env.cdi),
    ]
    args += ["--kubeconfig", str(kubeconfig)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert silent_server.connected.wait(30), "the start-up probe never reached the QPU"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)  # the probes alone would hold it 25 s and more
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("kubelet plugin did not exit within 15 s of SIGTERM during its start-up probe")
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not (env.registry / f"{DRIVER_NAME}-reg.sock").exists()
