"""``qubelet device-plugin``: run the QPU device plugin on a node."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from qpu_device_plugin.cdi import DEFAULT_CDI_DIR
from qpu_device_plugin.constants import DEVICE_PLUGIN_PATH
from qubelet import daemon
from qubelet.inventory.names import RESOURCE_NAME
from qubelet.inventory.tokens import TOKENS_ROOT, TokenMounts, add_token_flags

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
        "--cdi-dir",
        default=DEFAULT_CDI_DIR,
        help=f"where the CDI spec goes with flags.cdiEnabled (default {DEFAULT_CDI_DIR})",
    )
    add_node_flags(parser)
    add_token_flags(parser)
    parser.add_argument(
        "--stage-tokens-dir",
        default=None,
        help="hostPath directory (mounted at the same path) to copy token files into, so the "
        "runtime mounts a file that exists on the node (pod deployments)",
    )
    daemon.add_metrics_port_flag(parser)
    daemon.env_twins(parser)
    parser.set_defaults(func=run)


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    """``--node-name`` and ``--node-labels``: which of the inventory's QPUs this node reaches."""
    from qubelet.inventory.binding import parse_labels

    def labels(text: str) -> dict[str, str]:
        try:
            return parse_labels(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        help="this node (default $NODE_NAME): QPUs bound to other nodes by `nodes:` are not advertised",
    )
    parser.add_argument(
        "--node-labels",
        type=labels,
        default=None,
        help="this node's labels as k=v,... (needed for QPUs bound by nodeSelector)",
    )


def run(args: argparse.Namespace, metrics: Any = None) -> int:
    """Load the config, start the plugin and block until SIGTERM/SIGINT; exit 0 on clean stop.

    ``metrics``: a PluginMetrics to fill (the node agent adds its own gauge to its registry).
    """
    from qpu_device_plugin.metrics import PluginMetrics
    from qpu_device_plugin.plugin import DevicePlugin, InitError
    from qubelet import klog
    from qubelet.inventory import load_config
    from qubelet.inventory.binding import for_node

    log = klog.get_logger("qubelet.device_plugin")
    config = load_config(args.config)  # a ConfigError is a UsageError: one line, exit 2
    all_qpus = len(config.qpus)
    config, notes = for_node(config, getattr(args, "node_name", None), getattr(args, "node_labels", None))
    for note in notes:
        log.warning("QPU not advertised", why=note)
    log.info(
        "QPUs this node reaches",
        node=getattr(args, "node_name", None) or "",
        advertised=",".join(q.name for q in config.qpus),
        configured=all_qpus,
    )
    metrics = metrics if metrics is not None else PluginMetrics()
    tokens = TokenMounts(
        root=Path(getattr(args, "tokens_root", TOKENS_ROOT)),
        staging_dir=Path(args.stage_tokens_dir) if getattr(args, "stage_tokens_dir", None) else None,
        gid=getattr(args, "tokens_gid", None),
    )
    plugin = DevicePlugin(
        config, args.kubelet_dir, metrics=metrics, cdi_dir=getattr(args, "cdi_dir", None), tokens=tokens
    )
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
