"""``qubelet dra-driver kubelet-plugin`` as its own process, against the in-memory API double.

There is no API server here, so the soak test cannot point the real daemon at one. This runs
the daemon's real CLI entry point (flags, signal handling, start-up, shutdown) in a process of
its own, with only the API client swapped for :class:`FakeResourceAPI`, so SIGTERM and SIGKILL
hit a real process. The claims come from a JSON file written by the test (``namespace``,
``name``, ``uid``, ``pool``, ``device``); reading a claim whose name is in ``hang`` blocks for
``hang_seconds`` and then fails the way the real client does when its request timeout passes
(one hung API read, bounded, as ``KubeResourceAPI`` bounds it).

Usage: ``python dra_plugin_process.py CLAIMS_JSON KUBELET_PLUGIN_ARGS...``
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for `doubles`

from doubles.fake_resource_api import FakeResourceAPI, allocated_claim
from dra_driver import cli as dra_cli
from qubelet.cli import main
from qubelet.errors import ApiError
from qubelet.inventory.names import DRIVER_NAME


class HangingAPI(FakeResourceAPI):
    """The API double, with reads of some claims that hang until a request timeout."""

    def __init__(self, hang: set[str], hang_seconds: float) -> None:
        """Reads of claims named in ``hang`` take ``hang_seconds`` and then time out."""
        super().__init__()
        self.hang = hang
        self.hang_seconds = hang_seconds

    def read_resource_claim(self, namespace: str, name: str) -> Any:
        """Read a claim; a hung one times out like the real client's request timeout."""
        if name in self.hang:
            time.sleep(self.hang_seconds)
            raise ApiError("read resource claim: ReadTimeoutError Read timed out.", reason="ReadTimeoutError")
        return super().read_resource_claim(namespace, name)


def run(claims_file: str, args: list[str]) -> int:
    """Load the claims into the API double and run the daemon's CLI until it is signalled."""
    spec = json.loads(Path(claims_file).read_text())
    api = HangingAPI(set(spec.get("hang", [])), float(spec.get("hang_seconds", 5.0)))
    for c in spec["claims"]:
        api.put_claim(
            allocated_claim(
                c["namespace"], c["name"], [(DRIVER_NAME, c["pool"], c["device"], "qpu")], uid=c["uid"]
            )
        )
    dra_cli._api = lambda _args: api  # type: ignore[assignment]
    return main(["dra-driver", "kubelet-plugin", *args])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
