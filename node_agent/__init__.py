"""``qubelet node-agent``: one DaemonSet that serves DRA where the cluster can, else the device plugin."""

__all__ = ["cli", "mode"]
