"""The ``qubelet`` command line: kubectl-style verbs, one module per component.

Each component owns a ``register(subparsers)`` function in its own ``cli`` module that adds its
verbs and sets ``func`` on the parsed namespace. Those modules import their heavy dependencies
(qiskit, grpc, kubernetes) inside the handlers, so ``qubelet --help`` stays fast and a node image
without the pipeline's dependencies can still run its own verb.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import re
import sys
from collections.abc import Sequence

from qubelet import __version__, klog
from qubelet.errors import UsageError

__all__ = ["UsageError", "build_parser", "main"]

#: Modules that contribute verbs, in the order they appear in ``--help``.
COMPONENT_CLIS: tuple[str, ...] = (
    "pipeline.cli",
    "pipeline.cluster.cli",
    "policy.cli",
    "qpu_device_plugin.cli",
    "dra_driver.cli",
    "node_agent.cli",
    "admission_check.cli",
)


#: flags whose value may begin with a minus sign (an observable such as ``-XZII`` or
#: ``-0.5*ZZII``), which argparse would otherwise take for an unknown option
DASH_VALUE_FLAGS = frozenset({"--observables"})
_DASH_VALUE = re.compile(r"^-[0-9.IXYZ]")


def attach_dash_values(argv: Sequence[str]) -> list[str]:
    """``--observables -XZII`` as ``--observables=-XZII``: the form argparse reads as a value."""
    out: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else None
        if token in DASH_VALUE_FLAGS and following is not None and _DASH_VALUE.match(following):
            out.append(f"{token}={following}")
            index += 2
            continue
        out.append(token)
        index += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``qubelet`` parser with every installed component's verbs."""
    parser = argparse.ArgumentParser(
        prog="qubelet",
        description="QPUs as Kubernetes resources and a hybrid circuit-cutting pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"qubelet {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMPONENT_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A slim image may ship only some components; their verbs are simply absent.
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen verb and return its exit status (2 for usage errors)."""
    try:
        parser = build_parser()  # daemon env twins (QUBELET_*) are checked here
    except UsageError as exc:
        print(f"qubelet: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(attach_dash_values(sys.argv[1:] if argv is None else argv))
    klog.setup(args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"qubelet: error: {exc}", file=sys.stderr)
        return 2
    finally:
        # The command is done; what is left is interpreter shutdown, whose garbage-collection
        # passes over a qiskit-sized heap took about a second of the user's wait. Frozen objects
        # are skipped by those passes (and freed with the process).
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
