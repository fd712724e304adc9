"""Regenerate the committed gRPC stubs from the ``.proto`` files in the source tree.

Run ``python -m qubelet.protos`` (or ``make protos``). Stubs are committed so that installing
qubelet needs no code generator; ``tests/test_protos_current.py`` regenerates into a temporary
directory and fails when the committed files differ, so a proto edit cannot ship without them.
Each proto is compiled with the repository root as include path, so a file at
``qpu_device_plugin/api/v1beta1/api.proto`` becomes the module
``qpu_device_plugin.api.v1beta1.api_pb2`` and the upstream ``package`` names (``v1beta1``,
``pluginregistration``, ``v1``) stay what kubelet expects on the wire.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_PACKAGES = ("qpu_device_plugin", "dra_driver")


def proto_files(root: Path = REPO_ROOT) -> list[Path]:
    """All ``.proto`` files of the node-side packages, relative to ``root``, sorted."""
    found: list[Path] = []
    for package in PROTO_PACKAGES:
        found.extend(p.relative_to(root) for p in (root / package).rglob("*.proto"))
    return sorted(found)


def generated_names(proto: Path) -> list[Path]:
    """The stub files protoc writes for one proto (``_pb2.py``, ``_pb2.pyi``, ``_pb2_grpc.py``)."""
    stem = proto.with_suffix("")
    return [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]


def generate(out_dir: Path, root: Path = REPO_ROOT) -> list[Path]:
    """Compile every proto under ``root`` into ``out_dir``; returns the generated paths."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    include = str(Path(protoc.__file__).parent / "_proto")
    written: list[Path] = []
    for proto in proto_files(root):
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(root / proto),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        written.extend(out_dir / name for name in generated_names(proto))
    return written


def main() -> int:
    """Regenerate the committed stubs; the exit status."""
    for path in generate(REPO_ROOT):
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
