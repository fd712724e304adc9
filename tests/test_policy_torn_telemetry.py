"""A telemetry line torn by a full disk costs that line, not the whole history (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy.scenarios import SCENARIOS
from policy.simulator import simulate
from policy.size_rule import SizePolicy
from policy.telemetry_sources import LocalHistory, split_torn
from qubelet.cli import main

pytestmark = pytest.mark.timeout(60)


def rows_text(count: int) -> list[str]:
    rows = simulate(SCENARIOS["paper"].scaled(60), SizePolicy(), seed=0).rows[:count]
    return [json.dumps(r) for r in rows]


def test_policy_fit_skips_and_counts_torn_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = rows_text(6)
    # Row 2 was cut short and row 3 appended right after it (the next append after space was
    # freed); row 5 was cut short at the end of the file.
    torn = [lines[0], lines[1], lines[2][: len(lines[2]) // 2] + lines[3], lines[4], lines[5][:40]]
    path = tmp_path / "telemetry.jsonl"
    path.write_text("\n".join(torn))
    model = tmp_path / "model.json"
    assert main(["policy", "fit", "--telemetry", str(path), "-o", str(model)]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 torn telemetry lines" in out
    assert "fitted on 4 telemetry rows" in out  # rows 0, 1, 3 (recovered from the torn line) and 4
    history = LocalHistory([path], strict=True)
    assert [r["ts"] for r in history.rows()] == [json.loads(lines[i])["ts"] for i in (0, 1, 3, 4)]


def test_a_malformed_row_is_still_refused_when_strict(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.jsonl"
    path.write_text(rows_text(1)[0] + "\n" + '{"backend": "cpu",, "x": 1}\n')
    with pytest.raises(ValueError, match=r"telemetry.jsonl:2: bad telemetry row"):
        LocalHistory([path], strict=True).rows()


def test_split_torn() -> None:
    row = rows_text(1)[0]
    assert split_torn(row) == (False, None)
    assert split_torn(row[:30]) == (True, None)
    assert split_torn(row[:30] + row) == (True, row)
    assert split_torn("not json at all") == (False, None)


def test_nul_bytes_cost_their_line_not_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = rows_text(4)
    # a crash left the file's length ahead of its data: NULs, then the next run's append
    text = (
        lines[0] + "\n" + "\x00" * 64 + lines[1] + "\n" + lines[2][:50] + "\x00" * 20 + "\n" + lines[3] + "\n"
    )
    path = tmp_path / "telemetry.jsonl"
    path.write_bytes(text.encode())
    model = tmp_path / "model.json"
    assert main(["policy", "fit", "--telemetry", str(path), "-o", str(model)]) == 0
    out = capsys.readouterr().out
    assert "dropped NUL bytes from 2 telemetry lines" in out
    assert "fitted on 3 telemetry rows" in out


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\n", b'{"backend": "cpu", "run_sec'])
def test_no_usable_rows_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "telemetry.jsonl"
    path.write_bytes(content)
    model = tmp_path / "model.json"
    assert main(["policy", "fit", "--telemetry", str(path), "-o", str(model)]) == 2
    err = capsys.readouterr().err
    assert "no usable telemetry rows" in err
    assert not model.exists()
