"""``qubelet device-plugin``: run the QPU device plugin on a node."""

from __future__ import annotations

import argparse
from typing import Any

from qpu_device_plugin.constants import DEVICE_PLUGIN_PATH
from qubelet import daemon
from qubelet.inventory.names import RESOURCE_NAME

DEFAULT_KUBELET_DIR = DEVICE_PLUGIN_PATH.rstrip("/")


def register(subparsers: Any) -> None:
    """Add the ``device-plugin`` verb to the top-level ``qubelet`` parser."""
    parser = subparsers.add_parser(
        "device-plugin",
        help=f"advertise QPUs to kubelet as the extended resource {RESOURCE_NAME}",
        description="Serve the kubelet device plugin API (v1beta1) for the QPUs in --config.",
    )
    parser.add_argument("--config", required=True, help="QPU inventory file (config version v1)")
    parser.add_argument(
        "--kubelet-dir",
        default=DEFAULT_KUBELET_DIR,
        help=f"kubelet's device-plugins directory (default {DEFAULT_KUBELET_DIR})",
    )
    daemon.add_metrics_port_flag(parser)
    daemon.env_twins(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, metrics: Any = None) -> int:
    """Load the config, start the plugin and block until SIGTERM/SIGINT; exit 0 on clean stop.

    ``metrics``: a PluginMetrics to fill (the node agent adds its own gauge to its registry).
    """
    from qpu_device_plugin.metrics import PluginMetrics
    from qpu_device_plugin.plugin import DevicePlugin, InitError
    from qubelet import klog
    from qubelet.inventory import load_config

    log = klog.get_logger("qubelet.device_plugin")
    config = load_config(args.config)  # a ConfigError is a UsageError: one line, exit 2
    metrics = metrics if metrics is not None else PluginMetrics()
    plugin = DevicePlugin(config, args.kubelet_dir, metrics=metrics)
    daemon.stop_on_signals(on_stop=plugin.shutdown)
    daemon.serve_metrics(
        args.metrics_port,
        metrics.registry,
        liveness={"device-plugin": plugin.liveness_problem},
        readiness={"kubelet-registration": plugin.readiness_problem},
    )
    log.info(
        "starting device plugin", config=config.source, kubeletDir=args.kubelet_dir, qpus=len(config.qpus)
    )
    try:
        plugin.run()
    except InitError as exc:
        log.error("device plugin failed to start", err=exc)
        return 1
    return 0
