"""Soak: both node daemons, as real processes, under a mixed load of faults (bounded in time).

For ``SOAK_SECONDS`` (25 s; ``QUBELET_SOAK_SECONDS`` overrides, ``QUBELET_SOAK_SEED`` picks the
random schedule) this holds ``qubelet device-plugin`` and ``qubelet dra-driver kubelet-plugin``
(the latter through ``tests/doubles/dra_plugin_process.py``: its real CLI, with the in-memory API
double for the API server this machine lacks) under:

- kubelet restarts (the device-plugin kubelet double restarts, sometimes deleting the plugin
  sockets as real kubelet does; the DRA kubelet double registers again);
- health flaps (the QPUs' health files flip between ``healthy`` and ``maintenance``);
- concurrent Allocate (two threads) and Prepare/Unprepare (two threads, each owning its claims);
- one hung API read (one claim's ResourceClaim read hangs 4 s, then times out);
- SIGTERM at random points (every 2-5 s, alternating the daemons), the DRA plugin's first one
  replaced by a SIGKILL (kill -9, maybe in the middle of a batch), each followed by a restart.

It then restarts both daemons once more and checks: every device is advertised and Healthy
(device plugin ListAndWatch and DRA health stream); every claim kubelet saw prepared is in the
checkpoint with its CDI spec, every claim kubelet saw unprepared is in neither, claims whose last
call got no answer are in both or neither; no CDI spec belongs to a claim outside the
checkpoint; every SIGTERM ended in exit 0, and no daemon logged a traceback.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from doubles.kubelet_deviceplugin import TestKubelet
from doubles.kubelet_dra import TestKubeletDRA

from dra_driver.cdi import spec_path
from qubelet.inventory.names import DRIVER_NAME

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SOAK_SECONDS = float(os.environ.get("QUBELET_SOAK_SECONDS", "25"))
SEED = int(os.environ.get("QUBELET_SOAK_SEED", "20261125"))
NODE = "soak-node"
TESTS = Path(__file__).resolve().parent
QUBELET = [sys.executable, "-c", "import sys; from qubelet.cli import main; sys.exit(main())"]
DEVICES = [f"{q}-r{i}" for q in ("adonis", "apollo") for i in range(4)]
POOLS = {"adonis": NODE, "apollo": "cloud/apollo"}
HUNG_CLAIM = "hung"
#: Answers the test kubelet tolerates during chaos: a restarting plugin, an unhealthy device.
TOLERATED = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


def inventory(root: Path) -> dict[str, Any]:
    common = {"vendor": "IQM", "technology": "superconducting", "replicas": 4}
    return {
        "version": "v1",
        "qpus": [
            {
                **common,
                "name": "adonis",
                "model": "Adonis",
                "qubits": 5,
                "location": "onprem",
                "backend": "fake:IQMFakeAdonis",
                "health": {"probe": "file", "path": str(root / "adonis.health"), "intervalSeconds": 0.1},
            },
            {
                **common,
                "name": "apollo",
                "model": "Apollo",
                "qubits": 20,
                "location": "cloud",
                "backend": "fake:IQMFakeApollo",
                "endpoint": "https://qpu.example.com/apollo",
                "tokensFile": str(root / "tokens.json"),
                "health": {"probe": "file", "path": str(root / "apollo.health"), "intervalSeconds": 0.1},
            },
        ],
    }


class Daemon:
    """One daemon process: start, SIGTERM (exit code recorded), SIGKILL, restart."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.sigterm_exits: list[int] = []
        self.kills = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, cwd=TESTS.parent)
        log.close()

    def sigterm(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=25)  # Kubernetes' grace period is 30 s
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -999
        self.sigterm_exits.append(code)
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.kills += 1

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.name}.*.log")))


class DraKubelet:
    """The DRA kubelet double of the moment; re-registers after a plugin or kubelet restart."""

    def __init__(self, registry: Path) -> None:
        self.registry = registry
        self.lock = threading.Lock()
        self.current: TestKubeletDRA | None = None

    def get(self) -> TestKubeletDRA:
        with self.lock:
            if self.current is None:
                kubelet = TestKubeletDRA(self.registry, timeout=2.0)
                try:
                    kubelet.register()
                except Exception:
                    kubelet.close()
                    raise
                self.current = kubelet
            return self.current

    def reset(self) -> None:
        with self.lock:
            if self.current is not None:
                self.current.close()
            self.current = None


@dataclass
class Ledger:
    """What kubelet was told about each claim: its last answered state, or "unknown"."""

    state: dict[str, str] = field(default_factory=dict)
    prepared_ok: int = 0
    unprepared_ok: int = 0
    allocations_ok: int = 0
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note_bad(self, what: str) -> None:
        with self.lock:
            self.bad.append(what)


def wait_serving_device_plugin(directory: Path, timeout: float = 60) -> None:
    """Until the device plugin answers on its socket (it is past start-up)."""
    from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc
    from qpu_device_plugin.constants import PLUGIN_SOCKET

    deadline = time.monotonic() + timeout
    while True:
        try:
            with grpc.insecure_channel(f"unix://{directory / PLUGIN_SOCKET}") as channel:
                api_pb2_grpc.DevicePluginStub(channel).GetDevicePluginOptions(api_pb2.Empty(), timeout=1)
            return
        except grpc.RpcError:
            assert time.monotonic() < deadline, "device plugin did not start serving"
            time.sleep(0.2)


def wait_for_dra(dra_kubelet: DraKubelet, timeout: float = 60) -> TestKubeletDRA:
    """Until the DRA plugin is registered with the kubelet double again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dra_kubelet.get()
        except Exception:
            assert time.monotonic() < deadline, "DRA plugin did not register again"
            time.sleep(0.2)


@pytest.fixture
def root() -> Iterator[Path]:
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="soak", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_both_daemons_survive_mixed_faults(root: Path) -> None:
    rng = random.Random(SEED)
    for q in ("adonis", "apollo"):
        (root / f"{q}.health").write_text("healthy\n")
    (root / "tokens.json").write_text('{"access_token": "soak-secret"}')
    config = root / "qpus.yaml"
    config.write_text(yaml.safe_dump(inventory(root)))
    claims = [
        {
            "namespace": "soak",
            "name": f"c{i}",
            "uid": f"uid-{i:02d}",
            "pool": POOLS[DEVICES[i % 8].split("-")[0]],
            "device": DEVICES[i % 8],
        }
        for i in range(16)
    ]
    hung = {"namespace": "soak", "name": HUNG_CLAIM, "uid": "uid-hung", "pool": NODE, "device": "adonis-r0"}
    (root / "claims.json").write_text(
        json.dumps({"claims": [*claims, hung], "hang": [HUNG_CLAIM], "hang_seconds": 4})
    )
    dp_dir, plugins, registry, cdi, logs = (root / d for d in ("dp", "plugins", "registry", "cdi", "logs"))
    logs.mkdir()
    device_plugin = Daemon(
        "device-plugin",
        [
            *QUBELET,
            "device-plugin",
            "--config",
            str(config),
            "--kubelet-dir",
            str(dp_dir),
            "--tokens-root",
            str(root),
        ],
        logs,
    )
    dra = Daemon(
        "dra",
        [
            *(sys.executable, str(TESTS / "doubles" / "dra_plugin_process.py"), str(root / "claims.json")),
            *("--config", str(config), "--node-name", NODE, "--plugins-dir", str(plugins)),
            *("--registry-dir", str(registry), "--cdi-dir", str(cdi), "--resync-seconds", "0.5"),
            *("--tokens-root", str(root)),
        ],
        logs,
    )
    kubelet = TestKubelet(dp_dir).start()
    dra_kubelet = DraKubelet(registry)
    ledger = Ledger()
    stop = threading.Event()
    device_plugin.start()
    dra.start()
    kubelet.wait_for_registrations(1, timeout=60)

    def every(low: float, high: float, action: Callable[[], None]) -> Callable[[], None]:
        def loop() -> None:
            while not stop.wait(rng.uniform(low, high)):
                try:
                    action()
                except Exception as exc:  # a fault injector must not die silently
                    ledger.note_bad(f"injector {action.__name__}: {exc!r}")

        return loop

    def restart_kubelets() -> None:
        kubelet.restart(remove_plugin_sockets=rng.random() < 0.3)
        dra_kubelet.reset()

    def flap_health() -> None:
        q = rng.choice(("adonis", "apollo"))
        (root / f"{q}.health").write_text(rng.choice(("healthy\n", "maintenance\n")))

    turn = iter(range(1_000_000))

    def signal_a_daemon() -> None:
        # Alternate the daemons; the DRA plugin's first turn is a kill -9 (possibly in the middle
        # of a prepare batch: its CDI spec written, its checkpoint not), the others SIGTERM.
        n = next(turn)
        daemon = dra if n % 2 else device_plugin
        if daemon is dra and dra.kills == 0:
            dra.kill()
        else:
            code = daemon.sigterm()
            # -SIGTERM: the signal came before the daemon installed its handler (still importing),
            # i.e. before it created anything; dying of it at once is the right answer then.
            if code not in (0, -signal.SIGTERM):
                ledger.note_bad(f"{daemon.name} exited {code} on SIGTERM")
        if daemon is dra:
            dra_kubelet.reset()
        daemon.start()

    def allocate() -> None:
        while not stop.is_set():
            device = rng.choice(DEVICES)
            try:
                response = kubelet.allocate([device], timeout=2.0)
                envs = response.container_responses[0].envs
                if envs["QUBELET_QPU_NAME"] != device.split("-")[0]:
                    ledger.note_bad(f"Allocate {device} answered {dict(envs)}")
                with ledger.lock:
                    ledger.allocations_ok += 1
            except grpc.RpcError as exc:
                if exc.code() not in TOLERATED:
                    ledger.note_bad(f"Allocate {device}: {exc.code()} {exc.details()}")
                stop.wait(0.02)
            except RuntimeError:  # the kubelet double is between connections
                stop.wait(0.05)

    def prepare_unprepare(mine: list[dict[str, str]]) -> None:
        while not stop.is_set():
            claim = rng.choice(mine)
            ref = (claim["namespace"], claim["uid"], claim["name"])
            uid = claim["uid"]
            op = "unprepare" if ledger.state.get(uid) == "prepared" or rng.random() < 0.3 else "prepare"
            try:
                kubelet_now = dra_kubelet.get()
            except Exception:
                stop.wait(0.1)
                continue
            try:
                answer = getattr(kubelet_now, op)([ref])[uid]
            except (grpc.RpcError, RuntimeError) as exc:
                if isinstance(exc, grpc.RpcError) and exc.code() not in TOLERATED:
                    ledger.note_bad(f"{op} {uid}: {exc.code()} {exc.details()}")
                with ledger.lock:
                    ledger.state[uid] = "unknown"  # no answer: it may or may not have happened
                dra_kubelet.reset()
                stop.wait(0.05)
                continue
            with ledger.lock:
                if not answer.error:
                    ledger.state[uid] = "prepared" if op == "prepare" else "unprepared"
                    if op == "prepare":
                        ledger.prepared_ok += 1
                        if [d.device_name for d in answer.devices] != [claim["device"]]:
                            ledger.bad.append(f"prepare {uid} answered {answer.devices}")
                    else:
                        ledger.unprepared_ok += 1
                elif "write checkpoint" in answer.error or "CDI" in answer.error:
                    ledger.bad.append(f"{op} {uid}: {answer.error}")  # the disk is fine here

    def hung_read() -> None:
        time.sleep(2)
        try:
            answer = dra_kubelet.get().prepare([(hung["namespace"], hung["uid"], hung["name"])])
            ledger.state["uid-hung"] = "error" if answer["uid-hung"].error else "prepared"
        except (grpc.RpcError, RuntimeError, OSError, TimeoutError):
            ledger.state["uid-hung"] = "unknown"

    threads = [
        threading.Thread(target=every(1.0, 3.0, restart_kubelets), name="kubelet-restarts"),
        threading.Thread(target=every(0.1, 0.5, flap_health), name="health-flaps"),
        threading.Thread(target=every(2.0, 5.0, signal_a_daemon), name="signals"),
        threading.Thread(target=allocate, name="allocate-1"),
        threading.Thread(target=allocate, name="allocate-2"),
        threading.Thread(target=prepare_unprepare, args=(claims[0::2],), name="prepare-1"),
        threading.Thread(target=prepare_unprepare, args=(claims[1::2],), name="prepare-2"),
        threading.Thread(target=hung_read, name="hung-read"),
    ]
    for thread in threads:
        thread.daemon = True
        thread.start()
    try:
        stop.wait(SOAK_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not [t.name for t in threads if t.is_alive()]

    # Settle: healthy QPUs, both daemons serving, then stopped by SIGTERM and started once more.
    for q in ("adonis", "apollo"):
        (root / f"{q}.health").write_text("healthy\n")
    wait_serving_device_plugin(dp_dir)
    wait_for_dra(dra_kubelet)
    for daemon in (device_plugin, dra):
        code = daemon.sigterm()
        assert code == 0, f"{daemon.name} exited {code}: {daemon.logs()[-1500:]}"
    dra_kubelet.reset()
    registrations = len(kubelet.registrations)
    updates = len(kubelet.updates)
    device_plugin.start()
    dra.start()
    try:
        kubelet.wait_for_registrations(registrations + 1, timeout=60)
        # Every device advertised, and Healthy, by both daemons.
        final = kubelet.wait_for_devices(
            lambda u: u == dict.fromkeys(DEVICES, "Healthy"), timeout=30, after=updates
        )
        assert sorted(final) == sorted(DEVICES)
        dra_now = wait_for_dra(dra_kubelet)
        dra_now.timeout = 10
        stream = dra_now.watch_health(timeout=10)
        health: dict[str, int] = {}
        for message in stream:
            health = {d.device.device_name: d.health for d in message.devices}
            if health == dict.fromkeys(DEVICES, 1):  # 1: HEALTHY
                break
        stream.cancel()
        assert health == dict.fromkeys(DEVICES, 1)

        # Every prepared claim is in the checkpoint (with its spec) or was unprepared.
        checkpoint = json.loads((plugins / DRIVER_NAME / "checkpoint.json").read_text())
        in_checkpoint = set(checkpoint["claims"])
        specs = {p.name[len(DRIVER_NAME) + 1 : -len(".json")] for p in cdi.glob(f"{DRIVER_NAME}-*.json")}
        assert specs == in_checkpoint, "orphan CDI specs, or checkpointed claims without a spec"
        for uid, state in sorted(ledger.state.items()):
            if state == "prepared":
                assert uid in in_checkpoint, f"{uid}: kubelet was told prepared, checkpoint lost it"
                assert spec_path(cdi, uid).exists()
            elif state in ("unprepared", "error"):
                assert uid not in in_checkpoint, f"{uid}: kubelet was told {state}, checkpoint has it"
        assert "uid-hung" not in in_checkpoint
        # Idempotent after all the restarts: a prepared claim answers its device from the checkpoint.
        for claim in claims:
            if ledger.state.get(claim["uid"]) == "prepared":
                ref = (claim["namespace"], claim["uid"], claim["name"])
                answer = dra_now.prepare([ref])[claim["uid"]]
                assert answer.error == "" and answer.devices[0].device_name == claim["device"]
    finally:
        dra_kubelet.reset()
        for daemon in (device_plugin, dra):
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.sigterm()
        kubelet.stop()

    summary = (
        f"seed={SEED} prepared={ledger.prepared_ok} unprepared={ledger.unprepared_ok} "
        f"allocated={ledger.allocations_ok} device-plugin starts={device_plugin.starts} "
        f"dra starts={dra.starts} kills={dra.kills} kubelet registrations={len(kubelet.registrations)}"
    )
    assert ledger.bad == [], f"{summary}: {ledger.bad[:5]}"
    assert all(code == 0 for code in device_plugin.sigterm_exits + dra.sigterm_exits), summary
    for daemon in (device_plugin, dra):
        text = daemon.logs()
        assert "Traceback" not in text, f"{daemon.name} logged a traceback: {text[-3000:]}"
        assert "soak-secret" not in text
    # The load really happened (guards against a soak that silently did nothing).
    assert ledger.prepared_ok > 0 and ledger.unprepared_ok > 0 and ledger.allocations_ok > 0, summary
    assert dra.kills == 1 and len(dra.sigterm_exits) >= 2 and len(device_plugin.sigterm_exits) >= 2, summary
    assert "uid-hung" in ledger.state, summary
    print(summary)
