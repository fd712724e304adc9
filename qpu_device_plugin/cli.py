"""``qubelet device-plugin``: run the QPU device plugin on a node."""

from __future__ import annotations

import argparse
from typing import Any

from qpu_device_plugin.constants import DEVICE_PLUGIN_PATH
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
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, start the plugin and block until SIGTERM/SIGINT; exit 0 on clean stop."""
    import signal

    from qpu_device_plugin.metrics import PluginMetrics
    from qpu_device_plugin.plugin import DevicePlugin, InitError
    from qubelet import klog
    from qubelet.errors import UsageError
    from qubelet.inventory import ConfigError, load_config

    log = klog.get_logger("qubelet.device_plugin")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise UsageError(f"--metrics-port: must be in 1..65535, got {args.metrics_port}")

    metrics = PluginMetrics()
    plugin = DevicePlugin(config, args.kubelet_dir, metrics=metrics)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal received, shutting down", signal=signal.Signals(signum).name)
        plugin.shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.metrics_port is not None:
        try:
            metrics.serve(args.metrics_port)
        except OSError as exc:
            raise UsageError(f"--metrics-port {args.metrics_port}: {exc.strerror or exc}") from None
        log.info("serving metrics", port=args.metrics_port)
    log.info(
        "starting device plugin", config=config.source, kubeletDir=args.kubelet_dir, qpus=len(config.qpus)
    )
    try:
        plugin.run()
    except InitError as exc:
        log.error("device plugin failed to start", err=exc)
        return 1
    return 0
