"""Node faults that used to lose prepared claims, as real processes (issue 23, items 1-3).

The DRA kubelet plugin runs as its own process (``tests/doubles/dra_plugin_process.py``: the real
CLI with the in-memory API double, or the real CLI against a hung API server double), and the
test kubelet talks to it on the real unix sockets:

- reboot: ``/var/run/cdi`` is a tmpfs, the checkpoint under ``/var/lib/kubelet`` survives; on
  start the plugin writes the specs of every checkpointed claim again, byte for byte;
- corrupt checkpoint: the plugin rebuilds the checkpoint from the specs on disk and deletes none
  of them; unprepare still removes them; set-aside copies have unique names and are bounded;
- hung API server: three claims in one NodePrepareResources call answered well inside kubelet's
  45 s, each with an error that says "timed out"; SIGTERM during that call exits well inside the
  grace period the manifest sets.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from doubles.kubelet_dra import TestKubeletDRA

from dra_driver.cdi import spec_path
from qubelet.inventory.names import DRIVER_NAME

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
NODE = "node-r"
CLOUD_POOL = "cloud/apollo"


def inventory(root: Path) -> dict[str, Any]:
    return {
        "version": "v1",
        "qpus": [
            {
                "name": "adonis",
                "vendor": "IQM",
                "model": "Adonis",
                "qubits": 5,
                "technology": "superconducting",
                "location": "onprem",
                "nodes": [NODE],
                "backend": "fake:IQMFakeAdonis",
                "replicas": 4,
                "health": {"probe": "file", "path": str(root / "adonis.health"), "intervalSeconds": 0.2},
            },
            {
                "name": "apollo",
                "vendor": "IQM",
                "model": "Apollo",
                "qubits": 20,
                "technology": "superconducting",
                "location": "cloud",
                "backend": "fake:IQMFakeApollo",
                "endpoint": "https://qpu.example.com/apollo",
                "replicas": 4,
                "health": {"probe": "file", "path": str(root / "apollo.health"), "intervalSeconds": 0.2},
            },
        ],
    }


class Node:
    """A fake node's directories and one DRA kubelet plugin process at a time."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rcv"))
        for q in ("adonis", "apollo"):
            (self.root / f"{q}.health").write_text("healthy")
        self.config = self.root / "qpus.yaml"
        self.config.write_text(yaml.safe_dump(inventory(self.root)))
        self.plugins = self.root / "plugins"
        self.registry = self.root / "registry"
        self.cdi = self.root / "cdi"
        self.claims_file = self.root / "claims.json"
        self.claims: list[dict[str, str]] = []
        self.proc: subprocess.Popen[str] | None = None
        self.kubelet: TestKubeletDRA | None = None
        self.starts = 0

    @property
    def checkpoint(self) -> Path:
        return self.plugins / DRIVER_NAME / "checkpoint.json"

    def add_claim(self, name: str, device: str, pool: str = NODE) -> tuple[str, str, str]:
        uid = f"uid-{name}"
        self.claims.append({"namespace": "team-a", "name": name, "uid": uid, "pool": pool, "device": device})
        return ("team-a", uid, name)

    def start(self, extra: list[str] | None = None, api: list[str] | None = None) -> TestKubeletDRA:
        """Start the plugin (API double, or ``api`` = real CLI argv prefix) and register."""
        self.claims_file.write_text(json.dumps({"claims": self.claims}))
        self.starts += 1
        argv = api or [
            sys.executable,
            str(TESTS / "doubles" / "dra_plugin_process.py"),
            str(self.claims_file),
        ]
        argv += ["--config", str(self.config), "--node-name", NODE, "--plugins-dir", str(self.plugins)]
        argv += ["--registry-dir", str(self.registry), "--cdi-dir", str(self.cdi), "--resync-seconds", "30"]
        argv += extra or []
        self.log = self.root / f"plugin.{self.starts}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, text=True, cwd=REPO)
        self.kubelet = TestKubeletDRA(self.registry, timeout=60)
        self.kubelet.register()
        self.kubelet.timeout = 50  # kubelet's own deadline is 45 s; the test measures under it
        return self.kubelet

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Signal the plugin; seconds until it exited (fails the test past 40 s)."""
        assert self.proc is not None
        if self.kubelet is not None:
            self.kubelet.close()
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"plugin did not exit within 40 s of signal {sig}")
        return time.monotonic() - started

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("plugin.*.log")))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.kubelet is not None:
            self.kubelet.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def node() -> Iterator[Node]:
    n = Node()
    yield n
    n.close()


def specs(node: Node) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(node.cdi.glob(f"{DRIVER_NAME}-*.json"))}


def test_reboot_recreates_device_files_of_checkpointed_claims(node: Node) -> None:
    """tmpfs /var/run/cdi emptied by a reboot: the specs come back before kubelet asks."""
    onprem = node.add_claim("onprem", "adonis-r0")
    cloud = node.add_claim("cloud", "apollo-r1", pool=CLOUD_POOL)
    kubelet = node.start()
    out = kubelet.prepare([onprem, cloud])
    assert out[onprem[1]].error == "" and out[cloud[1]].error == ""
    before = specs(node)
    assert len(before) == 2
    node.stop(signal.SIGKILL)  # power cut: no clean shutdown
    shutil.rmtree(node.cdi)  # the tmpfs is empty after the reboot
    kubelet = node.start()
    assert specs(node) == before  # the containers' CDI ids resolve again, same content
    # kubelet, which never forgot the claims, gets the same answer as before the reboot ...
    again = kubelet.prepare([onprem, cloud])
    for ref in (onprem, cloud):
        assert list(again[ref[1]].devices[0].cdi_device_ids) == list(out[ref[1]].devices[0].cdi_device_ids)
    # ... and the unprepare after the pod ends removes them.
    assert kubelet.unprepare([onprem, cloud])[onprem[1]].error == ""
    assert specs(node) == {}
    assert "recreated CDI specs of checkpointed claims" in node.logs()
    assert node.stop() < 10


def corrupt(path: Path, how: str) -> None:
    if how == "flipped-byte":
        data = bytearray(path.read_bytes())
        data[data.index(b'"namespace"') + 2] ^= 0x80
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:  # a directory where the file was
        path.unlink()
        path.mkdir()
        (path / "junk").write_text("x")


@pytest.mark.parametrize("how", ["flipped-byte", "truncated", "directory"])
def test_corrupt_checkpoint_keeps_live_device_files(node: Node, how: str) -> None:
    """The checkpoint is rebuilt from the specs on disk; no live spec is removed as an orphan."""
    refs = [node.add_claim("a", "adonis-r0"), node.add_claim("b", "apollo-r0", pool=CLOUD_POOL)]
    kubelet = node.start()
    first = kubelet.prepare(refs)
    assert all(r.error == "" for r in first.values())
    before = specs(node)
    node.stop()
    corrupt(node.checkpoint, how)
    kubelet = node.start()
    assert specs(node) == before  # restarted containers of running pods still find their devices
    assert "removed orphan CDI specs" not in node.logs()
    rebuilt = json.loads(node.checkpoint.read_text())["claims"]
    assert sorted(rebuilt) == sorted(r[1] for r in refs)
    assert "rebuilt checkpoint from CDI specs" in node.logs()
    # kubelet asks again (after its own restart): the same devices, from the API this time
    again = kubelet.prepare(refs)
    for ref in refs:
        assert again[ref[1]].error == ""
        assert list(again[ref[1]].devices[0].cdi_device_ids) == list(first[ref[1]].devices[0].cdi_device_ids)
        assert list(again[ref[1]].devices[0].request_names) == ["qpu"]
    # the pod ends: unprepare removes the specs the rebuilt checkpoint owns
    out = kubelet.unprepare(refs)
    assert all(r.error == "" for r in out.values())
    assert specs(node) == {}
    node.stop()


def test_corrupt_checkpoint_unprepare_without_reprepare(node: Node) -> None:
    """kubelet does not re-prepare claims it already prepared: unprepare alone must clean up."""
    ref = node.add_claim("a", "adonis-r1")
    kubelet = node.start()
    assert kubelet.prepare([ref])[ref[1]].error == ""
    node.stop()
    corrupt(node.checkpoint, "flipped-byte")
    kubelet = node.start()
    assert spec_path(node.cdi, ref[1]).exists()
    assert kubelet.unprepare([ref])[ref[1]].error == ""
    assert not spec_path(node.cdi, ref[1]).exists()
    node.stop()


def test_set_aside_checkpoints_are_unique_and_bounded(node: Node) -> None:
    """Many corrupt checkpoints within one second: each copy kept under its own name, at most 5."""
    from dra_driver.checkpoint import MAX_SET_ASIDE, Checkpoint

    node.checkpoint.parent.mkdir(parents=True)
    contents = [f"garbage {i}".encode() for i in range(MAX_SET_ASIDE + 3)]
    for data in contents:
        node.checkpoint.write_bytes(data)
        assert Checkpoint(node.checkpoint).load() == {}
    kept = sorted(node.checkpoint.parent.glob("checkpoint.json.bad-*"))
    assert len(kept) == MAX_SET_ASIDE
    # the newest ones are kept, none overwritten by another set aside in the same second
    assert {p.read_bytes() for p in kept} == set(contents[-MAX_SET_ASIDE:])


# -- hung API server ------------------------------------------------------------------------


HUNG_API = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept(); held.append(c)  # accepted, read never answered
"""


@pytest.fixture
def hung_api(node: Node) -> Iterator[str]:
    """A hung API server double, its own process: accepts connections, never answers."""
    proc = subprocess.Popen([sys.executable, "-c", HUNG_API], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    kubeconfig = node.root / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    yield str(kubeconfig)
    proc.kill()
    proc.wait()


def manifest_grace_seconds() -> int:
    docs = list(yaml.safe_load_all((REPO / "manifests" / "dra" / "kubelet-plugin.yaml").read_text()))
    (ds,) = [d for d in docs if d and d.get("kind") == "DaemonSet"]
    return int(ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def real_cli() -> list[str]:
    return [sys.executable, "-c", "import sys; from qubelet.cli import main; sys.exit(main())"]


def test_hung_api_three_claims_answered_before_kubelet_deadline(node: Node, hung_api: str) -> None:
    """Default client settings: the claims are read in parallel, once each, and time out."""
    refs = [("team-a", f"uid-{i}", f"claim-{i}") for i in range(3)]
    kubelet = node.start(["--kubeconfig", hung_api], api=[*real_cli(), "dra-driver", "kubelet-plugin"])
    started = time.monotonic()
    out = kubelet.prepare(refs)
    took = time.monotonic() - started
    assert took < 30, f"3-claim prepare took {took:.1f} s against a hung API"
    for ns, uid, name in refs:
        assert out[uid].error.startswith(f"read resourceclaim {ns}/{name}: "), out[uid].error
        assert "timed out" in out[uid].error
        assert "MaxRetryError" not in out[uid].error
    node.stop()


def test_sigterm_during_hung_prepare_exits_within_grace(node: Node, hung_api: str) -> None:
    grace = manifest_grace_seconds()
    refs = [("team-a", f"uid-{i}", f"claim-{i}") for i in range(3)]
    kubelet = node.start(["--kubeconfig", hung_api], api=[*real_cli(), "dra-driver", "kubelet-plugin"])
    answers: dict[str, Any] = {}
    call = threading.Thread(target=lambda: answers.update(kubelet.prepare(refs)), daemon=True)
    call.start()
    time.sleep(1.0)  # the reads are hanging now
    assert node.proc is not None
    started = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    try:
        node.proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pytest.fail(f"plugin still running {grace} s (the manifest's grace period) after SIGTERM")
    took = time.monotonic() - started
    assert node.proc.returncode == 0, node.logs()
    assert took < grace / 2, f"SIGTERM took {took:.1f} s of a {grace} s grace period"
    assert "Traceback" not in node.logs()


def test_hung_api_double_is_really_hung(hung_api: str) -> None:
    """The double accepts and never answers (so the tests above measure a hang, not a refusal)."""
    server = yaml.safe_load(Path(hung_api).read_text())["clusters"][0]["cluster"]["server"]
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(1.0)
        with pytest.raises(socket.timeout):
            conn.recv(1)


# -- registration socket deleted -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readyz(port: int) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_deleted_registration_socket_is_recreated_and_readyz_follows(node: Node) -> None:
    """An admin's rm (or a kubelet cleanup) of the -reg.sock: back within seconds, re-registered."""
    port = free_port()
    kubelet = node.start(["--metrics-port", str(port)])
    wait_for(lambda: readyz(port) == 200, 10, "not ready after registration")
    reg = node.registry / f"{DRIVER_NAME}-reg.sock"
    reg.unlink()
    saw_not_ready = False
    deadline = time.monotonic() + 10
    while not reg.is_socket():  # (the new file may reuse the old inode number)
        saw_not_ready |= readyz(port) != 200
        assert time.monotonic() < deadline, (
            "registration socket not recreated within 10 s\n" + node.logs()[-3000:]
        )
        time.sleep(0.05)
    # until kubelet's plugin watcher registers the new socket, the node cannot prepare: not ready
    assert readyz(port) == 503 or saw_not_ready
    assert readyz(port) == 503
    kubelet.close()
    again = TestKubeletDRA(node.registry, timeout=10)
    again.register()
    node.kubelet = again
    wait_for(lambda: readyz(port) == 200, 10, "not ready after kubelet registered the new socket")
    assert "recreated registration socket" in node.logs()
    node.stop()
