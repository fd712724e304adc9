"""``qubelet dra-driver kubelet-plugin|controller``: the two DRA daemons.

Heavy imports (grpc, kubernetes) happen inside the handlers so ``qubelet --help`` stays fast.
Both daemons run until SIGTERM/SIGINT and then stop cleanly (sockets removed).
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from dra_driver.constants import DEFAULT_CDI_DIR, DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRY_DIR
from qubelet import daemon
from qubelet.inventory.names import DRIVER_NAME
from qubelet.inventory.tokens import add_token_flags


def add_unhealthy_flag(parser: argparse.ArgumentParser) -> None:
    """``--unhealthy``: what a published slice does with an unhealthy device."""
    parser.add_argument(
        "--unhealthy",
        choices=("remove", "taint"),
        default="remove",
        help="unhealthy devices leave the slice, or stay with a DeviceTaint",
    )


def add_node_plugin_flags(parser: argparse.ArgumentParser) -> None:
    """The kubelet plugin's slice and token flags (shared with ``qubelet node-agent``)."""
    add_unhealthy_flag(parser)
    parser.add_argument("--resync-seconds", type=float, default=30.0)
    parser.add_argument(
        "--tokens-secret",
        default=f"{os.environ.get('POD_NAMESPACE') or 'qubelet-system'}/qubelet-iqm-tokens",
        help="namespace/name of the Secret mounted at the QPUs' tokensFile (named in prepare errors)",
    )
    add_token_flags(parser)


def register(subparsers: Any) -> None:
    """Add ``dra-driver`` and its two verbs to the top-level parser."""
    parser = subparsers.add_parser("dra-driver", help=f"QPU DRA driver ({DRIVER_NAME})")
    verbs = parser.add_subparsers(dest="dra_command", metavar="VERB")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    kp = verbs.add_parser("kubelet-plugin", help="per-node kubelet plugin (DaemonSet)")
    kp.add_argument("--config", required=True, help="QPU inventory file (qpus.yaml)")
    kp.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node (default $NODE_NAME)")
    kp.add_argument("--plugins-dir", default=DEFAULT_PLUGINS_DIR)
    kp.add_argument("--registry-dir", default=DEFAULT_REGISTRY_DIR)
    kp.add_argument("--cdi-dir", default=DEFAULT_CDI_DIR)
    daemon.add_kubeconfig_flag(kp)
    daemon.add_metrics_port_flag(kp)
    add_node_plugin_flags(kp)
    kp.add_argument(
        "--stage-tokens-dir",
        default=None,
        help="hostPath directory to copy token files into, so CDI can mount them (pod deployments)",
    )
    daemon.env_twins(kp)
    kp.set_defaults(func=run_kubelet_plugin)

    ctl = verbs.add_parser("controller", help="cluster controller for cloud QPU pools (Deployment)")
    ctl.add_argument("--config", required=True, help="QPU inventory file (qpus.yaml)")
    daemon.add_kubeconfig_flag(ctl)
    ctl.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME") or socket.gethostname(),
        help="leader-election identity (default $POD_NAME or hostname)",
    )
    daemon.add_metrics_port_flag(ctl)
    add_unhealthy_flag(ctl)
    ctl.add_argument("--lease-duration-seconds", type=int, default=15)
    ctl.add_argument(
        "--reservation-owner",
        default=DRIVER_NAME,
        help="who this cluster is to QPU providers: its reservations are listed and released by it",
    )
    ctl.add_argument("--reservation-resync-seconds", type=float, default=2.0, help="reservation pass period")
    ctl.add_argument(
        "--reservation-deadline-seconds",
        type=float,
        default=120.0,
        help="give a device up (reservation-failed) when its provider stays unreachable this long",
    )
    ctl.add_argument(
        "--reservation-timeout-seconds", type=float, default=5.0, help="timeout of each provider call"
    )
    daemon.env_twins(ctl)
    ctl.set_defaults(func=run_controller)


def _api(args: argparse.Namespace) -> Any:
    from dra_driver.client import KubeResourceAPI
    from qubelet.kube import load_kube_client

    # No urllib3 retries: every caller has its own (the slice loop, the prepare deadline).
    return KubeResourceAPI(api_client=load_kube_client(args.kubeconfig, retries=False))


def run_kubelet_plugin(args: argparse.Namespace, metrics: Any = None) -> int:
    """Run the per-node kubelet plugin until SIGTERM/SIGINT (``metrics``: a DRAMetrics to fill)."""
    from dra_driver.calibration import CalibrationSource
    from dra_driver.kubelet_plugin import KubeletPlugin
    from dra_driver.metrics import DRAMetrics
    from qubelet.errors import UsageError
    from qubelet.inventory import load_config

    if not args.node_name:
        raise UsageError("--node-name is required (or set NODE_NAME)")
    config = load_config(args.config)
    metrics = metrics if metrics is not None else DRAMetrics()
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
        tokens_secret=args.tokens_secret,
        tokens_root=args.tokens_root,
        tokens_gid=args.tokens_gid,
        calibration=CalibrationSource(args.config),
    )
    daemon.serve_metrics(
        args.metrics_port,
        metrics.registry,
        liveness={"kubelet-plugin": plugin.liveness_problem},
        readiness={"kubelet-registration": plugin.readiness_problem},
    )
    return daemon.run_until_stopped(plugin)


def _reservations(args: argparse.Namespace, config: Any, api_client: Any, metrics: Any) -> Any:
    """The reservation controller when a QPU of the inventory has ``reservation:`` (else None)."""
    from dra_driver.reservations.adapters import providers_for
    from dra_driver.reservations.claims_api import KubeClaimStatusAPI
    from dra_driver.reservations.controller import ReservationController, reserving_qpus

    qpus = reserving_qpus(config.qpus)
    if not qpus:
        return None
    return ReservationController(
        qpus,
        KubeClaimStatusAPI(api_client),
        providers_for(qpus, args.reservation_owner, args.reservation_timeout_seconds),
        metrics=metrics,
        deadline_seconds=args.reservation_deadline_seconds,
    )


def run_controller(args: argparse.Namespace) -> int:
    """Run the cloud-pool controller until SIGTERM/SIGINT."""
    from dra_driver.calibration import CalibrationSource
    from dra_driver.controller import CloudController
    from dra_driver.metrics import DRAMetrics
    from qubelet.inventory import load_config

    config = load_config(args.config)
    metrics = DRAMetrics()
    api = _api(args)
    controller = CloudController(
        config,
        api,
        args.identity,
        unhealthy_mode=args.unhealthy,
        lease_duration_seconds=args.lease_duration_seconds,
        metrics=metrics,
        calibration=CalibrationSource(args.config),
        reservations=_reservations(args, config, api.api_client, metrics),
        reservation_resync_seconds=args.reservation_resync_seconds,
    )
    daemon.serve_metrics(
        args.metrics_port,
        metrics.registry,
        liveness={"controller": controller.liveness_problem},
        readiness={"leader-election": controller.readiness_problem},
    )
    return daemon.run_until_stopped(controller)
