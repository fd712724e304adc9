"""qubelet.daemon: one metrics-port rule, env twins for daemon flags, signals to a stop event."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from qubelet import daemon
from qubelet.cli import build_parser, main
from qubelet.errors import UsageError

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("text", ["-1", "65536", "x", "1.5"])
def test_metrics_port_rejects_out_of_range(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"0 \(off\) or a port in 1\.\.65535"):
        daemon.metrics_port(text)


def test_metrics_port_zero_is_off_and_ports_pass() -> None:
    assert daemon.metrics_port("0") == 0
    assert daemon.metrics_port("9400") == 9400
    assert daemon.serve_metrics(0) is None


def test_serve_metrics_serves_the_registry_and_busy_port_is_one_line() -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("qubelet_test_things", "things", registry=registry).inc(3)
    port = _free_port()
    server = daemon.serve_metrics(port, registry, addr="127.0.0.1")
    assert server is not None
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "qubelet_test_things_total 3.0" in body
        with pytest.raises(UsageError, match=rf"^--metrics-port {port}: ") as exc:
            daemon.serve_metrics(port, registry, addr="127.0.0.1")
        assert "\n" not in str(exc.value)
    finally:
        server.shutdown()


def test_every_daemon_flag_has_an_env_twin() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    dra_verbs = subparsers.choices["dra-driver"]._actions
    dra = next(a for a in dra_verbs if isinstance(a, argparse._SubParsersAction))
    daemons = [
        subparsers.choices["device-plugin"],
        dra.choices["kubelet-plugin"],
        dra.choices["controller"],
        subparsers.choices["node-agent"],
        subparsers.choices["admission-check"],
    ]
    for sub in daemons:
        for action in sub._actions:
            long = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
            if long:
                assert f"[env {daemon.env_name(long[0])}]" in (action.help or ""), (sub.prog, long)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith(daemon.ENV_PREFIX):
            monkeypatch.delenv(name)
    yield monkeypatch


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_env_twin_sets_default_and_satisfies_required_flags(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QUBELET_CONFIG", "/etc/qubelet/qpus.yaml")
    clean_env.setenv("QUBELET_METRICS_PORT", "9401")
    clean_env.setenv("QUBELET_UNHEALTHY", "taint")
    clean_env.setenv("QUBELET_RESYNC_SECONDS", "2.5")
    args = _parse(["dra-driver", "kubelet-plugin"])
    assert (args.config, args.metrics_port, args.unhealthy, args.resync_seconds) == (
        "/etc/qubelet/qpus.yaml",
        9401,
        "taint",
        2.5,
    )
    # The command line still wins over the environment.
    args = _parse(["dra-driver", "kubelet-plugin", "--metrics-port", "0", "--config", "x.yaml"])
    assert (args.metrics_port, args.config) == (0, "x.yaml")


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("QUBELET_METRICS_PORT", "70000", "0 (off) or a port in 1..65535"),
        ("QUBELET_UNHEALTHY", "explode", "must be one of remove, taint"),
        ("QUBELET_LEASE_DURATION_SECONDS", "soon", "invalid literal"),
    ],
)
def test_bad_env_twin_is_one_line_exit_2(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, problem: str
) -> None:
    clean_env.setenv(name, value)
    assert main(["dra-driver", "controller", "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"qubelet: error: {name}={value!r}: ") and problem in err[0]


def test_env_twin_of_a_boolean_flag() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-run", action="store_true")
    daemon.env_twins(parser, env={"QUBELET_DRY_RUN": "true"})
    assert parser.parse_args([]).dry_run is True
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-run", action="store_true")
    with pytest.raises(UsageError, match="QUBELET_DRY_RUN='maybe': must be true or false"):
        daemon.env_twins(parser, env={"QUBELET_DRY_RUN": "maybe"})


def test_sigterm_and_sigint_set_the_stop_event() -> None:
    saved = {sig: signal.getsignal(sig) for sig in daemon.STOP_SIGNALS}
    try:
        for sig in daemon.STOP_SIGNALS:
            hooked: list[bool] = []
            stop = daemon.stop_on_signals(on_stop=lambda hooked=hooked: hooked.append(True))
            assert not stop.is_set()
            os.kill(os.getpid(), sig)
            daemon.wait_for_stop(stop, poll_seconds=0.05)  # returns only once the handler ran
            assert stop.is_set() and hooked == [True]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
