"""Plumbing every qubelet daemon shares: metrics endpoint, stop signals, kubeconfig, env twins.

The device plugin, the DRA kubelet plugin, the DRA controller and the pipeline's metrics all
serve Prometheus, stop on SIGTERM/SIGINT and (where they talk to an API server) take
``--kubeconfig`` the same way, so they do it through this one module:

- **metrics port**: one rule everywhere, ``0`` means off and anything else must be a TCP port
  (1..65535); a port that cannot be bound is a usage error (exit 2, one line).
- **stop**: SIGTERM and SIGINT set a :class:`threading.Event` (and optionally call a hook) so the
  daemon's main thread returns and cleans up its sockets.
- **kubeconfig**: one ``--kubeconfig`` flag; :func:`qubelet.kube.load_kube_client` turns it into
  a client (the flag wins, then a pod's service account, then ``$KUBECONFIG``).
- **env twins**: every daemon flag ``--some-flag`` can also be set as ``QUBELET_SOME_FLAG``, as
  dra-example-driver does for each of its flags, so manifests can configure a daemon through env
  (from a ConfigMap or the downward API) without rewriting its command line.

Heavy imports (prometheus_client, kubernetes) happen inside the functions that need them.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from qubelet import klog
from qubelet.errors import UsageError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "ENV_PREFIX",
    "STOP_SIGNALS",
    "Component",
    "MetricsServer",
    "add_kubeconfig_flag",
    "add_metrics_port_flag",
    "env_name",
    "env_twins",
    "metrics_port",
    "run_until_stopped",
    "serve_metrics",
    "stop_on_signals",
    "wait_for_stop",
]

log = klog.get_logger("qubelet.daemon")

#: Prefix of the env twin of every daemon flag (``--metrics-port`` -> ``QUBELET_METRICS_PORT``).
ENV_PREFIX = "QUBELET_"
#: Signals that stop a daemon cleanly (kubelet sends SIGTERM; SIGINT is Ctrl-C).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


# --- metrics -------------------------------------------------------------------------------------


def metrics_port(text: str) -> int:
    """Parse a ``--metrics-port`` value: 0 (off) or a TCP port; an argparse ``type``."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a port in 1..65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a port in 1..65535, got {port}")
    return port


def add_metrics_port_flag(parser: argparse.ArgumentParser, default: int = 0) -> None:
    """Add ``--metrics-port`` with the one port rule (0 = off)."""
    parser.add_argument(
        "--metrics-port",
        type=metrics_port,
        default=default,
        metavar="PORT",
        help=f"serve Prometheus metrics on this port, 0 = off (default {default})",
    )


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`shutdown` stops it (tests, short-lived steps)."""

    port: int
    server: Any
    thread: threading.Thread | None

    def shutdown(self) -> None:
        """Stop serving and wait (bounded) for the server thread."""
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)


def serve_metrics(
    port: int,
    registry: CollectorRegistry | None = None,
    addr: str = "0.0.0.0",
    liveness: Mapping[str, Callable[[], str]] | None = None,
    readiness: Mapping[str, Callable[[], str]] | None = None,
) -> MetricsServer | None:
    """Serve ``registry`` (default: the process registry) on ``addr:port``; None when port is 0.

    With ``liveness``/``readiness`` checks the port also answers ``/healthz`` and ``/readyz``
    from them (:mod:`qubelet.healthz`), which the manifests' probes use.

    Raises:
        UsageError: the port is out of range or cannot be bound (one line naming the port).
    """
    if port == 0:
        return None
    try:
        metrics_port(str(port))
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"--metrics-port: {exc}") from None
    from prometheus_client import REGISTRY, start_http_server

    if liveness is not None or readiness is not None:
        from qubelet.healthz import HealthServer

        health = HealthServer(registry or REGISTRY, liveness, readiness)
        try:
            health.start(port, addr)
        except OSError as exc:
            raise UsageError(f"--metrics-port {port}: {exc.strerror or exc}") from None
        log.info("serving metrics and probes", port=port)
        return MetricsServer(port, health.server, health.thread)
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry or REGISTRY)
    except OSError as exc:
        raise UsageError(f"--metrics-port {port}: {exc.strerror or exc}") from None
    log.info("serving metrics", port=port)
    return MetricsServer(port, server, thread if isinstance(thread, threading.Thread) else None)


# --- stop signals --------------------------------------------------------------------------------


def stop_on_signals(on_stop: Callable[[], None] | None = None) -> threading.Event:
    """Make SIGTERM/SIGINT set the returned event (and call ``on_stop``); main thread only."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        log.info("signal received, shutting down", signal=signal.Signals(signum).name)
        stop.set()
        if on_stop is not None:
            on_stop()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)
    return stop


def wait_for_stop(stop: threading.Event, poll_seconds: float = 1.0) -> None:
    """Block until ``stop`` is set, waking regularly so signal handlers always get to run."""
    while not stop.wait(poll_seconds):
        pass


class Component(Protocol):
    """A daemon's main object: it runs its own threads between ``start`` and ``stop``."""

    def start(self, stop: threading.Event | None = None) -> None:
        """Start serving in background threads and return.

        ``stop`` is set by SIGTERM/SIGINT; start-up work that may wait (the first health probe)
        returns early when it is set, so the daemon exits within Kubernetes' 30 s grace period.
        """

    def stop(self) -> None:
        """Stop serving and release sockets and threads."""


def run_until_stopped(component: Component) -> int:
    """Start ``component``, block until SIGTERM/SIGINT, then stop it; the exit status (0)."""
    stop = stop_on_signals()
    try:
        component.start(stop)
        wait_for_stop(stop)
    finally:
        component.stop()
    return 0


# --- kubeconfig ----------------------------------------------------------------------------------


def add_kubeconfig_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--kubeconfig`` (default: in-cluster service account, else ``$KUBECONFIG``)."""
    parser.add_argument(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config)",
    )


# --- env twins -----------------------------------------------------------------------------------


def env_name(option: str) -> str:
    """The env twin of a long option: ``--metrics-port`` -> ``QUBELET_METRICS_PORT``."""
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


def _long_option(action: argparse.Action) -> str | None:
    return next((o for o in action.option_strings if o.startswith("--")), None)


def env_twins(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    """Give every long flag of ``parser`` a ``QUBELET_*`` env twin; call after adding the flags.

    A set env var becomes the flag's default (so the command line still wins) and satisfies a
    required flag. Values are checked like the command line would check them.

    Raises:
        UsageError: an env var holds a value the flag would reject (one line naming the var).
    """
    env = os.environ if env is None else env
    for action in parser._actions:
        option = _long_option(action)
        if option is None or isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        name = env_name(option)
        action.help = f"{action.help or ''} [env {name}]".strip()
        if name not in env:
            continue
        raw = env[name]
        action.default = _convert(action, name, raw)
        action.required = False


def _convert(action: argparse.Action, name: str, raw: str) -> Any:
    if action.nargs == 0:  # store_true / store_false
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise UsageError(f"{name}={raw!r}: must be true or false")
        return (word in _TRUE) == (action.const is not False)
    try:
        value = action.type(raw) if callable(action.type) else raw
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        raise UsageError(f"{name}={raw!r}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise UsageError(f"{name}={raw!r}: must be one of {choices}")
    return value
