"""Content-addressed run artifacts: subexperiments as QPY, results and manifests as JSON.

A run directory is the single source of truth for a run, on a laptop or on the shared PVC of
an Argo workflow::

    manifest.json              what was cut: partitions, ordered keys, coefficients, observables
    plan.json                  where each subexperiment runs (batches per backend)
    circuit.qpy, observables.json  the uncut circuit and observables, as the user gave them
    subexperiments/<key>.qpy   one circuit, key = sha256 of its partition and canonical QPY bytes
    results/<key>.json         sampled counts, backend, timing (written atomically, sealed
                               with a checksum: see pipeline.records)
    telemetry.jsonl            one row per executed task, for ``qubelet policy fit``
    jobs/<fingerprint>.json    QPU server jobs submitted but not yet collected (re-attached on
                               resume instead of being submitted again)
    summary.json, timeline.png

Identical subexperiments of one partition share a key, so they are stored, run and resumed
once; the same circuit in two partitions gets two keys and two independent samples. Nothing here is
pickled: QPY is qiskit's versioned circuit format, the rest is JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit, QuantumRegister, qpy

from pipeline.backends.base import Counts
from pipeline.errors import PipelineError
from pipeline.records import ExpectedRecord, problem_with, seal
from pipeline.runlock import storage_error


def canonical_qpy(circuit: QuantumCircuit) -> bytes:
    """QPY bytes of ``circuit`` in a canonical form, so equal circuits hash equal in any process.

    Name and metadata are blanked, and the quantum register is renamed ``q``: qiskit names
    anonymous registers from a process-wide counter (``q0``, ``q2``, ...), which would otherwise
    make the key of the same subexperiment depend on what else the process built before it.
    """
    clean = QuantumCircuit(QuantumRegister(circuit.num_qubits, "q"), *circuit.cregs, name="subexperiment")
    clean.compose(circuit, qubits=range(circuit.num_qubits), clbits=range(circuit.num_clbits), inplace=True)
    clean.global_phase = circuit.global_phase
    clean.metadata = {}
    buffer = io.BytesIO()
    qpy.dump(clean, buffer)
    return buffer.getvalue()


def circuit_key(circuit: QuantumCircuit, partition: str = "") -> tuple[str, bytes]:
    """A subexperiment's content address and its canonical QPY bytes.

    The key hashes the QPY bytes and ``partition`` (see :meth:`ArtifactStore.put_circuit` for
    why); planning without a store (``qubelet render``) computes the same keys.
    """
    data = canonical_qpy(circuit)
    salt = f"partition={partition}\0".encode() if partition else b""
    return hashlib.sha256(salt + data).hexdigest(), data


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file + rename, so a killed writer never leaves half a file.

    Raises:
        StorageError: the directory is read-only, the disk is full, or a file is in the way.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise storage_error(exc.filename or path.parent, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise storage_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temp file and rename)."""
    atomic_write(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing or corrupt file is a one-line PipelineError."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing (was the run generated?)") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: corrupt JSON at line {exc.lineno}: {exc.msg}") from None


class ArtifactStore:
    """Reads and writes one run directory; safe for concurrent writers of different keys."""

    def __init__(self, run_dir: Path) -> None:
        self.root = Path(run_dir)
        self._telemetry_lock = threading.Lock()

    # layout
    @property
    def manifest_path(self) -> Path:
        """``manifest.json`` of the run."""
        return self.root / "manifest.json"

    @property
    def plan_path(self) -> Path:
        """``plan.json`` of the run."""
        return self.root / "plan.json"

    @property
    def telemetry_path(self) -> Path:
        """``telemetry.jsonl`` of the run."""
        return self.root / "telemetry.jsonl"

    @property
    def summary_path(self) -> Path:
        """``summary.json`` of the run."""
        return self.root / "summary.json"

    @property
    def jobs_dir(self) -> Path:
        """Server jobs submitted and not yet collected, one file each (see backends.iqm_remote)."""
        return self.root / "jobs"

    def circuit_path(self, key: str) -> Path:
        """Where the subexperiment with content key ``key`` is stored (QPY)."""
        return self.root / "subexperiments" / f"{key}.qpy"

    def result_path(self, key: str) -> Path:
        """Where the result of subexperiment ``key`` is stored (JSON)."""
        return self.root / "results" / f"{key}.json"

    # circuits
    def put_circuit(self, circuit: QuantumCircuit, partition: str = "") -> str:
        """Store ``circuit`` under its key: the hash of its QPY bytes and of ``partition``.

        Why the partition is part of the key: the same circuit can come out of two partitions
        (a mirror-symmetric cut), and the factors of one product must come from independent
        samples, or their shot noise multiplies into a bias. Within a partition, equal circuits
        share one key, one run and one result.
        """
        key, data = circuit_key(circuit, partition)
        path = self.circuit_path(key)
        if not path.exists():
            atomic_write(path, data)
        return key

    def get_circuit(self, key: str) -> QuantumCircuit:
        """Load the subexperiment with content key ``key``."""
        path = self.circuit_path(key)
        try:
            with path.open("rb") as handle:
                circuits = qpy.load(handle)
        except FileNotFoundError:
            raise PipelineError(f"{path}: subexperiment missing from the run directory") from None
        except Exception as exc:
            raise PipelineError(f"{path}: not a valid QPY file ({type(exc).__name__})") from None
        circuit = circuits[0]
        if not isinstance(circuit, QuantumCircuit):
            raise PipelineError(f"{path}: not a circuit")
        return circuit

    # results
    def has_result(self, key: str) -> bool:
        """Whether a result file for ``key`` exists (``result_problem`` says if it is reusable)."""
        return self.result_path(key).exists()

    def put_result(self, key: str, counts: Counts, **info: Any) -> None:
        """Store one result, sealed with its checksum (``info`` must include shots and seed)."""
        write_json(self.result_path(key), seal({"key": key, **info, **counts.to_json()}))

    def result_problem(self, key: str, expected: ExpectedRecord) -> str | None:
        """Why the stored result of ``key`` cannot be reused ("missing" if there is none)."""
        path = self.result_path(key)
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return "missing"
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError too
            return f"unreadable ({type(exc).__name__})"
        return problem_with(record, expected)

    def set_aside(self, key: str) -> Path:
        """Move an invalid result out of the way (kept as ``.invalid`` for inspection)."""
        path = self.result_path(key)
        aside = path.with_name(path.name + ".invalid")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error(path, exc, "cannot set aside invalid result") from None
        return aside

    def get_result(self, key: str) -> Counts:
        """Load the stored counts of ``key``."""
        return Counts.from_json(read_json(self.result_path(key)))

    def get_result_record(self, key: str) -> dict[str, Any]:
        """The whole stored result: counts plus backend, batch and timing."""
        record: dict[str, Any] = read_json(self.result_path(key))
        return record

    def missing_results(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` without a stored result file, in order."""
        return [key for key in keys if not self.has_result(key)]

    # telemetry
    def append_telemetry(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows as JSON lines, all or nothing.

        Why not a plain append: on a full disk a buffered write stops mid-line, and the next
        append continues on the same line. Here a failed write is truncated back to where it
        started, so the file keeps only whole lines (readers still skip torn ones, see
        ``policy.telemetry_sources``).
        """
        data = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
        path = self.telemetry_path
        with self._telemetry_lock:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise storage_error(exc.filename or path, exc) from None
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise storage_error(path, exc) from None
            finally:
                os.close(fd)
