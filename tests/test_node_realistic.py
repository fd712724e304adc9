"""The node agents as their DaemonSets run them, on a fake node with kubelet's real permissions.

No kubelet or container runtime runs here, so this test plays both from the rendered manifests
(``kubectl kustomize manifests/overlays/dra`` and ``.../device-plugin``):

- **the node**: kubelet's directory tree under a temporary root with kubelet's owners and modes
  (root, 0750 for ``plugins/``, ``plugins_registry/`` and ``device-plugins/``; root 0755 for
  ``/var/run/cdi``), ConfigMap, Secret (optional, absent), emptyDir and service-account volumes
  as kubelet lays them out;
- **the runtime** (``doubles/pod_sandbox.py`` in ``unshare -m``): every volume bind-mounted at
  its ``mountPath``, the root filesystem read-only when the spec says so, then the container's
  command and args with its env, as its ``securityContext`` user, with exactly its capabilities
  (``setpriv``), the image's USER and ENTRYPOINT where the spec has none;
- **kubelet** (``doubles/kubelet_dra.py``, ``doubles/kubelet_deviceplugin.py``) and the **API
  server** (``doubles/fake_apiserver_http.py``: HTTPS, bearer token, schema-validated writes).

The agents must register, advertise and prepare. A spec without ``runAsUser: 0`` (the image's
non-root user, as the DRA manifest once had) must fail to create its sockets. The test needs
root, ``unshare``, ``setpriv``, ``kubectl``, ``openssl`` and overlay mounts; without one it
skips and says which.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from doubles.fake_apiserver_http import FakeAPIServerHTTP, make_certificate
from doubles.fake_resource_api import FakeResourceAPI, allocated_claim
from doubles.kubelet_deviceplugin import TestKubelet
from doubles.kubelet_dra import TestKubeletDRA

from qubelet.inventory.names import DRIVER_NAME

pytestmark = pytest.mark.timeout(400)
REPO = Path(__file__).resolve().parent.parent
SANDBOX = Path(__file__).resolve().parent / "doubles" / "pod_sandbox.py"
DOCKERFILE = REPO / "images" / "node" / "Dockerfile"
NODE = "qpu-node-1"  # the example inventory cables adonis-onprem to this node
NAMESPACE = "qubelet-system"
#: containerd's default capabilities, for containers that do not drop ALL.
RUNTIME_DEFAULT_CAPS = [
    *("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID"),
    *("SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"),
]
#: Kubelet's directories (relative to the node root) with the owner and mode kubelet gives them.
KUBELET_TREE = {
    "var/lib/kubelet": 0o750,
    "var/lib/kubelet/plugins": 0o750,
    "var/lib/kubelet/plugins_registry": 0o750,
    "var/lib/kubelet/device-plugins": 0o750,
    "run/cdi": 0o755,
}
#: Generous: the example inventory's fake probes build IQM's simulators at start-up, which
#: takes tens of seconds on a loaded machine before the sockets appear.
START_TIMEOUT = 240.0
PROBES = ("livenessProbe", "readinessProbe")


def _missing_feature() -> str | None:
    if Path(sys.prefix).absolute().is_relative_to("/tmp"):
        # The DaemonSets mount an emptyDir at /tmp, which hides a checkout (and its .venv) there.
        return f"the environment ({sys.prefix}) is under /tmp, which the pods' /tmp emptyDir hides"
    if os.geteuid() != 0:
        return "needs root (kubelet's directories are root-owned 0750; mounts need CAP_SYS_ADMIN)"
    for tool in ("unshare", "setpriv", "kubectl", "openssl", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("u", "w", "m"):
            Path(tmp, d).mkdir()
        probe = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "--", "mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={tmp}/m,upperdir={tmp}/u,workdir={tmp}/w", f"{tmp}/m"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    if probe.returncode != 0:
        return f"mount namespaces with overlay mounts unavailable: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module", autouse=True)
def _features() -> None:
    missing = _missing_feature()
    if missing:
        pytest.skip(f"node-realistic test skipped: {missing}")


def render(overlay: str, components: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay, through a throwaway overlay when adding components."""
    with tempfile.TemporaryDirectory(prefix="kust") as tmp:
        target = REPO / "manifests" / "overlays" / overlay
        if components:
            (Path(tmp) / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": [os.path.relpath(target, tmp)],
                        "components": [
                            os.path.relpath(REPO / "manifests" / "components" / c, tmp) for c in components
                        ],
                    }
                )
            )
            target = Path(tmp)
        out = subprocess.run(
            ["kubectl", "kustomize", str(target)], capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def image() -> dict[str, Any]:
    """USER, ENTRYPOINT and ENV of the runtime stage of the node image."""
    text = DOCKERFILE.read_text().split("AS runtime", 1)[1]
    user = re.search(r"^USER (\d+)(?::(\d+))?", text, re.M)
    entry = re.search(r"^ENTRYPOINT (\[.*\])", text, re.M)
    assert user and entry
    env: dict[str, str] = {}
    block = re.search(r"^ENV (.*?)(?=^\S)", text, re.M | re.S)
    assert block
    for key, value in re.findall(r"(\w+)=(\S+)", block.group(1).replace("\\\n", " ")):
        env[key] = value
    return {
        "uid": int(user[1]),
        "gid": int(user[2] or user[1]),
        "entrypoint": json.loads(entry[1]),
        "env": env,
    }


class FakeNode:
    """A node's filesystem under ``root`` and the volumes kubelet would prepare for one pod."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "var").mkdir(parents=True)
        (root / "var" / "run").symlink_to("../run")  # as on every systemd node
        for rel, mode in KUBELET_TREE.items():
            path = root / rel
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, 0, 0)
            os.chmod(path, mode)
        self.volumes = root / "pod-volumes"
        self.volumes.mkdir()

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def volume_source(self, volume: dict[str, Any], docs: list[dict[str, Any]]) -> Path:
        """Where kubelet would put this volume on the node."""
        name = volume["name"]
        if "hostPath" in volume:
            path = self.host(volume["hostPath"]["path"])
            kind = volume["hostPath"].get("type", "")
            if kind == "DirectoryOrCreate":
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
            assert path.is_dir(), f"hostPath {volume['hostPath']['path']} ({kind}) missing on the node"
            return path
        target = self.volumes / name
        target.mkdir()
        if "configMap" in volume:
            (cm,) = [
                d
                for d in docs
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
            ]
            items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in cm["data"]]
            for item in items:
                (target / item["path"]).write_text(cm["data"][item["key"]])
                os.chmod(target / item["path"], volume["configMap"].get("defaultMode", 0o644))
        elif "secret" in volume:
            assert volume["secret"].get("optional") is True  # absent optional Secret: an empty dir
        elif "emptyDir" in volume:
            os.chmod(target, 0o777)
        else:
            raise AssertionError(f"volume kind not modelled: {volume}")
        return target

    def service_account(self, token: str, ca: Path) -> Path:
        target = self.volumes / "kube-api-access"
        target.mkdir()
        (target / "token").write_text(token)
        shutil.copy(ca, target / "ca.crt")
        (target / "namespace").write_text(NAMESPACE)
        for f in target.iterdir():
            os.chmod(f, 0o644)
        return target


def field_ref(path: str) -> str:
    return {"spec.nodeName": NODE, "metadata.namespace": NAMESPACE, "metadata.name": "agent-pod"}[path]


def container_spec(
    docs: list[dict[str, Any]], daemonset: str, node: FakeNode, scratch: Path, api: FakeAPIServerHTTP | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sandbox spec for the DaemonSet's container, resolved as kubelet and the runtime would."""
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == daemonset]
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    img = image()
    env = {
        **img["env"],
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",  # /opt/qubelet/bin here
    }
    for e in c.get("env", []):
        env[e["name"]] = e["value"] if "value" in e else field_ref(e["valueFrom"]["fieldRef"]["fieldPath"])
    volumes = {v["name"]: node.volume_source(v, docs) for v in pod.get("volumes", [])}
    mounts = [
        {"source": str(volumes[m["name"]]), "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))}
        for m in c.get("volumeMounts", [])
    ]
    automount = pod.get("automountServiceAccountToken", True)
    if automount and api is not None:
        ca = scratch / "apiserver.crt"
        mounts.append(
            {
                "source": str(node.service_account(api.token, ca)),
                "target": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            }
        )
        env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(api.port))
    sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
    uid = sc.get("runAsUser", img["uid"])
    gid = sc.get("runAsGroup", 0 if uid == 0 else img["gid"])
    caps_sc = sc.get("capabilities", {})
    drop = {x.upper() for x in caps_sc.get("drop", [])}
    caps = [] if "ALL" in drop else [x for x in RUNTIME_DEFAULT_CAPS if x not in drop]
    caps += [x.upper() for x in caps_sc.get("add", [])]
    argv = list(c.get("command") or img["entrypoint"]) + list(c.get("args", []))
    # The one change to the rendered spec, and only because the host's ports are shared here.
    argv, c = _on_a_free_metrics_port(argv, c)
    spec = {
        "mounts": mounts,
        "scratch": str(scratch / "overlays"),
        "readOnlyRootFilesystem": bool(sc.get("readOnlyRootFilesystem")),
        "uid": uid,
        "gid": gid,
        "capabilities": [f"CAP_{x}" for x in caps],
        "env": env,
        "argv": argv,
    }
    return spec, c


def _free_port() -> int:
    """A TCP port nothing listens on right now, on any address (the daemons bind all of them)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def _on_a_free_metrics_port(argv: list[str], c: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """``argv`` and container ``c`` with the metrics port moved to a free one; nothing else changes.

    The manifests pin 9402/9410 (a pod has its own network namespace on a real node), but here the
    daemon shares the host's: another process on those ports (a second test run, a local daemon)
    would fail the test with "Address already in use". So the port in ``--metrics-port`` and the
    ``metrics`` containerPort (which the probes name) move together to a free one.
    """
    old = _metrics_port(c)
    port = _free_port()
    moved: list[str] = []
    for i, arg in enumerate(argv):
        if arg == f"--metrics-port={old}":
            moved.append(f"--metrics-port={port}")
        elif arg == str(old) and i > 0 and argv[i - 1] == "--metrics-port":
            moved.append(str(port))
        else:
            moved.append(arg)
    assert sum(a != b for a, b in zip(argv, moved, strict=True)) == 1, f"no --metrics-port {old} in {argv}"
    moved_c = {
        **c,
        "ports": [{**p, "containerPort": port} if p["name"] == "metrics" else p for p in c["ports"]],
    }
    for probe in PROBES:  # a probe naming the port follows it; one giving the number must too
        if probe in c and c[probe]["httpGet"]["port"] == old:
            moved_c[probe] = {**c[probe], "httpGet": {**c[probe]["httpGet"], "port": port}}
    return moved, moved_c


class Pod:
    """One container started through the sandbox; ``output()`` after :meth:`stop`."""

    def __init__(self, spec: dict[str, Any], scratch: Path) -> None:
        path = scratch / "container.json"
        path.write_text(json.dumps(spec))
        self.log = scratch / "container.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "--", sys.executable, str(SANDBOX), str(path)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd="/",
        )  # fmt: skip

    def status(self) -> dict[str, str]:
        """The daemon's /proc status (unshare, the sandbox and setpriv exec in place: same pid)."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return int(self.proc.returncode)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def scratch() -> Iterator[Path]:
    # short: unix socket paths under it are limited to 107 bytes
    path = Path(tempfile.mkdtemp(prefix="node", dir="/tmp"))
    yield path
    subprocess.run(["umount", "-R", str(path)], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def apiserver(scratch: Path) -> Iterator[FakeAPIServerHTTP]:
    cert, key = make_certificate(scratch)
    server = FakeAPIServerHTTP(FakeResourceAPI(), secrets.token_hex(16), cert, key, {NODE: "v1.34.1"}).start()
    yield server
    server.stop()


def _wait(predicate: Any, timeout: float, what: str, pod: Pod) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if pod.proc.poll() is not None:
            break
        time.sleep(0.2)
    pod.stop()
    raise AssertionError(f"{what} did not happen; container output:\n{pod.output()[-3000:]}")


def _http(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _metrics_port(c: dict[str, Any]) -> int:
    return int({p["name"]: p["containerPort"] for p in c["ports"]}["metrics"])


def _probe(c: dict[str, Any], probe: str) -> int:
    """Status of the container's HTTP ``probe`` now, a named port resolved as kubelet does."""
    get = c[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = {p["name"]: p["containerPort"] for p in c["ports"]}[port]
    return _http(int(port), get["path"])


def test_dra_kubelet_plugin_registers_advertises_and_prepares(
    scratch: Path, apiserver: FakeAPIServerHTTP
) -> None:
    docs = render("dra")
    node = FakeNode(scratch / "node")
    spec, container = container_spec(docs, "qubelet-dra-kubelet-plugin", node, scratch, apiserver)
    assert spec["uid"] == 0 and spec["capabilities"] == []
    api = apiserver.api
    onprem = api.put_claim(
        allocated_claim("qubelet-workloads", "job-a", [(DRIVER_NAME, NODE, "adonis-onprem-r0", "qpu")])
    )
    cloud = api.put_claim(
        allocated_claim(
            "qubelet-workloads", "job-b", [(DRIVER_NAME, "cloud/apollo-cloud", "apollo-cloud-r1", "qpu")]
        )
    )
    pod = Pod(spec, scratch)
    registry = node.host("/var/lib/kubelet/plugins_registry")
    kubelet = TestKubeletDRA(registry, timeout=10.0, node_root=node.root)
    try:
        _wait(lambda: any(registry.glob("*.sock")), START_TIMEOUT, "registration socket", pod)
        status = pod.status()
        assert (
            status["Uid"].split()[0] == "0"
            and int(status["CapEff"], 16) == 0
            and int(status["CapBnd"], 16) == 0
        )
        info = kubelet.register()
        assert info.name == DRIVER_NAME
        assert info.endpoint == f"/var/lib/kubelet/plugins/{DRIVER_NAME}/dra.sock"

        # advertise: the node pool with the QPU cabled to this node, written through HTTPS
        def published() -> bool:
            names = sorted(d for _, pool, d in api.scheduler_devices() if pool == NODE)
            return names == ["adonis-onprem-r0", "adonis-onprem-r1"]

        _wait(published, 60, "node ResourceSlice", pod)
        (slice_,) = [s for s in api.slices.values() if s.spec.node_name == NODE]
        assert slice_.spec.pool.name == NODE
        _wait(lambda: _probe(container, "readinessProbe") == 200, 30, "readiness", pod)
        assert _probe(container, "livenessProbe") == 200
        # prepare: CDI specs in the node's /var/run/cdi; the cloud QPU is a simulator, no Secret needed
        refs = [("qubelet-workloads", c.metadata.uid, c.metadata.name) for c in (onprem, cloud)]
        out = kubelet.prepare(refs)
        for _, uid, _ in refs:
            assert out[uid].error == "", out[uid].error
            cdi = node.host(f"/run/cdi/{DRIVER_NAME}-{uid}.json")
            assert cdi.stat().st_uid == 0
            (device,) = json.loads(cdi.read_text())["devices"]
            assert "mounts" not in device["containerEdits"]
        assert node.host(f"/var/lib/kubelet/plugins/{DRIVER_NAME}/checkpoint.json").is_file()
    finally:
        kubelet.close()
        code = pod.stop()
    assert code == 0, pod.output()[-3000:]
    assert not any(registry.glob("*.sock"))  # unregistered on SIGTERM


def test_dra_plugin_as_the_images_non_root_user_cannot_start(
    scratch: Path, apiserver: FakeAPIServerHTTP
) -> None:
    """The defect this file guards: without runAsUser the image's USER 65532 applies, and kubelet's
    root-owned 0750 directories refuse it. The check above must notice."""
    docs = render("dra")
    for d in docs:
        if d["kind"] == "DaemonSet":
            for c in d["spec"]["template"]["spec"]["containers"]:
                c["securityContext"].pop("runAsUser", None)
                c["securityContext"].pop("runAsGroup", None)
    node = FakeNode(scratch / "node")
    spec, _ = container_spec(docs, "qubelet-dra-kubelet-plugin", node, scratch, apiserver)
    assert spec["uid"] == image()["uid"] != 0
    pod = Pod(spec, scratch)
    registry = node.host("/var/lib/kubelet/plugins_registry")
    with contextlib.suppress(subprocess.TimeoutExpired):
        pod.proc.wait(timeout=START_TIMEOUT)
    code = pod.stop()
    assert code != 0
    assert "Permission denied" in pod.output(), pod.output()[-3000:]
    assert not any(registry.glob("*.sock"))


def test_device_plugin_registers_advertises_and_allocates(scratch: Path) -> None:
    docs = render("device-plugin")
    node = FakeNode(scratch / "node")
    spec, container = container_spec(docs, "qubelet-device-plugin", node, scratch, None)
    assert spec["uid"] == 0 and spec["capabilities"] == []
    kubelet = TestKubelet(node.host("/var/lib/kubelet/device-plugins")).start()
    pod = Pod(spec, scratch)
    try:
        _wait(lambda: bool(kubelet.registrations), START_TIMEOUT, "device plugin registration", pod)
        status = pod.status()
        assert status["Uid"].split()[0] == "0" and int(status["CapEff"], 16) == 0
        (request,) = kubelet.registrations
        assert request.resource_name == "quantum.example.com/qpu"
        kubelet.wait_connected(timeout=30)
        devices = kubelet.wait_for_devices(
            lambda u: len(u) == 6 and set(u.values()) == {"Healthy"}, timeout=120
        )
        assert sorted(devices) == sorted(
            [f"adonis-onprem-r{i}" for i in range(2)] + [f"apollo-cloud-r{i}" for i in range(4)]
        )
        (response,) = kubelet.allocate(["apollo-cloud-r0"]).container_responses
        assert response.envs["QUBELET_QPU_NAME"] == "apollo-cloud" and list(response.mounts) == []
        _wait(lambda: _probe(container, "readinessProbe") == 200, 30, "readiness", pod)
        assert _probe(container, "livenessProbe") == 200
    finally:
        code = pod.stop()
        kubelet.stop()
    assert code == 0, pod.output()[-3000:]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


@pytest.mark.parametrize("kubelet_version", ["v1.34.1", "v1.33.4"])
def test_node_agent_chooses_by_what_the_cluster_serves(
    kubelet_version: str, scratch: Path, apiserver: FakeAPIServerHTTP
) -> None:
    """The node-agent component on the DRA overlay: DRA on a 1.34 kubelet; the device plugin on
    a node whose kubelet is older (a cluster half way through an upgrade)."""
    apiserver.nodes[NODE] = kubelet_version
    docs = render("dra", ("node-agent",))
    node = FakeNode(scratch / "node")
    spec, container = container_spec(docs, "qubelet-dra-kubelet-plugin", node, scratch, apiserver)
    assert spec["argv"][:2] == ["qubelet", "node-agent"] and spec["uid"] == 0 and spec["capabilities"] == []
    dra = kubelet_version == "v1.34.1"
    registry = node.host("/var/lib/kubelet/plugins_registry")
    device_kubelet = None if dra else TestKubelet(node.host("/var/lib/kubelet/device-plugins")).start()
    pod = Pod(spec, scratch)
    port = _metrics_port(container)
    try:
        if dra:
            _wait(lambda: any(registry.glob("*.sock")), START_TIMEOUT, "DRA registration socket", pod)
            kubelet = TestKubeletDRA(registry, timeout=10.0, node_root=node.root)
            assert kubelet.register().name == DRIVER_NAME
            kubelet.close()
        else:
            assert device_kubelet is not None
            _wait(
                lambda: bool(device_kubelet.registrations), START_TIMEOUT, "device plugin registration", pod
            )
            assert not any(registry.glob("*.sock"))
        _wait(lambda: _probe(container, "readinessProbe") == 200, 30, "readiness", pod)
        chosen = "dra" if dra else "device-plugin"
        assert f'qubelet_node_agent_mode{{mode="{chosen}"}} 1.0' in _metrics(port)
    finally:
        code = pod.stop()
        if device_kubelet is not None:
            device_kubelet.stop()
    assert code == 0, pod.output()[-3000:]
    assert "node agent mode chosen" in pod.output()
    assert ("older than v1.34" in pod.output()) is not dra
