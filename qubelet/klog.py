"""klog-like structured logging shared by every qubelet component.

Kubernetes components log as ``I1125 11:22:33.123456   12345 file.py:42] "message" key="value"``;
admins grep and ship those lines with the same tooling they already use for kubelet, so the
daemons here follow the same shape instead of inventing one. Values are quoted the way klog's
``InfoS`` quotes them. Never pass secrets (tokens) as values: nothing here redacts them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

_LEVEL_LETTER = {
    logging.DEBUG: "I",
    logging.INFO: "I",
    logging.WARNING: "W",
    logging.ERROR: "E",
    logging.CRITICAL: "F",
}


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


class KlogFormatter(logging.Formatter):
    """Formats records as klog structured lines; ``extra={"kv": {...}}`` carries key/values."""

    def format(self, record: logging.LogRecord) -> str:
        """One klog-style line: severity, time, source, message and key=value pairs."""
        letter = _LEVEL_LETTER.get(record.levelno, "I")
        ts = time.gmtime(record.created)
        micros = int((record.created % 1) * 1_000_000)
        header = (
            f"{letter}{ts.tm_mon:02d}{ts.tm_mday:02d} "
            f"{ts.tm_hour:02d}:{ts.tm_min:02d}:{ts.tm_sec:02d}.{micros:06d} "
            f"{os.getpid():>7d} {record.filename}:{record.lineno}]"
        )
        parts = [header, _format_value(record.getMessage())]
        kv = getattr(record, "kv", None) or {}
        parts.extend(f"{key}={_format_value(val)}" for key, val in kv.items())
        if record.exc_info:
            parts.append(f"err={_format_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


class StructuredLogger:
    """A thin ``InfoS``/``ErrorS`` facade over :mod:`logging`, keyed by component name."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def info(self, msg: str, **kv: Any) -> None:
        """Log ``msg`` with structured ``kv`` at info level."""
        self._logger.info(msg, extra={"kv": kv}, stacklevel=2)

    def debug(self, msg: str, **kv: Any) -> None:
        """Log ``msg`` with structured ``kv`` at debug level (``-v``)."""
        self._logger.debug(msg, extra={"kv": kv}, stacklevel=2)

    def warning(self, msg: str, **kv: Any) -> None:
        """Log ``msg`` with structured ``kv`` at warning level."""
        self._logger.warning(msg, extra={"kv": kv}, stacklevel=2)

    def error(self, msg: str, err: BaseException | str | None = None, **kv: Any) -> None:
        """Log ``msg`` at error level, with ``err`` as its one-line cause."""
        if err is not None:
            kv = {"err": str(err), **kv}
        self._logger.error(msg, extra={"kv": kv}, stacklevel=2)


def get_logger(name: str) -> StructuredLogger:
    """Return the structured logger for a component (e.g. ``"qubelet.device_plugin"``)."""
    return StructuredLogger(name)


def setup(verbosity: int = 0, stream: Any = None) -> None:
    """Install the klog formatter: qubelet components log at INFO (``-v``: DEBUG), libraries at WARNING.

    Component loggers must be named ``qubelet.<component>`` to be shown at INFO.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KlogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries (qiskit logs every transpiler pass at INFO) stay at WARNING unless -vv.
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)
    logging.getLogger("qubelet").setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
