"""A bare real API server (etcd + kube-apiserver v1.37 from the control-plane cache) for e2e tests.

Only what a test of the API server's own storage and validation needs: no scheduler, no
controller-manager, no Kueue, no daemons (the full control plane of ``hack/cluster.py`` has
those). Binaries come from ``hack/controlplane/build.sh`` in ``$QUBELET_CONTROLPLANE_CACHE``
(default ``.cache/controlplane``, falling back to the main checkout's when this is a worktree);
without them the tests skip with the reason, and with ``CI=true`` they fail instead.

Authentication is one static bearer token in ``system:masters``; the serving certificate is the
API server's self-generated one (the kubeconfig skips verification: loopback only). Everything
lives in a temporary directory that is removed at the end of the session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("etcd", "kube-apiserver")


def _bin_dir() -> Path | None:
    candidates = [os.environ.get("QUBELET_CONTROLPLANE_CACHE") or "", str(ROOT / ".cache" / "controlplane")]
    common = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if common:
        candidates.append(str(Path(common).parent / ".cache" / "controlplane"))
    for cache in filter(None, candidates):
        if all((Path(cache) / "bin" / b).is_file() for b in BINARIES):
            return Path(cache) / "bin"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, token: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            pytest.fail(f"kube-apiserver exited ({proc.returncode}): {' | '.join(tail)}", pytrace=False)
        try:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"kube-apiserver not ready after {timeout:.0f} s (log {log})", pytrace=False)


@pytest.fixture(scope="session")
def apiserver_kubeconfig() -> Iterator[str]:
    """The path of a kubeconfig for a fresh etcd + kube-apiserver (admin, loopback)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        reason = "e2e: kube-apiserver/etcd not built; run `make controlplane` (hack/controlplane/build.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: e2e may not skip)", pytrace=False)
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="qbapi-", dir="/tmp"))
    token = secrets.token_hex(16)
    (state / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
    subprocess.run(
        ["openssl", "genrsa", "-out", str(state / "sa.key"), "2048"], check=True, capture_output=True
    )
    subprocess.run(
        ["openssl", "rsa", "-in", str(state / "sa.key"), "-pubout", "-out", str(state / "sa.pub")],
        check=True,
        capture_output=True,
    )
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(state / "etcd.log", "wb") as etcd_log:
            procs.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "etcd"),
                        f"--data-dir={state / 'etcd'}",
                        f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                        f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                        f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    ],
                    stdout=etcd_log,
                    stderr=subprocess.STDOUT,
                )
            )
        with open(state / "apiserver.log", "wb") as api_log:
            api = subprocess.Popen(
                [
                    str(bin_dir / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--cert-dir={state / 'certs'}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={state / 'sa.pub'}",
                    f"--service-account-signing-key-file={state / 'sa.key'}",
                    f"--token-auth-file={state / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--service-cluster-ip-range=10.0.0.0/24",
                ],
                stdout=api_log,
                stderr=subprocess.STDOUT,
            )
            procs.append(api)
        _wait(f"https://127.0.0.1:{api_port}/readyz", token, api, state / "apiserver.log")
        kubeconfig = state / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: e2e, cluster: {{server: 'https://127.0.0.1:{api_port}', "
            "insecure-skip-tls-verify: true}}]\n"
            f"users: [{{name: admin, user: {{token: {token}}}}}]\n"
            "contexts: [{name: e2e, context: {cluster: e2e, user: admin}}]\n"
            "current-context: e2e\n"
        )
        yield str(kubeconfig)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(state, ignore_errors=True)
