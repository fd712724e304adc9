"""``qubelet admission-check``: run the Kueue AdmissionCheck controller until SIGTERM."""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from qubelet import daemon


def register(subparsers: Any) -> None:
    """Add the ``admission-check`` verb."""
    parser = subparsers.add_parser(
        "admission-check", help="run the Kueue AdmissionCheck controller that gates QPU work on telemetry"
    )
    parser.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL")
    parser.add_argument("--prometheus-timeout", type=float, default=2.0, metavar="S")
    parser.add_argument(
        "--max-wait-seconds",
        type=float,
        default=600.0,
        metavar="S",
        help="Retry while the best QPU's expected queue wait is longer than this",
    )
    parser.add_argument(
        "--reject-unmeetable",
        action="store_true",
        help="set Rejected (not Retry) when no QPU's live fidelity meets a Workload's floor",
    )
    parser.add_argument("--resync-seconds", type=float, default=5.0, metavar="S")
    parser.add_argument(
        "--identity", default=os.environ.get("POD_NAME") or socket.gethostname(), help="leader-election id"
    )
    parser.add_argument("--lease-namespace", default="qubelet-system")
    parser.add_argument("--lease-duration-seconds", type=int, default=15)
    daemon.add_kubeconfig_flag(parser)
    daemon.add_metrics_port_flag(parser, default=0)
    daemon.env_twins(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the controller until SIGTERM/SIGINT."""
    from admission_check.controller import AdmissionCheckController
    from admission_check.kueue import KubeKueueAPI
    from admission_check.metrics import AdmissionMetrics
    from admission_check.telemetry import PrometheusTelemetry
    from qubelet.errors import UsageError
    from qubelet.kube import load_kube_client
    from qubelet.leader import KubeLeaseAPI

    if args.resync_seconds <= 0 or args.max_wait_seconds < 0 or args.prometheus_timeout <= 0:
        raise UsageError("--resync-seconds and --prometheus-timeout must be > 0, --max-wait-seconds >= 0")
    if not args.prometheus.startswith(("http://", "https://")):
        raise UsageError(f"--prometheus: expected an http(s) URL, got {args.prometheus!r}")
    api_client = load_kube_client(args.kubeconfig)
    metrics = AdmissionMetrics()
    controller = AdmissionCheckController(
        KubeKueueAPI(api_client),
        KubeLeaseAPI(api_client),
        PrometheusTelemetry(args.prometheus, timeout=args.prometheus_timeout).snapshot,
        args.identity,
        max_wait_seconds=args.max_wait_seconds,
        reject_unmeetable=args.reject_unmeetable,
        lease_namespace=args.lease_namespace,
        lease_duration_seconds=args.lease_duration_seconds,
        metrics=metrics,
    )
    stop = daemon.stop_on_signals()
    daemon.serve_metrics(
        args.metrics_port,
        metrics.registry,
        liveness={"admission-check": controller.liveness_problem},
        readiness={"leader-election": controller.readiness_problem},
    )
    controller.start(args.resync_seconds)
    try:
        daemon.wait_for_stop(stop)
    finally:
        controller.stop()
    return 0
