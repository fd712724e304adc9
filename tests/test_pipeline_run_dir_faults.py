"""Run-directory faults: a second run, untrustworthy results on resume, and a broken filesystem.

Each test reproduces one fault from issue 10 and fails without its fix: two runs on one
``--run-dir`` used to mix results; a resumed run trusted any result file that existed; a
read-only, full or misplaced run directory ended in a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline import stages
from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.executor import LocalExecutor
from pipeline.records import ExpectedRecord, checksum_of, problem_with, seal
from qubelet.cli import main

SMALL = ["--qubits", "4", "--cuts", "1", "--backends", "cpu", "--policy", "size", "--no-progress"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The single ``qubelet: error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("qubelet: error:")]
    assert len(lines) == 1, err
    return lines[0]


def small_config(run_dir: Path, shots: int = 400) -> RunConfig:
    return RunConfig(qubits=4, cuts=1, shots=shots, policy="size", backends=("cpu",), run_dir=run_dir)


def values(summary: dict[str, object]) -> list[float]:
    return [float(o["value"]) for o in summary["observables"]]  # type: ignore[attr-defined, index]


# --- severe 4: two runs on one run directory -------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipeline.runlock import run_dir_lock
    with run_dir_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the run directory's lock for a few seconds (as a running run does)."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), "3"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield run_dir, proc
    proc.kill()
    proc.wait()


def test_second_run_on_a_busy_run_dir_refuses_in_one_line(
    lock_holder: tuple[Path, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, holder = lock_holder
    code, _, err = run_cli(["run", *SMALL, "--shots", "64", "--run-dir", str(run_dir)], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"{run_dir} is in use by another run (pid {holder.pid}" in line
    assert not (run_dir / "results").exists()  # nothing was written next to the other run


def test_second_run_waits_for_the_lock_when_asked(
    lock_holder: tuple[Path, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, holder = lock_holder
    started = time.monotonic()
    code, out, _ = run_cli(
        ["run", *SMALL, "--shots", "64", "--run-dir", str(run_dir), "--lock-wait", "60"], capsys
    )
    assert code == 0, out
    assert holder.poll() is not None  # it ran only after the holder had finished
    assert time.monotonic() - started > 0.5


def test_results_record_shots_and_seed_and_are_checked_on_resume(tmp_path: Path) -> None:
    """A result sampled with other shots (the mixed-run symptom) is recomputed, not trusted."""
    run_dir, other = tmp_path / "run", tmp_path / "other"
    summary, _ = LocalExecutor(small_config(run_dir, shots=400)).run()
    LocalExecutor(small_config(other, shots=64)).run()
    keys = stages.load_manifest(run_dir).cut.unique_keys()
    record = json.loads((run_dir / "results" / f"{keys[0]}.json").read_text())
    assert record["shots"] == 400
    assert record["seed"] == stages.subexperiment_seed(7, keys[0])
    # Same keys (shots are not in the key): copy the 64-shot result over the 400-shot one.
    shutil.copy(other / "results" / f"{keys[0]}.json", run_dir / "results" / f"{keys[0]}.json")
    resumed, _ = LocalExecutor(small_config(run_dir, shots=400)).run()
    assert resumed["recomputed_invalid"] == {keys[0]: "shots 64, this run uses 400"}
    assert json.loads((run_dir / "results" / f"{keys[0]}.json").read_text())["shots"] == 400
    assert values(resumed) == values(summary)  # per-key seeds: bit-identical after recompute


# --- resuming trusts any file that exists ------------------------------------------------------


def test_resume_recomputes_truncated_edited_and_copied_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    clean = small_config(tmp_path / "clean")
    reference, _ = LocalExecutor(clean).run()
    shutil.copytree(clean.run_dir, run_dir)
    keys = stages.load_manifest(run_dir).cut.unique_keys()
    results = run_dir / "results"
    truncated, edited, copied, resealed = keys[0], keys[1], keys[2], keys[3]
    text = (results / f"{truncated}.json").read_text()
    (results / f"{truncated}.json").write_text(text[: len(text) // 2])
    record = json.loads((results / f"{edited}.json").read_text())
    record["counts"][0] += 1
    record["counts"][-1] -= 1  # same total: only the checksum can tell
    (results / f"{edited}.json").write_text(json.dumps(record))
    shutil.copy(results / f"{keys[4]}.json", results / f"{copied}.json")
    # An edit that recomputes the checksum is still caught by the counts/shots invariants.
    record = json.loads((results / f"{resealed}.json").read_text())
    record["counts"][0] += 5
    record["checksum"] = checksum_of(record)
    (results / f"{resealed}.json").write_text(json.dumps(record))

    code, out, _ = run_cli(["run", *SMALL, "--shots", "400", "--run-dir", str(run_dir)], capsys)
    assert code == 0
    assert "recomputed: 4 stored results were invalid and set aside" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    reasons = summary["recomputed_invalid"]
    assert reasons[truncated] == "unreadable (JSONDecodeError)"
    assert reasons[edited] == "checksum mismatch (edited or damaged)"
    assert reasons[copied].startswith(f"holds the record of key {keys[4][:12]}")
    assert reasons[resealed] == "counts sum to 405, not 400 shots"
    assert (results / f"{edited}.json.invalid").exists()
    assert values(summary) == values(reference)


def test_reconstruct_step_refuses_an_invalid_record(tmp_path: Path) -> None:
    """The cluster's reconstruct step never folds an invalid record into the value."""
    run_dir = tmp_path / "run"
    LocalExecutor(small_config(run_dir)).run()
    key = stages.load_manifest(run_dir).cut.unique_keys()[0]
    path = run_dir / "results" / f"{key}.json"
    record = json.loads(path.read_text())
    record["shots"] = 4096
    path.write_text(json.dumps(record))
    with pytest.raises(PipelineError, match=r"1 of \d+ results are invalid .*checksum mismatch"):
        stages.reconstruct(run_dir)


# --- filesystem faults: one line, exit 2 --------------------------------------------------------


def test_run_dir_that_is_a_file_or_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    code, _, err = run_cli(["run", *SMALL, "--run-dir", str(blocker)], capsys)
    assert code == 2
    assert f"{blocker}: not a directory" in one_error_line(err)
    code, _, err = run_cli(["run", *SMALL, "--run-dir", str(blocker / "run")], capsys)
    assert code == 2
    assert "Not a directory" in one_error_line(err)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real filesystem that can be made read-only or filled up."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) to create a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_read_only_run_dir(tiny_tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    code, _, err = run_cli(["run", *SMALL, "--run-dir", str(tiny_tmpfs / "run")], capsys)
    assert code == 2
    assert "Read-only file system" in one_error_line(err)


def test_full_disk(tiny_tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    filler = tiny_tmpfs / "filler"
    with filler.open("wb", buffering=0) as handle, pytest.raises(OSError):
        while True:
            handle.write(b"\0" * 4096)
    code, _, err = run_cli(["run", *SMALL, "--run-dir", str(tiny_tmpfs / "run")], capsys)
    assert code == 2
    assert "No space left on device" in one_error_line(err)


def test_disk_full_during_a_batch_stops_the_run_and_tears_no_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ENOSPC on the telemetry append (``/dev/full``): one line, exit 2, no retry on other backends."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "telemetry.jsonl").symlink_to("/dev/full")
    code, _, err = run_cli(["run", *SMALL, "--run-dir", str(run_dir)], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "telemetry.jsonl: cannot write: No space left on device" in line
    assert "failed after retries" not in line


def test_qpu_records_carry_their_backend_and_mitigation_options() -> None:
    """What changes a QPU result besides shots and seed: which QPU, and which mitigation."""
    record = seal(
        {
            "key": "k",
            "kind": "qpu",
            "shots": 3,
            "seed": 1,
            "num_clbits": 1,
            "outcomes": [0, 1],
            "counts": [1, 2],
        }
        | {"qpu_backend": "fake:IQMFakeApollo", "mitigation": "readout"}
    )
    expected = ExpectedRecord(
        "k", shots=3, seed=1, num_clbits=1, qpu_backend="fake:IQMFakeApollo", mitigation="readout"
    )
    assert problem_with(record, expected) is None
    assert problem_with(record, replace(expected, qpu_backend="iqm")) == (
        "measured on QPU fake:IQMFakeApollo, this run uses iqm"
    )
    assert problem_with(record, replace(expected, mitigation="zne", folded_scales=(3,))) == (
        "mitigation readout, this run uses zne"
    )
    zne = seal(
        record
        | {"mitigation": "zne", "folded": [{"scale": 3, "num_clbits": 1, "outcomes": [0], "counts": [3]}]}
    )
    assert problem_with(zne, replace(expected, mitigation="zne", folded_scales=(3,))) is None
    assert problem_with(zne, replace(expected, mitigation="zne", folded_scales=(3, 5))) == (
        "folded ZNE scales [3], this run needs [3, 5]"
    )
