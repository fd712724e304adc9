"""The committed gRPC stubs are exactly what ``make protos`` generates from the protos."""

from __future__ import annotations

from pathlib import Path

import pytest

from qubelet import protos


def test_committed_stubs_match_regenerated(tmp_path: Path) -> None:
    files = protos.proto_files()
    if not files:
        pytest.skip("no .proto files in the tree yet")
    for proto in files:
        (tmp_path / proto.parent).mkdir(parents=True, exist_ok=True)
    protos.generate(tmp_path)
    stale = []
    for proto in files:
        for name in protos.generated_names(proto):
            committed = protos.REPO_ROOT / name
            fresh = tmp_path / name
            if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                stale.append(str(name))
    assert not stale, f"stubs out of date, run `make protos`: {stale}"
