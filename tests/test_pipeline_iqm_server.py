"""The real IQM path: iqm-client 36's IQMBackend against an IQM server double on loopback.

The double (``tests/doubles/iqm_server.py``) speaks the REST contract of iqm-client 36 and
checks the bearer token; the pipeline runs through the real ``IQMClient``/``IQMBackend``.
Before the fix every one of these runs ended in "no usable backend": the token file reached
iqm-client both as an argument and through ``IQM_TOKENS_FILE``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from doubles.iqm_server import Faults, IQMServerDouble, make_token, write_tokens_file

from pipeline import stages
from pipeline.backends.factory import make_backend
from qubelet.cli import main

pytestmark = pytest.mark.timeout(300)

RUN = ["run", "--qubits", "4", "--cuts", "1", "--backends", "qpu", "--policy", "size", "--no-progress"]
#: one batch for the whole run, so job counts are easy to reason about
ONE_BATCH = [*RUN, "--batch-size", "1000"]


class Env:
    """A double plus the environment the device plugin would inject for it."""

    def __init__(self, double: IQMServerDouble, tokens_file: Path, token: str) -> None:
        self.double = double
        self.tokens_file = tokens_file
        self.token = token

    def assert_no_token(self, *texts: str) -> None:
        for text in texts:
            assert self.token not in text


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def iqm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faults: Faults) -> Iterator[Env]:
    token = make_token()
    tokens_file = write_tokens_file(tmp_path / "tokens.json", token)
    double = IQMServerDouble(token, faults=faults)
    with double.running():
        monkeypatch.delenv("QUBELET_QPU_BACKEND", raising=False)
        monkeypatch.delenv("IQM_TOKEN", raising=False)
        # The inventory's URL form: the quantum computer as the last path segment.
        monkeypatch.setenv("IQM_SERVER_URL", f"{double.url}/{double.alias}")
        monkeypatch.setenv("IQM_TOKENS_FILE", str(tokens_file))
        monkeypatch.setenv("QUBELET_IQM_JOB_TIMEOUT", "30")
        yield Env(double, tokens_file, token)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("qubelet: error:")]
    assert len(lines) == 1, err
    return lines[0]


def batches_of(run_dir: Path) -> int:
    return len(stages.load_plan(run_dir).batches)


def test_successful_batch_through_the_real_client(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code, out, err = run_cli([*RUN, "--shots", "3000", "--run-dir", str(run_dir)], capsys)
    assert code == 0, err
    iqm.assert_no_token(out, err)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["backends"] == {"qpu": summary["backends"]["qpu"]}
    # The double's only noise is the readout error it publishes; mitigated with the published
    # calibration, the reconstruction must match the exact values.
    assert summary["mitigation"]["backends"]["qpu:iqm"]["level"] == "readout"
    for observable in summary["observables"]:
        assert abs(observable["error"]) <= 4 * observable["stderr"] + 1e-9, observable
    assert len(iqm.double.submitted) == batches_of(run_dir)
    assert all(job.definition.shots == 3000 for job in iqm.double.jobs.values())
    assert iqm.double.rejected_tokens == 0
    # Calibration comes from the server's quality metrics, and reaches the telemetry.
    cz, readout = iqm.double.expected_fidelities()
    rows = [json.loads(line) for line in (run_dir / "telemetry.jsonl").read_text().splitlines()]
    assert rows and all(r["fidelity_2q"] == pytest.approx(cz) for r in rows)
    assert all(r["readout_fidelity"] == pytest.approx(readout) for r in rows)


def test_backend_state_reports_the_server_qpu(iqm: Env) -> None:
    state = make_backend("qpu").state()
    assert state.max_qubits == 20 and state.healthy
    assert state.fidelity_2q == pytest.approx(iqm.double.expected_fidelities()[0])


@pytest.mark.parametrize("faults", [Faults(fail_jobs=1)])
def test_failed_job_is_resubmitted_once_because_the_server_says_so(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        [*RUN, "--shots", "500", "--batch-size", "1000", "--run-dir", str(run_dir)], capsys
    )
    assert code == 0, err
    # the failed batch and its re-plan: plan.json lists every batch the loop dispatched
    assert batches_of(run_dir) == 2
    assert len(iqm.double.submitted) == 2  # the failed job, then its resubmission
    rows = [json.loads(line) for line in (run_dir / "telemetry.jsonl").read_text().splitlines()]
    assert any(not r["success"] for r in rows)


@pytest.mark.parametrize("faults", [Faults(fail_jobs=100)])
def test_job_that_keeps_failing_names_the_server_and_reason(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        *RUN,
        "--shots",
        "100",
        "--batch-size",
        "1000",
        "--max-attempts",
        "2",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"IQM server {iqm.double.url}/apollo: job {iqm.double.submitted[-1]} failed" in line
    assert "Circuit compilation failed: calibration drifted" in line
    assert len(iqm.double.submitted) == 2
    iqm.assert_no_token(out, err)


@pytest.mark.parametrize("faults", [Faults(transient_status_errors=1)])
def test_retry_reattaches_to_a_submitted_job(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A status poll that fails (503) fails the attempt; the retry must not submit the job again."""
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        [*RUN, "--shots", "500", "--batch-size", "1000", "--run-dir", str(run_dir)], capsys
    )
    assert code == 0, err
    # the failed attempt and its re-plan (same subexperiments: the same job fingerprint)
    assert batches_of(run_dir) == 2
    assert len(iqm.double.submitted) == 1
    assert ("GET", f"/api/v1/jobs/{iqm.double.submitted[0]}") in iqm.double.requests


@pytest.mark.parametrize("faults", [Faults(stall_jobs=True)])
def test_job_that_never_finishes_times_out_without_resubmission(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUBELET_IQM_JOB_TIMEOUT", "1")
    args = [
        *RUN,
        "--shots",
        "100",
        "--batch-size",
        "1000",
        "--max-attempts",
        "2",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    line = one_error_line(err)
    assert (
        f"IQM server {iqm.double.url}/apollo: job {iqm.double.submitted[0]} did not finish within 1 s" in line
    )
    assert len(iqm.double.submitted) == 1  # both attempts waited for the same job
    iqm.assert_no_token(out, err)


@pytest.mark.parametrize("faults", [Faults(hang_seconds=5)])
def test_server_that_does_not_answer(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUBELET_IQM_REQUEST_TIMEOUT", "0.5")
    code, out, err = run_cli([*RUN, "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"no usable backend: IQM server {iqm.double.url}/apollo: no answer within 0.5 s" in line
    iqm.assert_no_token(out, err)


def test_rejected_token(iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = make_token()
    write_tokens_file(iqm.tokens_file, stale)
    code, out, err = run_cli([*RUN, "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"IQM server {iqm.double.url}/apollo: rejected the token file {iqm.tokens_file}" in line
    assert "AuthenticationError" in line
    assert iqm.double.rejected_tokens >= 1
    iqm.assert_no_token(out, err)
    assert stale not in out and stale not in err


def test_rejected_token_with_default_backends_is_a_loud_warning(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default backends fall back to the CPU; a QPU failing auth used to be one quiet table row."""
    write_tokens_file(iqm.tokens_file, make_token())
    args = ["run", "--qubits", "4", "--cuts", "1", "--policy", "size", "--no-progress"]
    code, out, err = run_cli([*args, "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 0, err  # the answer is still computed, on the other backends
    warnings = [line for line in err.splitlines() if line.startswith("qubelet: warning: ")]
    assert len(warnings) == 1, err
    assert "QPU qpu unavailable, the run used the other backends: " in warnings[0]
    assert f"IQM server {iqm.double.url}/apollo: rejected the token file" in warnings[0]
    (row,) = [line for line in out.splitlines() if line.startswith("qpu ")]
    assert "WARNING unavailable: IQM server" in row
    iqm.assert_no_token(out, err)


def test_mixed_token_sources_are_refused_in_one_line(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IQM_TOKEN", iqm.token)
    code, out, err = run_cli([*RUN, "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2
    assert "IQM_TOKEN and IQM_TOKENS_FILE are both set" in one_error_line(err)
    iqm.assert_no_token(out, err)


def test_iqm_token_alone_is_accepted(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """iqm-client takes the token from IQM_TOKEN; qubelet used to refuse it without a file (issue 23)."""
    monkeypatch.delenv("IQM_TOKENS_FILE")
    monkeypatch.setenv("IQM_TOKEN", iqm.token)
    run_dir = tmp_path / "r"
    code, out, err = run_cli([*RUN, "--run-dir", str(run_dir)], capsys)
    assert code == 0, err
    assert iqm.double.submitted and iqm.double.rejected_tokens == 0
    iqm.assert_no_token(out, err)


@pytest.mark.parametrize("faults", [Faults(stall_jobs=True)])
def test_job_timeout_is_named_in_the_final_line(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that never finishes, --max-attempts 3: the last line used to say only that no healthy
    backend was left; it names why the QPU was given up (issue 23)."""
    monkeypatch.setenv("QUBELET_IQM_JOB_TIMEOUT", "1")
    code, out, err = run_cli([*RUN, "--max-attempts", "3", "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "qpu:iqm marked unhealthy after: BackendFailedError: IQM server" in line
    assert "did not finish within 1 s" in line
    iqm.assert_no_token(out, err)


@pytest.mark.parametrize("faults", [Faults(stall_jobs=True)])
def test_sigterm_cancels_the_job_on_the_server(iqm: Env, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qubelet.cli",
            *RUN,
            "--shots",
            "100",
            "--batch-size",
            "1000",
            "--run-dir",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 240
        while not iqm.double.submitted and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert iqm.double.submitted, "the run never submitted a job"
        time.sleep(0.5)  # let it reach the status polling
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    job = iqm.double.submitted[0]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert iqm.double.cancelled == [job]
    assert iqm.double.jobs[job].status == "cancelled"
    assert "Traceback" not in err
    assert f"cancelled job {job} on IQM server {iqm.double.url}/apollo" in err
    assert len(iqm.double.submitted) == 1
    iqm.assert_no_token(out, err)


@pytest.mark.parametrize("faults", [Faults(stall_jobs=True)])
def test_sigterm_on_a_workflow_step_cancels_its_job(iqm: Env, tmp_path: Path) -> None:
    """A cluster's execute step (a pod being stopped) cancels its QPU job too."""
    run_dir = tmp_path / "run"
    flags = ["--qubits", "4", "--cuts", "1", "--backends", "qpu", "--policy", "size", "--batch-size", "1000"]
    assert main(["task", "generate", "--run-dir", str(run_dir), *flags]) == 0
    (batch,) = stages.load_plan(run_dir).batches
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qubelet.cli",
            "task",
            "execute",
            "--run-dir",
            str(run_dir),
            "--batch",
            batch.id,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 240
        while not iqm.double.submitted and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert iqm.double.submitted, "the step never submitted a job"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    job = iqm.double.submitted[0]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert iqm.double.cancelled == [job]
    assert f"step execute stopped; cancelled job {job} on IQM server {iqm.double.url}/apollo" in err
    assert "Traceback" not in err
    iqm.assert_no_token(out, err)


@pytest.mark.parametrize("faults", [Faults(stall_jobs=True)])
def test_run_killed_outright_reattaches_to_its_job_on_resume(
    iqm: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 cannot cancel anything: the resumed run collects the job instead of paying twice."""
    run_dir = tmp_path / "run"
    args = [*ONE_BATCH, "--shots", "400", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "qubelet.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 240
        while not iqm.double.submitted and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert iqm.double.submitted, "the run never submitted a job"
        time.sleep(0.5)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert len(list((run_dir / "jobs").glob("*.json"))) == 1
    iqm.double.finish_stalled_jobs()
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert len(iqm.double.submitted) == 1  # collected, not submitted again
    assert not list((run_dir / "jobs").glob("*.json"))  # collected jobs leave the journal
    iqm.assert_no_token(out, err)


def test_a_wide_batch_carries_one_mirror_circuit_in_its_server_job(iqm: Env, tmp_path: Path) -> None:
    """The mirror probe through the real client: one extra circuit in the same job, one reading.

    The exact probe's width limit is lowered so this small run takes the mirror path. The
    double's gates are noise-free (only its published readout errors are real), so the device
    is better than its published CZ fidelity says: the estimate must fall below the calibration's
    prediction, and the reconstruction is untouched by the extra circuit.
    """
    from qiskit.circuit.library import efficient_su2

    from pipeline.api import run
    from policy.interface import CircuitFeatures
    from policy.models import analytic_error

    circuit = efficient_su2(4, entanglement="linear", reps=2)
    circuit.assign_parameters([0.4] * len(circuit.parameters), inplace=True)
    result = run(
        circuit, ["ZZII", "IZZI"], "AABB", run_dir=tmp_path / "run", backends=("qpu",), policy="size",
        shots=2000, batch_size=1000, exact_probe_max_width=2,
    )  # fmt: skip
    plan = stages.load_plan(result.run_dir)
    assert len(plan.batches) == 1 == len(iqm.double.jobs)
    (job,) = iqm.double.jobs.values()
    assert len(job.definition.circuits) == len(plan.batches[0].keys) + 1  # the mirror rides along
    rows = [json.loads(line) for line in (result.run_dir / "telemetry.jsonl").read_text().splitlines()]
    measured = [r for r in rows if r.get("observed_error") is not None]
    assert len(measured) == 1 and measured[0]["probe"] == "mirror"
    row = measured[0]
    task = CircuitFeatures("k", row["num_qubits"], row["depth"], row["num_2q_gates"], row["num_clbits"], 1)
    predicted = float(
        analytic_error([task], "qpu", row["fidelity_2q"], row["readout_fidelity"], row["mitigation"])[0]
    )
    assert row["mitigation"] == "readout"
    assert 0.0 < row["observed_error"] < predicted
    # readout-mitigated with the published calibration, as the exact-probe run above
    for observable in result.summary["observables"]:
        assert abs(observable["error"]) <= 4 * observable["stderr"] + 1e-9, observable
