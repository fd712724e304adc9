"""``qubelet node-agent``: one DaemonSet for DRA clusters and device-plugin clusters alike.

At start-up the agent asks the API server whether it serves ``resource.k8s.io/v1`` and this
node's kubelet whether it takes DRA plugins (:mod:`node_agent.mode`), logs the choice and why,
exports it as ``qubelet_node_agent_mode{mode=...}``, then runs exactly what
``qubelet dra-driver kubelet-plugin`` or ``qubelet device-plugin`` would run. ``--mode`` pins
the choice. The decision is made once: a cluster upgraded to DRA is picked up by the next
rollout of the DaemonSet, never by a running agent switching APIs under its pods.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qubelet import daemon

DEFAULT_KUBELET_ROOT = "/var/lib/kubelet"


def register(subparsers: Any) -> None:
    """Add the ``node-agent`` verb to the top-level ``qubelet`` parser."""
    from dra_driver.cli import add_node_plugin_flags
    from dra_driver.constants import DEFAULT_CDI_DIR
    from qpu_device_plugin.cli import add_node_flags

    parser = subparsers.add_parser(
        "node-agent",
        help="serve QPUs to kubelet through DRA when the cluster supports it, else as a device plugin",
        description="Per-node QPU agent: DRA kubelet plugin or device plugin, chosen at start-up.",
    )
    parser.add_argument("--config", required=True, help="QPU inventory file (qpus.yaml)")
    parser.add_argument(
        "--mode",
        choices=("auto", "dra", "device-plugin"),
        default="auto",
        help="auto: DRA when the API server serves resource.k8s.io/v1 and kubelet >= 1.34 (default)",
    )
    add_node_flags(parser)
    parser.add_argument(
        "--kubelet-root",
        default=DEFAULT_KUBELET_ROOT,
        help="kubelet's root directory: plugins/, plugins_registry/ and device-plugins/ live in it",
    )
    parser.add_argument("--cdi-dir", default=DEFAULT_CDI_DIR)
    parser.add_argument(
        "--stage-tokens-dir",
        default=None,
        help="DRA: hostPath directory for token copies (default <kubelet-root>/plugins/<driver>/tokens)",
    )
    daemon.add_kubeconfig_flag(parser)
    daemon.add_metrics_port_flag(parser)
    add_node_plugin_flags(parser)
    daemon.env_twins(parser)
    parser.set_defaults(func=run)


def choose(args: argparse.Namespace) -> Any:
    """The :class:`node_agent.mode.Decision` for these flags (asks the API server in auto mode)."""
    from node_agent.mode import KubeClusterProbe, Observations, decide, observe

    if args.mode != "auto":
        return decide(args.mode, Observations(None, None, False))
    registry = Path(args.kubelet_root) / "plugins_registry"
    from qubelet.errors import UsageError
    from qubelet.kube import load_kube_client

    try:
        api_client = load_kube_client(args.kubeconfig)
    except UsageError as exc:
        return decide(None, Observations(None, None, registry.is_dir(), str(exc)))
    return decide(None, observe(KubeClusterProbe(api_client), args.node_name or "", registry))


def mode_gauge(registry: Any, mode: str) -> Any:
    """``qubelet_node_agent_mode{mode}``: 1 for the API this agent serves, 0 for the other."""
    from prometheus_client import Gauge

    from node_agent.mode import MODES

    gauge = Gauge(
        "qubelet_node_agent_mode",
        "Kubelet API this node agent serves (1) and the one it does not (0)",
        ["mode"],
        registry=registry,
    )
    for name in MODES:
        gauge.labels(mode=name).set(1 if name == mode else 0)
    return gauge


def run(args: argparse.Namespace) -> int:
    """Decide, log and export the mode, then run the chosen daemon until SIGTERM/SIGINT."""
    from qubelet import klog
    from qubelet.errors import UsageError

    log = klog.get_logger("qubelet.node_agent")
    if args.mode in ("auto", "dra") and not args.node_name:
        raise UsageError("--node-name is required (or set NODE_NAME)")
    decision = choose(args)
    log.info("node agent mode chosen", mode=decision.mode, reason=decision.reason, node=args.node_name or "")
    root = Path(args.kubelet_root)
    if decision.mode == "dra":
        from dra_driver.cli import run_kubelet_plugin
        from dra_driver.metrics import DRAMetrics
        from qubelet.inventory.names import DRIVER_NAME

        dra_metrics = DRAMetrics()
        mode_gauge(dra_metrics.registry, "dra")
        tokens = args.stage_tokens_dir or str(root / "plugins" / DRIVER_NAME / "tokens")
        dra_args = argparse.Namespace(
            config=args.config,
            node_name=args.node_name,
            plugins_dir=str(root / "plugins"),
            registry_dir=str(root / "plugins_registry"),
            cdi_dir=args.cdi_dir,
            kubeconfig=args.kubeconfig,
            metrics_port=args.metrics_port,
            unhealthy=args.unhealthy,
            resync_seconds=args.resync_seconds,
            stage_tokens_dir=tokens,
            tokens_secret=args.tokens_secret,
            tokens_root=args.tokens_root,
            tokens_gid=args.tokens_gid,
        )
        return run_kubelet_plugin(dra_args, metrics=dra_metrics)
    from qpu_device_plugin.cli import run as run_device_plugin
    from qpu_device_plugin.metrics import PluginMetrics

    dp_metrics = PluginMetrics()
    mode_gauge(dp_metrics.registry, "device-plugin")
    dp_args = argparse.Namespace(
        config=args.config,
        kubelet_dir=str(root / "device-plugins"),
        metrics_port=args.metrics_port,
        node_name=args.node_name,
        node_labels=args.node_labels,
        cdi_dir=args.cdi_dir,
        stage_tokens_dir=args.stage_tokens_dir,
        tokens_root=args.tokens_root,
        tokens_gid=args.tokens_gid,
    )
    return run_device_plugin(dp_args, metrics=dp_metrics)
