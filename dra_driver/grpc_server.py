"""A gRPC server on a unix socket, the way kubelet plugins serve (stale socket removed first)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc


def serve_unix(
    path: str | Path, add_services: Callable[[grpc.Server], None], workers: int = 8
) -> grpc.Server:
    """Start a server on ``unix://path`` with the services ``add_services`` registers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        os.unlink(path)  # a socket left by a previous instance would make bind fail
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dra-grpc"))
    add_services(server)
    if server.add_insecure_port(f"unix://{path}") == 0:
        raise OSError(f"cannot listen on unix socket {path}")
    server.start()
    return server


def stop_unix(server: grpc.Server | None, path: str | Path, grace: float = 1.0) -> None:
    """Stop the server (bounded) and remove its socket so kubelet's watcher sees it gone."""
    if server is not None:
        server.stop(grace).wait(grace + 2.0)
    Path(path).unlink(missing_ok=True)
