"""Token confinement and tenants on the node (issue 23, items 4, 5 and 9).

- ``tokensFile`` resolves only inside the tokens Secret's mount: ``../../etc/shadow`` is refused
  by the inventory (one line, exit 2), and a file that resolves outside the mount through a
  symlink or an absolute path fails its claim with one line, without a copy or a spec;
- staged copies are mode 0440, group the step pods' group (never world-readable);
- a QPU's token is chosen by the claim's namespace (``tenantTokens``); a namespace that is not
  listed gets no token and its claim is refused;
- the inventory refuses strings longer than the API objects they become (one line, exit 2).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from doubles.fake_resource_api import allocated_claim
from doubles.kubelet_dra import TestKubeletDRA
from test_dra_kubelet_plugin import CLOUD_POOL, Env

from dra_driver.cdi import spec_path
from qubelet.inventory import parse_config
from qubelet.inventory.names import DRIVER_NAME

pytestmark = pytest.mark.timeout(60)
QUBELET = [sys.executable, "-c", "import sys; from qubelet.cli import main; sys.exit(main())"]
STEP_GID = 10001


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    shutil.rmtree(e.root, ignore_errors=True)


def qpu(**extra: Any) -> dict[str, Any]:
    return {
        "name": "apollo",
        "vendor": "IQM",
        "model": "Apollo",
        "qubits": 20,
        "technology": "superconducting",
        "location": "cloud",
        "backend": "iqm",
        "endpoint": "https://qpu.example.com/apollo",
        "health": {"probe": "file", "path": "/nonexistent/health"},
        **extra,
    }


def run_plugin_cli(tmp_path: Path, inventory: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "qpus.yaml"
    path.write_text(yaml.safe_dump(inventory))
    argv = [*QUBELET, "dra-driver", "kubelet-plugin", "--config", str(path), "--node-name", "n1"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=tmp_path)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            {"tokensFile": "/var/run/secrets/qubelet/iqm/../../etc/shadow"},
            "tokensFile: must not contain '..'",
        ),
        ({"tokensFile": "../../etc/shadow"}, "tokensFile: must not contain '..'"),
        ({"tenantTokens": {"team-a": "../../etc/shadow"}}, "tenantTokens.team-a: must not contain '..'"),
        ({"model": "A" * 65}, "model: too long: 65 bytes, a ResourceSlice attribute holds at most 64"),
        ({"vendor": "é" * 33}, "vendor: too long: 66 bytes"),
        ({"topology": "t" * 65}, "topology: too long"),
        ({"nodeSelector": {"zone": "x" * 64}}, "nodeSelector.zone: must be a label value"),
        ({"tenantTokens": {"Team_A": "a.json"}}, "tenantTokens: key must be a namespace name"),
    ],
)
def test_inventory_refuses_escapes_and_over_long_strings(
    tmp_path: Path, extra: dict[str, Any], needle: str
) -> None:
    out = run_plugin_cli(tmp_path, {"version": "v1", "qpus": [qpu(**extra)]})
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0]
    assert "qpus[0] (apollo)" in lines[0]


def tenant_env(env: Env, **qpu_extra: Any) -> Env:
    """The test inventory's cloud QPU as a real backend with its token in ``env.root/secret``."""
    secret = env.root / "secret"
    secret.mkdir()
    data = {
        "version": "v1",
        "qpus": [
            {
                "name": "apollo-cloud",
                "vendor": "IQM",
                "model": "Apollo",
                "qubits": 20,
                "technology": "superconducting",
                "location": "cloud",
                "backend": "iqm",
                "endpoint": "https://cocos.example.com/apollo",
                "health": {"probe": "file", "path": str(env.health / "apollo"), "intervalSeconds": 0.1},
                "replicas": 2,
                **qpu_extra,
            }
        ],
    }
    env.config = parse_config(data, "tenant-inventory")
    return env


class Running:
    def __init__(self, env: Env, **kw: Any) -> None:
        kw.setdefault("tokens_root", env.root / "secret")
        kw.setdefault("tokens_dir", env.root / "staged")
        kw.setdefault("tokens_gid", STEP_GID)
        self.plugin = env.plugin(**kw)
        self.plugin.start()
        self.kubelet = TestKubeletDRA(env.registry)
        self.kubelet.register()

    def close(self) -> None:
        self.kubelet.close()
        self.plugin.stop()


def claim(env: Env, namespace: str, name: str, device: str = "apollo-cloud-r0") -> tuple[str, str, str]:
    c = env.api.put_claim(allocated_claim(namespace, name, [(DRIVER_NAME, CLOUD_POOL, device, "qpu")]))
    return (namespace, c.metadata.uid, name)


def test_tokens_file_resolving_outside_the_secret_mount_is_refused(env: Env) -> None:
    shadow = env.root / "shadow"
    shadow.write_text("root:$6$secret:19000:0:99999:7:::")
    os.chmod(shadow, 0o600)
    tenant_env(env, tokensFile=str(env.root / "secret" / "tokens.json"))
    (env.root / "secret" / "tokens.json").symlink_to(shadow)  # planted in the mount, points out
    running = Running(env)
    try:
        ref = claim(env, "team-a", "job")
        error = running.kubelet.prepare([ref])[ref[1]].error
        assert error.startswith("resourceclaim team-a/job: QPU apollo-cloud tokensFile "), error
        assert f"outside the tokens Secret mount {env.root / 'secret'}: refused" in error
        assert "\n" not in error
        assert not spec_path(env.cdi, ref[1]).exists()
        assert not (env.root / "staged").exists() or not any((env.root / "staged").iterdir())
    finally:
        running.close()


def test_absolute_tokens_file_outside_the_mount_is_refused(env: Env) -> None:
    (env.root / "elsewhere.json").write_text("{}")
    tenant_env(env, tokensFile=str(env.root / "elsewhere.json"))
    running = Running(env)
    try:
        ref = claim(env, "team-a", "job")
        assert "outside the tokens Secret mount" in running.kubelet.prepare([ref])[ref[1]].error
    finally:
        running.close()


def test_staged_copy_is_0440_for_the_step_group(env: Env) -> None:
    tenant_env(env, tokensFile="tokens.json")  # relative: inside the mount
    (env.root / "secret" / "tokens.json").write_text('{"access_token": "org"}')
    running = Running(env)
    try:
        ref = claim(env, "team-a", "job")
        assert running.kubelet.prepare([ref])[ref[1]].error == ""
        (dev,) = json.loads(spec_path(env.cdi, ref[1]).read_text())["devices"]
        staged = Path(dev["containerEdits"]["mounts"][0]["hostPath"])
        st = staged.stat()
        assert stat.S_IMODE(st.st_mode) == 0o440
        assert st.st_gid == STEP_GID
        assert staged.read_text() == '{"access_token": "org"}'
    finally:
        running.close()


def test_token_chosen_by_the_claims_namespace(env: Env) -> None:
    tenant_env(env, tenantTokens={"team-a": "team-a.json", "team-b": "team-b.json"})
    (env.root / "secret" / "team-a.json").write_text('{"access_token": "A"}')
    (env.root / "secret" / "team-b.json").write_text('{"access_token": "B"}')
    running = Running(env)
    try:
        a = claim(env, "team-a", "job", "apollo-cloud-r0")
        b = claim(env, "team-b", "job", "apollo-cloud-r1")
        c = claim(env, "team-c", "job", "apollo-cloud-r0")
        out = running.kubelet.prepare([a, b, c])
        assert out[a[1]].error == "" and out[b[1]].error == ""
        mounted = {}
        for ref in (a, b):
            (dev,) = json.loads(spec_path(env.cdi, ref[1]).read_text())["devices"]
            mounted[ref[0]] = Path(dev["containerEdits"]["mounts"][0]["hostPath"]).read_text()
        assert mounted == {"team-a": '{"access_token": "A"}', "team-b": '{"access_token": "B"}'}
        assert out[c[1]].error == (
            "resourceclaim team-c/job: QPU apollo-cloud has no token for namespace team-c "
            "(tenantTokens lists team-a, team-b)"
        )
        assert not spec_path(env.cdi, c[1]).exists()
    finally:
        running.close()
