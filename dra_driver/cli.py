"""``qubelet dra-driver kubelet-plugin|controller``: the two DRA daemons.

Heavy imports (grpc, kubernetes) happen inside the handlers so ``qubelet --help`` stays fast.
Both daemons run until SIGTERM/SIGINT and then stop cleanly (sockets removed).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from typing import Any

from dra_driver.constants import DEFAULT_CDI_DIR, DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRY_DIR


def register(subparsers: Any) -> None:
    """Add ``dra-driver`` and its two verbs to the top-level parser."""
    parser = subparsers.add_parser("dra-driver", help="QPU DRA driver (qpu.quantum.example.com)")
    verbs = parser.add_subparsers(dest="dra_command", metavar="VERB")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    kp = verbs.add_parser("kubelet-plugin", help="per-node kubelet plugin (DaemonSet)")
    kp.add_argument("--config", required=True, help="QPU inventory file (qpus.yaml)")
    kp.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node (default $NODE_NAME)")
    kp.add_argument("--plugins-dir", default=DEFAULT_PLUGINS_DIR)
    kp.add_argument("--registry-dir", default=DEFAULT_REGISTRY_DIR)
    kp.add_argument("--cdi-dir", default=DEFAULT_CDI_DIR)
    kp.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster)")
    kp.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics (0: off)")
    kp.add_argument(
        "--unhealthy",
        choices=("remove", "taint"),
        default="remove",
        help="unhealthy devices leave the slice, or stay with a DeviceTaint",
    )
    kp.add_argument("--resync-seconds", type=float, default=30.0)
    kp.add_argument(
        "--stage-tokens-dir",
        default=None,
        help="hostPath directory to copy token files into, so CDI can mount them (pod deployments)",
    )
    kp.set_defaults(func=run_kubelet_plugin)

    ctl = verbs.add_parser("controller", help="cluster controller for cloud QPU pools (Deployment)")
    ctl.add_argument("--config", required=True, help="QPU inventory file (qpus.yaml)")
    ctl.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster)")
    ctl.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME") or socket.gethostname(),
        help="leader-election identity (default $POD_NAME or hostname)",
    )
    ctl.add_argument("--metrics-port", type=int, default=0)
    ctl.add_argument("--unhealthy", choices=("remove", "taint"), default="remove")
    ctl.add_argument("--lease-duration-seconds", type=int, default=15)
    ctl.set_defaults(func=run_controller)


def _load(args: argparse.Namespace) -> Any:
    from qubelet.errors import UsageError
    from qubelet.inventory import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


def _api(args: argparse.Namespace) -> Any:
    from dra_driver.client import KubeResourceAPI
    from qubelet.errors import UsageError

    try:
        return KubeResourceAPI(args.kubeconfig)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"kubernetes client config: {first}") from exc


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass


def _serve_metrics(port: int, metrics: Any) -> None:
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, registry=metrics.registry)


def run_kubelet_plugin(args: argparse.Namespace) -> int:
    from qubelet.errors import UsageError

    if not args.node_name:
        raise UsageError("--node-name is required (or set NODE_NAME)")
    config = _load(args)
    from dra_driver.kubelet_plugin import KubeletPlugin
    from dra_driver.metrics import DRAMetrics

    metrics = DRAMetrics()
    plugin = KubeletPlugin(
        config,
        args.node_name,
        args.plugins_dir,
        args.registry_dir,
        args.cdi_dir,
        _api(args),
        unhealthy_mode=args.unhealthy,
        resync_seconds=args.resync_seconds,
        metrics=metrics,
        tokens_dir=args.stage_tokens_dir,
    )
    _serve_metrics(args.metrics_port, metrics)
    plugin.start()
    try:
        _wait_for_signal()
    finally:
        plugin.stop()
    return 0


def run_controller(args: argparse.Namespace) -> int:
    config = _load(args)
    from dra_driver.controller import CloudController
    from dra_driver.metrics import DRAMetrics

    metrics = DRAMetrics()
    controller = CloudController(
        config,
        _api(args),
        args.identity,
        unhealthy_mode=args.unhealthy,
        lease_duration_seconds=args.lease_duration_seconds,
        metrics=metrics,
    )
    _serve_metrics(args.metrics_port, metrics)
    controller.start()
    try:
        _wait_for_signal()
    finally:
        controller.stop()
    return 0
