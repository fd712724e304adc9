#!/usr/bin/env python3
"""A real local control plane for trying qubelet and for the e2e suite (test tooling, not product).

``make cluster-up`` runs ``python hack/cluster.py up``; ``make cluster-down`` runs ``down``.
What ``up`` starts, in order, every process on loopback with its pid in ``<state>/pids``:

1. etcd, kube-apiserver (with the DRA feature gates qubelet uses, :data:`APISERVER_GATES`),
   kube-controller-manager (resourceclaim controller included) and kube-scheduler, built from
   the pinned Go modules by ``hack/controlplane/build.sh``; self-signed certificates, a
   service-account signing key and an admin kubeconfig;
2. Node objects (:data:`NODES`) with no kubelet: pods are scheduled and bound, never run (the
   node-lifecycle controller is off, so nothing marks the kubelet-less nodes unreachable);
3. Kueue's manager with the CRDs from its module, its webhooks registered by URL on loopback
   with a self-signed certificate, and its Configuration = the fragment
   ``manifests/kueue/kueue-config-fragment.yaml`` merged into what a Kueue install ships;
4. the CRDs qubelet's overlays need besides Kueue's (Argo Workflow/WorkflowTemplate,
   prometheus-operator's PodMonitor/ServiceMonitor/PrometheusRule) from the vendored schemas in
   ``manifests/crds``, and a PersistentVolume for the runs PVC (the storage an admin provides);
5. ``kubectl apply -k manifests/overlays/dra``: the overlay exactly as docs/cluster-guide.md
   tells an admin to apply it;
6. qubelet's daemons as local processes (the overlay's pods are bound but never run):
   ``qubelet dra-driver controller``, ``qubelet admission-check`` (against Prometheus when the
   ``prometheus`` binary is installed, scraping the DRA daemons), and per node a
   ``qubelet dra-driver kubelet-plugin`` with the kubelet double
   (``tests/doubles/node_kubelet.py``) calling NodePrepareResources for each pod bound there.

The last line ``up`` prints is the kubeconfig's path. ``down`` stops exactly the processes whose
pid files ``up`` wrote (checking each pid still runs the command it started) and nothing else.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTROLPLANE = ROOT / "hack" / "controlplane"
DEFAULT_STATE = ROOT / ".cluster"
DEFAULT_CACHE = ROOT / ".cache" / "controlplane"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kueue")

#: Feature gates qubelet relies on, set explicitly on the API server, scheduler and
#: controller-manager so an older release fails loudly instead of silently dropping a field.
#: In 1.37 every one of them is on by default (most GA); docs/cluster-guide.md's table says so.
APISERVER_GATES: dict[str, bool] = {
    "DRADeviceTaints": True,  # --unhealthy=taint
    "DRAExtendedResource": True,  # DeviceClass extendedResourceName
    "DRAPrioritizedList": True,  # firstAvailable (qubelet render --claim-choices ranked)
    "DRAResourceClaimDeviceStatus": True,  # claim status.devices (binding conditions)
    "DRADeviceBindingConditions": True,  # bindingConditions on cloud QPUs
}
#: Kueue gates the local cluster sets on top of the fragment's (which carries
#: DynamicResourceAllocation, the DRA quota integration, alpha and off in v0.17). The on-demand
#: visibility API is an aggregated API server reading its certificate from a fixed /visibility
#: path; qubelet does not use it and nothing here registers its APIService.
KUEUE_EXTRA_GATES: dict[str, bool] = {"VisibilityOnDemand": False}

#: The kubelet-less nodes: the example inventory binds adonis-onprem to qpu-node-1.
NODES: tuple[str, ...] = ("qpu-node-1", "cpu-node-1")
NODE_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
OVERLAY = "manifests/overlays/dra"
#: Where Kueue v0.17 reads its metrics certificate when internal cert management is off.
KUEUE_METRICS_CERTS = Path("/etc/kueue/metrics/certs")
INVENTORY = ROOT / "manifests" / "examples" / "qpus.yaml"
SERVICE_CIDR = "10.0.0.0/24"


class ClusterError(RuntimeError):
    """A step of bringing the cluster up failed (one line saying which and why)."""


def _go_mod_version(mod_dir: str, module: str) -> str:
    text = (CONTROLPLANE / mod_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if not match:
        raise ClusterError(f"{mod_dir}/go.mod does not require {module}")
    return match.group(1)


def versions() -> dict[str, str]:
    """The pinned upstream versions (one home: the Go modules under hack/controlplane)."""
    return {
        "kubernetes": _go_mod_version("k8s", "k8s.io/kubernetes"),
        "etcd": _go_mod_version("k8s", "go.etcd.io/etcd/server/v3"),
        "kueue": _go_mod_version("kueue", "sigs.k8s.io/kueue"),
    }


def kueue_module_dir() -> Path:
    """Kueue's module in the Go module cache (its CRDs and webhook manifests are applied from it)."""
    return module_dir("kueue", "sigs.k8s.io/kueue")


def ran_gates() -> dict[str, dict[str, str]]:
    """Each gate the cluster sets, with its stage and default in the pinned release and the value."""
    pinned = versions()
    k8s = module_dir("k8s", "k8s.io/kubernetes") / "pkg" / "features" / "kube_features.go"
    kueue = kueue_module_dir() / "pkg" / "features" / "kube_features.go"
    fragment = yaml.safe_load((ROOT / "manifests" / "kueue" / "kueue-config-fragment.yaml").read_text())
    kueue_gates = {**(fragment.get("featureGates") or {}), **KUEUE_EXTRA_GATES}
    return {
        "kubernetes": {
            g: f"{gate_stage(k8s, g, pinned['kubernetes'])}; set {str(v).lower()}"
            for g, v in APISERVER_GATES.items()
        },
        "kueue": {
            g: f"{gate_stage(kueue, g, pinned['kueue'])}; set {str(v).lower()}"
            for g, v in kueue_gates.items()
        },
    }


def tested_against(ran: dict[str, Any]) -> str:
    """The "Tested against" table of docs/cluster-guide.md from a run's ``versions.json``."""

    def gates(kind: str) -> str:
        return "<br>".join(f"`{g}` ({stage})" for g, stage in ran["gates"][kind].items())

    prometheus = ran.get("prometheus_version") or "not installed"
    rows = [
        (
            "Kubernetes: kube-apiserver, kube-scheduler, kube-controller-manager, kubectl",
            ran["kubernetes"],
            gates("kubernetes"),
        ),
        ("etcd", ran["etcd"], "—"),
        (
            "Kueue (manager, CRDs, webhooks)",
            ran["kueue"],
            gates("kueue") + "<br>configuration: the fragment merged",
        ),
        (
            "Argo Workflows",
            "not run",
            "step pods built from the rendered templates as its controller would (tests/e2e/argo_pods.py)",
        ),
        ("Prometheus", prometheus, "scrapes the DRA daemons for the admission check"),
    ]
    lines = [
        "| component | version | feature gates (stage in that release; value set) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def module_dir(mod_dir: str, module: str) -> Path:
    """Where ``module`` (required by hack/controlplane/``mod_dir``) sits in the Go module cache."""
    out = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", module],
        cwd=CONTROLPLANE / mod_dir,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    path = Path(out.stdout.strip())
    if out.returncode != 0 or not path.is_dir():
        raise ClusterError(f"{module} not in the Go module cache: {out.stderr.strip()[-300:]}")
    return path


def gate_stage(features_go: Path, gate: str, release: str) -> str:
    """``"<PreRelease>, on|off by default"`` for ``gate`` at ``release``, read from the Go source."""
    text = features_go.read_text()
    block = re.search(rf"\n\t{re.escape(gate)}: \{{\n(.*?)\n\t\}},", text, re.S)
    if block is None:
        return "unknown to this release"
    want = tuple(int(x) for x in release.lstrip("v").split(".")[:2])
    stage = "unknown to this release"
    for ver, default, pre in re.findall(
        r'Version: version\.MustParse\("([\d.]+)"\), Default: (true|false), PreRelease: featuregate\.(\w+)',
        block.group(1),
    ):
        if tuple(int(x) for x in ver.split(".")[:2]) <= want:
            stage = f"{pre}, {'on' if default == 'true' else 'off'} by default"
    return stage


def build(cache: Path) -> Path:
    """Run hack/controlplane/build.sh (a no-op when the cache is current); returns the bin dir."""
    env = {**os.environ, "QUBELET_CONTROLPLANE_CACHE": str(cache)}
    out = subprocess.run(
        ["bash", str(CONTROLPLANE / "build.sh")], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise ClusterError("hack/controlplane/build.sh failed: " + " | ".join(tail))
    return Path(out.stdout.strip().splitlines()[-1])


def missing_binaries(bin_dir: Path) -> list[str]:
    """Which of :data:`BINARIES` are not built in ``bin_dir``."""
    return [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]


def free_port() -> int:
    """A free TCP port on loopback (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; ClusterError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # polled: the last error is reported on timeout
            last = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}" + (f": {last}" if last else ""))


# --- certificates (openssl) ----------------------------------------------------------------------


def _openssl(*args: str) -> None:
    out = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {out.stderr.strip()}")


def make_ca(pki: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA (key, cert)."""
    key, crt = pki / f"{name}.key", pki / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(crt),
        "-days",
        "30",
        "-subj",
        f"/CN={name}",
    )
    return key, crt


def make_cert(
    pki: Path, name: str, ca: tuple[Path, Path], subject: str, sans: Sequence[str] = (), client: bool = False
) -> tuple[Path, Path]:
    """A key and a certificate signed by ``ca`` (serving with ``sans``, or client)."""
    key, csr, crt, ext = (pki / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject)
    usage = "clientAuth" if client else "serverAuth"
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[1]),
        "-CAkey",
        str(ca[0]),
        "-CAcreateserial",
        "-out",
        str(crt),
        "-days",
        "30",
        "-extfile",
        str(ext),
    )
    csr.unlink()
    return key, crt


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# --- processes -----------------------------------------------------------------------------------


class Processes:
    """Processes started in their own session, each with a pid file and a log."""

    def __init__(self, state: Path) -> None:
        self.pids = state / "pids"
        self.logs = state / "logs"
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` detached (survives ``make``), logging to ``logs/<name>.log``."""
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        log.close()
        # pid and the executable it runs: down() kills only a pid that still runs it.
        (self.pids / f"{name}.pid").write_text(f"{proc.pid}\n{argv[0]}\n")
        return proc

    def alive(self, name: str) -> bool:
        """Whether ``name``'s recorded pid still runs the command it was started with."""
        return self._pid(name) is not None

    def _pid(self, name: str) -> int | None:
        try:
            pid_text, exe = (self.pids / f"{name}.pid").read_text().splitlines()[:2]
            pid = int(pid_text)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        # A zombie (exited, not yet reaped by a parent that is still us) has an empty cmdline.
        return pid if cmdline and cmdline[0].decode(errors="replace") == exe else None

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last lines of ``name``'s log (for error messages)."""
        try:
            tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
            return "\n".join(line[:400] for line in tail)
        except OSError:
            return ""

    def names(self) -> list[str]:
        """Every process with a pid file, in start order."""
        files = sorted(self.pids.glob("*.pid"), key=lambda p: p.stat().st_mtime)
        return [p.stem for p in files]

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """SIGTERM ``name`` (SIGKILL after ``timeout``); removes its pid file. True if it ran."""
        pid = self._pid(name)
        ran = pid is not None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._pid(name) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._pid(name) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kill_deadline = time.monotonic() + 5
                while self._pid(name) is not None and time.monotonic() < kill_deadline:
                    time.sleep(0.1)
        (self.pids / f"{name}.pid").unlink(missing_ok=True)
        return ran

    def stop_all(self) -> list[str]:
        """Stop every recorded process, last started first; returns the names that were running."""
        return [name for name in reversed(self.names()) if self.stop(name)]


# --- the cluster ---------------------------------------------------------------------------------


class Cluster:
    """One local control plane under ``state`` (pki, etcd data, logs, pids, kubeconfig)."""

    def __init__(
        self,
        state: Path = DEFAULT_STATE,
        bin_dir: Path | None = None,
        nodes: Sequence[str] = NODES,
        inventory: Path = INVENTORY,
        prometheus: bool | None = None,
    ) -> None:
        self.state = Path(state).resolve()
        self.bin = Path(bin_dir) if bin_dir else DEFAULT_CACHE / "bin"
        self.nodes = tuple(nodes)
        self.inventory = Path(inventory).resolve()
        self.kubeconfig = self.state / "kubeconfig"
        self.pki = self.state / "pki"
        self.procs = Processes(self.state)
        self.python = sys.executable
        self.prometheus = shutil.which("prometheus") is not None if prometheus is None else prometheus
        self.ports: dict[str, int] = {}
        #: Node roots: a short /tmp path (gRPC refuses unix socket paths over 107 characters),
        #: with ``<state>/nodes`` a symlink to it.
        digest = hashlib.sha256(str(self.state).encode()).hexdigest()[:8]
        self.short_root = Path(f"/tmp/qbc-{digest}")
        self.log: Callable[[str], None] = lambda msg: print(f"cluster: {msg}", file=sys.stderr, flush=True)

    # -- helpers ----------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run the built kubectl (the pinned release) against this cluster; returns stdout."""
        out = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if check and out.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args[:3])}: {out.stderr.strip()}")
        return out.stdout

    def apply(self, objects: Iterable[dict[str, Any]], server_side: bool = False) -> None:
        """``kubectl apply`` a list of objects."""
        docs = list(objects)
        if not docs:
            return
        flags = ["--server-side", "--force-conflicts"] if server_side else []
        self.kubectl("apply", *flags, "-f", "-", input=yaml.safe_dump_all(docs, sort_keys=False))

    def _get(self, port_name: str, path: str, client_cert: bool = True) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if port_name != "apiserver":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if client_cert:
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        url = f"https://127.0.0.1:{self.ports[port_name]}{path}"
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return resp.status == 200

    def _started(self, name: str, ready: Callable[[], Any], timeout: float) -> None:
        def check() -> Any:
            if not self.procs.alive(name):
                raise ClusterError(f"{name} exited:\n{self.procs.log_tail(name)}")
            return ready()

        try:
            wait_for(check, timeout, f"{name} to become ready")
        except ClusterError as exc:
            if "exited" in str(exc):
                raise ClusterError(str(exc).split(": ", 1)[-1]) from None
            raise ClusterError(f"{exc}\n{self.procs.log_tail(name)}") from None

    def _write_state(self) -> None:
        (self.state / "ports.json").write_text(json.dumps(self.ports, indent=1) + "\n")

    # -- up ---------------------------------------------------------------------------------------

    def up(self) -> Path:
        """Bring everything up (see the module docstring); returns the kubeconfig path."""
        missing = missing_binaries(self.bin)
        if missing:
            raise ClusterError(
                f"not built in {self.bin}: {', '.join(missing)} (run hack/controlplane/build.sh)"
            )
        if shutil.which("openssl") is None:
            raise ClusterError("openssl not found (apt-get install openssl)")
        if self.procs.names():
            raise ClusterError(f"{self.state} already has running processes: run `make cluster-down` first")
        t0 = time.monotonic()
        for sub in ("pki", "etcd", "kueue", "nodes", "pods", "prometheus", "runs", "kubeconfigs"):
            path = self.state / sub
            if path.is_symlink():
                path.unlink()
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.short_root, ignore_errors=True)
        self.short_root.mkdir(parents=True)
        (self.state / "nodes").symlink_to(self.short_root)
        self.pki.mkdir(parents=True)
        self.ports = {
            name: free_port()
            for name in (
                "etcd",
                "etcd-peer",
                "apiserver",
                "controller-manager",
                "scheduler",
                "kueue-webhook",
                "kueue-health",
                "kueue-metrics",
                "kueue-visibility",
                "dra-controller-metrics",
                "admission-check-metrics",
                "prometheus",
            )
        }
        for node in self.nodes:
            self.ports[f"plugin-{node}"] = free_port()
        self._write_state()
        self._certificates()
        self._etcd()
        self._apiserver()
        self._controllers()
        self._nodes()
        self._kueue()
        self._third_party_crds()
        self._storage()
        self._overlay()
        self._daemons()
        self._wait_healthy()
        versions_ran = {
            **versions(),
            "gates": ran_gates(),
            "prometheus_version": self._prometheus_version(),
            "overlay": OVERLAY,
            "nodes": list(self.nodes),
            "prometheus": self.prometheus,
            "seconds_to_up": round(time.monotonic() - t0, 1),
        }
        (self.state / "versions.json").write_text(json.dumps(versions_ran, indent=1) + "\n")
        self.log(f"up in {time.monotonic() - t0:.0f} s")
        return self.kubeconfig

    def _prometheus_version(self) -> str | None:
        if not self.prometheus:
            return None
        out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, check=False)
        match = re.search(r"version (\S+)", out.stdout + out.stderr)
        return match.group(1) if match else None

    def _certificates(self) -> None:
        pki = self.pki
        ca = make_ca(pki, "ca")
        make_cert(
            pki,
            "apiserver",
            ca,
            "/CN=kube-apiserver",
            [
                "IP:127.0.0.1",
                "IP:10.0.0.1",
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
            ],
        )
        make_cert(pki, "admin", ca, "/O=system:masters/CN=qubelet-admin", client=True)
        make_cert(pki, "kueue-webhook", ca, "/CN=kueue-webhook", ["IP:127.0.0.1", "DNS:localhost"])
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        server = f"https://127.0.0.1:{self.ports['apiserver']}"
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "qubelet",
                    "cluster": {"server": server, "certificate-authority-data": _b64(pki / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": _b64(pki / "admin.crt"),
                        "client-key-data": _b64(pki / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "qubelet", "context": {"cluster": "qubelet", "user": "admin"}}],
            "current-context": "qubelet",
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def _etcd(self) -> None:
        c, p = self.ports["etcd"], self.ports["etcd-peer"]
        self.procs.start(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=qubelet",
                f"--data-dir={self.state / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{c}",
                f"--advertise-client-urls=http://127.0.0.1:{c}",
                f"--listen-peer-urls=http://127.0.0.1:{p}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p}",
                f"--initial-cluster=qubelet=http://127.0.0.1:{p}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{c}/health", timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"

        self._started("etcd", healthy, 60)
        self.log("etcd ready")

    def _gates(self) -> str:
        return ",".join(f"{k}={str(v).lower()}" for k, v in APISERVER_GATES.items())

    def _apiserver(self) -> None:
        pki = self.pki
        self.procs.start(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--api-audiences=https://kubernetes.default.svc",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The kubernetes Service would point at 127.0.0.1, which Endpoints refuse.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--feature-gates={self._gates()}",
            ],
        )
        self._started("kube-apiserver", lambda: self._get("apiserver", "/readyz"), 120)
        self.log("kube-apiserver ready")

    def _controllers(self) -> None:
        pki, kc = self.pki, str(self.kubeconfig)
        self.procs.start(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={pki / 'kcm'}",
                "--leader-elect=false",
                # No kubelet heartbeats: without this the nodes would turn NotReady and be tainted.
                "--controllers=*,-node-lifecycle-controller",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--profiling=false",
                f"--feature-gates={self._gates()}",
            ],
        )
        self.procs.start(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={pki / 'scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
                f"--feature-gates={self._gates()}",
            ],
        )
        self._started(
            "kube-controller-manager", lambda: self._get("controller-manager", "/healthz", False), 90
        )
        self._started("kube-scheduler", lambda: self._get("scheduler", "/healthz", False), 90)
        # Pods need the default ServiceAccount, which the controller-manager creates.
        wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False),
            60,
            "the default ServiceAccount",
        )
        self.log("kube-controller-manager and kube-scheduler ready")

    def _nodes(self) -> None:
        for node in self.nodes:
            self.apply(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {
                            "name": node,
                            "labels": {
                                "kubernetes.io/hostname": node,
                                "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64",
                            },
                        },
                    }
                ]
            )
            self.set_node_status(node)
            # The TaintNodesByCondition admission plugin taints a new Node not-ready; the node
            # lifecycle controller (off here: no kubelet heartbeats) would lift it once Ready.
            self.kubectl("taint", "node", node, "node.kubernetes.io/not-ready:NoSchedule-", check=False)
        self.log(f"nodes {', '.join(self.nodes)} registered (no kubelet)")

    def set_node_status(
        self, node: str, extra_capacity: dict[str, str] | None = None, kubelet_version: str | None = None
    ) -> None:
        """Report the node Ready with its capacity, as kubelet's status update would."""
        capacity = {**NODE_CAPACITY, **(extra_capacity or {})}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet double: no containers run here",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": kubelet_version or versions()["kubernetes"],
                "architecture": "amd64",
                "operatingSystem": "linux",
                "containerRuntimeVersion": "none://0",
                "kernelVersion": os.uname().release,
                "osImage": "qubelet kubelet double",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        self.kubectl(
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    # -- Kueue --------------------------------------------------------------------------------------

    @property
    def kueue_gates(self) -> dict[str, bool]:
        """The feature gates Kueue runs with: the fragment's plus :data:`KUEUE_EXTRA_GATES`."""
        fragment = yaml.safe_load((ROOT / "manifests" / "kueue" / "kueue-config-fragment.yaml").read_text())
        return {**(fragment.get("featureGates") or {}), **KUEUE_EXTRA_GATES}

    def kueue_configuration(self) -> dict[str, Any]:
        """What a Kueue install ships (ports moved to loopback), with the fragment merged in."""
        kdir = self.state / "kueue"
        base: dict[str, Any] = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": "kueue-system",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.ports['kueue-health']}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self.ports['kueue-metrics']}"},
            "webhook": {
                "port": self.ports["kueue-webhook"],
                "host": "127.0.0.1",
                "certDir": str(kdir / "certs"),
            },
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "visibilityServer": {"bindAddress": "127.0.0.1", "bindPort": self.ports["kueue-visibility"]},
            "manageJobsWithoutQueueName": False,
        }
        fragment = yaml.safe_load((ROOT / "manifests" / "kueue" / "kueue-config-fragment.yaml").read_text())
        for key, value in fragment.items():
            if key in ("apiVersion", "kind"):
                continue
            base[key] = value
        base["featureGates"] = self.kueue_gates
        return base

    def _kueue(self) -> None:
        kdir = self.state / "kueue"
        (kdir / "certs").mkdir(parents=True)
        shutil.copy(self.pki / "kueue-webhook.crt", kdir / "certs" / "tls.crt")
        shutil.copy(self.pki / "kueue-webhook.key", kdir / "certs" / "tls.key")
        (kdir / "config.yaml").write_text(yaml.safe_dump(self.kueue_configuration(), sort_keys=False))
        self._kueue_metrics_cert()
        module = kueue_module_dir()
        base_url = f"https://127.0.0.1:{self.ports['kueue-webhook']}"
        ca_bundle = _b64(self.pki / "ca.crt")
        self.kubectl("create", "namespace", "kueue-system")
        crds = []
        converted = self._kueue_converted_crds(module)
        for path in sorted((module / "config" / "components" / "crd" / "bases").glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            if crd["metadata"]["name"] in converted:
                crd["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {"url": f"{base_url}/convert", "caBundle": ca_bundle},
                        "conversionReviewVersions": ["v1"],
                    },
                }
            crds.append(crd)
        self.apply(crds, server_side=True)
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *[f"crd/{c['metadata']['name']}" for c in crds],
        )
        self.procs.start(
            "kueue",
            [
                str(self.bin / "kueue"),
                f"--config={kdir / 'config.yaml'}",
                f"--kubeconfig={self.kubeconfig}",
                "--zap-log-level=info",
            ],
        )
        self.ports["kueue-health"] = self.ports["kueue-health"]

        def ready() -> bool:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports['kueue-health']}/readyz", timeout=2
            ) as r:
                return r.status == 200

        self._started("kueue", ready, 120)
        self.apply(self._kueue_webhooks(module, base_url, ca_bundle), server_side=True)
        # The webhooks answer (a dry-run ResourceFlavor goes through the mutating and validating hooks).
        probe = {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": "probe"},
        }
        wait_for(
            lambda: self.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe)),
            60,
            "Kueue's webhooks to answer",
            interval=1,
        )
        self.log("kueue ready (webhooks by URL on loopback)")

    def _kueue_metrics_cert(self) -> None:
        """The certificate Kueue's metrics server insists on at a fixed path.

        With internal cert management off (it would issue certificates for an in-cluster Service
        name the API server cannot reach here), Kueue v0.17 reads the metrics server's certificate
        from ``/etc/kueue/metrics/certs`` (``cmd/kueue/main.go``) and exits without it. It is
        only the metrics endpoint's: one self-signed pair is shared by every local Kueue and made
        once, left in place afterwards.
        """
        certs = KUEUE_METRICS_CERTS
        if (certs / "tls.crt").is_file() and (certs / "tls.key").is_file():
            return
        try:
            certs.mkdir(parents=True, exist_ok=True)
            ca = make_ca(self.pki, "kueue-metrics-ca")
            key, crt = make_cert(self.pki, "kueue-metrics", ca, "/CN=kueue-metrics", ["IP:127.0.0.1"])
            shutil.copy(crt, certs / "tls.crt")
            shutil.copy(key, certs / "tls.key")
        except OSError as exc:
            raise ClusterError(
                f"Kueue v0.17 reads its metrics certificate from {certs} and it cannot be created "
                f"({exc.strerror}); once: sudo mkdir -p {certs} && sudo chown $USER {certs}"
            ) from None

    @staticmethod
    def _kueue_converted_crds(module: Path) -> set[str]:
        """The CRDs Kueue's kustomization patches to a conversion webhook."""
        kust = yaml.safe_load((module / "config" / "components" / "crd" / "kustomization.yaml").read_text())
        names = set()
        for patch in kust.get("patches") or []:
            doc = yaml.safe_load((module / "config" / "components" / "crd" / patch["path"]).read_text())
            if ((doc.get("spec") or {}).get("conversion") or {}).get("strategy") == "Webhook":
                names.add(doc["metadata"]["name"])
        return names

    @staticmethod
    def _kueue_webhooks(module: Path, base_url: str, ca_bundle: str) -> list[dict[str, Any]]:
        """Kueue's webhook configurations with its kustomize patches, by URL instead of Service."""
        webhook_dir = module / "config" / "components" / "webhook"
        docs = [d for d in yaml.safe_load_all((webhook_dir / "manifests.yaml").read_text()) if d]
        kust = yaml.safe_load((webhook_dir / "kustomization.yaml").read_text())
        selectors: dict[tuple[str, str], Any] = {}
        for patch in kust.get("patches") or []:
            doc = yaml.safe_load(patch["patch"]) if "patch" in patch else None
            for hook in (doc or {}).get("webhooks") or []:
                selectors[(doc["kind"], hook["name"])] = hook.get("namespaceSelector")
        for doc in docs:
            doc["metadata"]["name"] = "kueue-" + doc["metadata"]["name"]
            for hook in doc.get("webhooks") or []:
                service = hook["clientConfig"].pop("service")
                hook["clientConfig"] = {"url": base_url + service["path"], "caBundle": ca_bundle}
                if (doc["kind"], hook["name"]) in selectors:
                    hook["namespaceSelector"] = selectors[(doc["kind"], hook["name"])]
        return docs

    # -- the rest of what the overlay needs ---------------------------------------------------------

    def _third_party_crds(self) -> None:
        """Argo's and prometheus-operator's CRDs, from the vendored schemas (their controllers don't run)."""
        crds = []
        plurals = {
            "Workflow": "workflows",
            "WorkflowTemplate": "workflowtemplates",
            "PodMonitor": "podmonitors",
            "ServiceMonitor": "servicemonitors",
            "PrometheusRule": "prometheusrules",
        }
        for path in sorted((ROOT / "manifests" / "crds").glob("*.json")):
            doc = json.loads(path.read_text())
            if doc["kind"] not in plurals:
                continue
            plural = plurals[doc["kind"]]
            crds.append(
                {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": f"{plural}.{doc['group']}"},
                    "spec": {
                        "group": doc["group"],
                        "scope": "Namespaced",
                        "names": {
                            "kind": doc["kind"],
                            "plural": plural,
                            "singular": doc["kind"].lower(),
                            "listKind": doc["kind"] + "List",
                        },
                        "versions": [
                            {
                                "name": doc["version"],
                                "served": True,
                                "storage": True,
                                "schema": {"openAPIV3Schema": doc["openAPIV3Schema"]},
                                "subresources": {"status": {}} if doc["kind"] == "Workflow" else {},
                            }
                        ],
                    },
                }
            )
        self.apply(crds, server_side=True)
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *[f"crd/{c['metadata']['name']}" for c in crds],
        )

    def _storage(self) -> None:
        """A PersistentVolume the overlay's runs PVC binds to (what a cluster's storage provides)."""
        runs = self.state / "runs"
        runs.mkdir(exist_ok=True)
        self.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": "qubelet-runs-local",
                        "labels": {"app.kubernetes.io/part-of": "qubelet-e2e"},
                    },
                    "spec": {
                        "capacity": {"storage": "100Gi"},
                        "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "hostPath": {"path": str(runs), "type": "Directory"},
                    },
                }
            ]
        )

    def _overlay(self) -> None:
        """``kubectl apply -k manifests/overlays/dra``, as docs/cluster-guide.md tells an admin."""
        out = self.kubectl("apply", "-k", OVERLAY)
        (self.state / "overlay-apply.txt").write_text(out)
        self.log(f"applied {OVERLAY}: {len(out.splitlines())} objects")

    # -- qubelet's daemons ----------------------------------------------------------------------------

    def qubelet_argv(self, *args: str) -> list[str]:
        """``qubelet ARGS`` run from this checkout (the tree's packages first on the path)."""
        return [self.python, "-m", "qubelet.cli", *args]

    def daemon_env(self) -> dict[str, str]:
        """Environment for qubelet processes: this checkout importable, no service-account pickup."""
        return {
            "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}",
            "KUBERNETES_SERVICE_HOST": "",
            "PYTHONUNBUFFERED": "1",
        }

    def node_dir(self, node: str) -> Path:
        """``node``'s "/" for its plugin (``var/lib/kubelet/...``) and the double's ``prepared/``.

        Kept short: unix socket paths under it must stay below 108 bytes.
        """
        return self.short_root / node

    def shipped_objects(self) -> list[dict[str, Any]]:
        """The overlay's objects as ``kubectl kustomize`` builds them (what ``apply -k`` applied)."""
        return [d for d in yaml.safe_load_all(self.kubectl("kustomize", OVERLAY)) if d]

    def shipped_process(
        self, objects: list[dict[str, Any]], kind: str, name: str, pod_env: dict[str, str], root: Path
    ) -> tuple[list[str], dict[str, str]]:
        """The command and env of ``kind/name``'s first container, as a local process.

        The container's mounts become directories under ``root`` (hostPaths keep their path
        below it, ConfigMaps are written out from the overlay's objects, emptyDirs and Secrets
        are empty), every argument naming a mount path is rewritten to its local directory,
        ``qubelet`` runs from this checkout, env ``fieldRef``s take ``pod_env`` and
        ``configMapKeyRef``s are read from the live cluster (so an admin's edit counts).
        """
        workload = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
        namespace = workload["metadata"]["namespace"]
        pod = workload["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        mounts: list[tuple[str, Path]] = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "hostPath" in volume:
                local = root / volume["hostPath"]["path"].lstrip("/")
            elif "configMap" in volume:
                local = root / "configmaps" / volume["configMap"]["name"]
                config = next(
                    o
                    for o in objects
                    if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
                )
                local.mkdir(parents=True, exist_ok=True)
                for key, text in (config.get("data") or {}).items():
                    (local / key).write_text(text)
            else:
                local = root / "volumes" / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            mounts.append((mount["mountPath"].rstrip("/"), local))
        mounts.sort(key=lambda m: -len(m[0]))

        def local_path(arg: str) -> str:
            flag, eq, value = arg.partition("=")
            for mount_path, local in mounts:
                if eq and (value == mount_path or value.startswith(mount_path + "/")):
                    return f"{flag}={local}{value[len(mount_path) :]}"
            return arg

        command = [*container.get("command", []), *container.get("args", [])]
        if command[0] != "qubelet":
            raise ClusterError(f"{kind}/{name} does not run qubelet: {command[:2]}")
        argv = self.qubelet_argv(*[local_path(a) for a in command[1:]])
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            source = item.get("valueFrom") or {}
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "fieldRef" in source:
                env[item["name"]] = pod_env[source["fieldRef"]["fieldPath"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                live = json.loads(
                    self.kubectl("get", "configmap", ref["name"], "-n", namespace, "-o", "json")
                )
                env[item["name"]] = live["data"][ref["key"]]
            else:
                raise ClusterError(
                    f"{kind}/{name}: env {item['name']} has a source hack/cluster.py can't resolve"
                )
        return argv, env

    @staticmethod
    def _service_account(objects: list[dict[str, Any]], kind: str, name: str) -> str:
        workload = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
        return str(workload["spec"]["template"]["spec"]["serviceAccountName"])

    def _daemonset_pod(self, namespace: str, daemonset: str, node: str) -> dict[str, str]:
        """The DaemonSet's pod bound to ``node`` (created by the controller, never run): name, uid."""

        def find() -> dict[str, str] | None:
            pods = json.loads(self.kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
            for pod in pods:
                owners = pod["metadata"].get("ownerReferences") or []
                if pod["spec"].get("nodeName") == node and any(o["name"] == daemonset for o in owners):
                    return {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
            return None

        return wait_for(find, 90, f"{namespace}/{daemonset}'s pod on {node}", interval=1)

    def service_account_kubeconfig(
        self, name: str, namespace: str, service_account: str, bound_pod: dict[str, str] | None = None
    ) -> Path:
        """A kubeconfig holding a TokenRequest token of ``service_account`` (bound to a pod if given)."""
        args = ["create", "token", service_account, "-n", namespace, "--duration=48h"]
        if bound_pod:
            args += ["--bound-object-kind=Pod", f"--bound-object-name={bound_pod['name']}"]
            args += [f"--bound-object-uid={bound_pod['uid']}"]
        token = self.kubectl(*args).strip()
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": service_account, "user": {"token": token}}]
        config["contexts"][0]["context"]["user"] = service_account
        path = self.state / "kubeconfigs" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def _daemons(self) -> None:
        """Run the daemons the overlay ships (their Deployments' and DaemonSet's commands) locally."""
        objects = self.shipped_objects()
        kc = f"--kubeconfig={self.kubeconfig}"
        base_env = self.daemon_env()
        if self.prometheus:
            self._prometheus()
        # The admin's knob for the admission check's Prometheus (manifests/admission-check/configmap.yaml):
        # the cluster's Prometheus is the local one.
        self.kubectl(
            "patch",
            "configmap",
            "qubelet-admission-check",
            "-n",
            "qubelet-system",
            "--type=merge",
            "-p",
            json.dumps({"data": {"prometheus-url": f"http://127.0.0.1:{self.ports['prometheus']}"}}),
        )
        # Each daemon runs as its ServiceAccount (the overlay's RBAC), not as the admin: what the
        # overlay grants is what they get. The kubelet plugin's token is bound to its DaemonSet's
        # pod on that node, so the API server adds the node name and the overlay's
        # ValidatingAdmissionPolicy keeps it to its own node's ResourceSlices.
        daemons = [
            ("dra-controller", "Deployment", "qubelet-dra-controller"),
            ("admission-check", "Deployment", "qubelet-admission-check"),
        ]
        for name, kind, obj in daemons:
            argv, env = self.shipped_process(
                objects, kind, obj, {"metadata.name": f"{name}-0"}, self.state / "pods" / name
            )
            sa = self._service_account(objects, kind, obj)
            kubeconfig = self.service_account_kubeconfig(name, "qubelet-system", sa)
            argv = [a for a in argv if not a.startswith("--metrics-port")]
            argv += [f"--kubeconfig={kubeconfig}", f"--metrics-port={self.ports[name + '-metrics']}"]
            self.procs.start(name, argv, {**base_env, **env})
        plugin_sa = self._service_account(objects, "DaemonSet", "qubelet-dra-kubelet-plugin")
        for node in self.nodes:
            d = self.node_dir(node)
            pod = self._daemonset_pod("qubelet-system", "qubelet-dra-kubelet-plugin", node)
            pod_env = {
                "spec.nodeName": node,
                "metadata.namespace": "qubelet-system",
                "metadata.name": pod["name"],
            }
            argv, env = self.shipped_process(objects, "DaemonSet", "qubelet-dra-kubelet-plugin", pod_env, d)
            kubeconfig = self.service_account_kubeconfig(
                f"kubelet-plugin-{node}", "qubelet-system", plugin_sa, pod
            )
            argv = [a for a in argv if not a.startswith("--metrics-port")]
            argv += [f"--kubeconfig={kubeconfig}", f"--metrics-port={self.ports[f'plugin-{node}']}"]
            self.procs.start(f"kubelet-plugin-{node}", argv, {**base_env, **env})
            kubelet = d / "var" / "lib" / "kubelet"
            self.procs.start(
                f"kubelet-double-{node}",
                [
                    self.python,
                    str(ROOT / "tests" / "doubles" / "node_kubelet.py"),
                    kc,
                    f"--node-name={node}",
                    f"--registry-dir={kubelet / 'plugins_registry'}",
                    f"--cdi-dir={d / 'var' / 'run' / 'cdi'}",
                    f"--out-dir={d / 'prepared'}",
                ],
                base_env,
            )

    def _prometheus(self) -> None:
        targets = [f"127.0.0.1:{self.ports['dra-controller-metrics']}"] + [
            f"127.0.0.1:{self.ports[f'plugin-{n}']}" for n in self.nodes
        ]
        config = {
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "scrape_configs": [{"job_name": "qubelet-dra", "static_configs": [{"targets": targets}]}],
        }
        pdir = self.state / "prometheus"
        pdir.mkdir(exist_ok=True)
        (pdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.procs.start(
            "prometheus",
            [
                str(shutil.which("prometheus")),
                f"--config.file={pdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={pdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
            ],
        )

        def ready() -> bool:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports['prometheus']}/-/ready", timeout=2
            ) as r:
                return r.status == 200

        self._started("prometheus", ready, 60)

    def _wait_healthy(self) -> None:
        def slices() -> bool:
            out = json.loads(self.kubectl("get", "resourceslices", "-o", "json"))
            pools = {s["spec"]["pool"]["name"] for s in out["items"]}
            return any(p.startswith("cloud") or "/" in p for p in pools) and any(
                n in pools for n in self.nodes
            )

        wait_for(slices, 240, "the QPU ResourceSlices (controller and node plugin)", interval=1)

        def queues_active() -> bool:
            out = json.loads(self.kubectl("get", "clusterqueues", "-o", "json"))
            return bool(out["items"]) and all(
                any(
                    c["type"] == "Active" and c["status"] == "True"
                    for c in (q.get("status") or {}).get("conditions", [])
                )
                for q in out["items"]
            )

        wait_for(queues_active, 120, "every ClusterQueue Active", interval=1)
        self.log("ResourceSlices published, every ClusterQueue active")

    # -- down -----------------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop what ``up`` started (its pid files only); keeps logs, removes the etcd data."""
        stopped = self.procs.stop_all()
        shutil.rmtree(self.state / "etcd", ignore_errors=True)
        shutil.rmtree(self.short_root, ignore_errors=True)
        return stopped


def main(argv: Sequence[str] | None = None) -> int:
    """``up`` / ``down`` / ``build`` from the command line (exit 2 on usage errors)."""
    parser = argparse.ArgumentParser(prog="hack/cluster.py", description=__doc__.splitlines()[0])
    parser.add_argument("verb", choices=("up", "down", "build"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("QUBELET_CONTROLPLANE_CACHE") or DEFAULT_CACHE),
        help="build.sh's cache (default $QUBELET_CONTROLPLANE_CACHE or .cache/controlplane)",
    )
    parser.add_argument("--no-build", action="store_true", help="use the cache as it is")
    args = parser.parse_args(argv)
    try:
        if args.verb == "down":
            cluster = Cluster(args.state_dir, args.cache / "bin")
            stopped = cluster.down()
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            return 0
        bin_dir = args.cache / "bin" if args.no_build else build(args.cache)
        if args.verb == "build":
            print(bin_dir)
            return 0
        cluster = Cluster(args.state_dir, bin_dir)
        try:
            kubeconfig = cluster.up()
        except BaseException:
            cluster.down()
            raise
        print(f"export KUBECONFIG={kubeconfig}   # kubectl: {bin_dir / 'kubectl'}")
        print(kubeconfig)
        return 0
    except ClusterError as exc:
        print(f"hack/cluster.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
