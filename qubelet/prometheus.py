"""Reading the Prometheus HTTP API (``/api/v1/query``, ``/api/v1/query_range``), in one place.

The telemetry policy and the admission check both ask Prometheus about the same series; this is
the one client both use: one GET, the API's ``status``/``data.result`` envelope checked, and a
failure turned into :class:`PrometheusError` with a one-line cause. What a caller does on a
failure differs (the policy falls back to its priors, the admission check refuses to decide), so
that stays with the caller.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from qubelet.errors import QubeletError

__all__ = ["PrometheusError", "get_result", "instant_values"]


class PrometheusError(QubeletError):
    """Prometheus could not be read; ``cause`` is ``<ExceptionType>: <message>``, one line."""

    def __init__(self, where: str, cause: str) -> None:
        super().__init__(f"prometheus {where}: {cause}")
        self.cause = cause


def get_result(base_url: str, path: str, params: Mapping[str, str], timeout: float) -> list[dict[str, Any]]:
    """``data.result`` of one Prometheus API GET (``path`` like ``/api/v1/query``).

    Raises:
        PrometheusError: unreachable, not JSON, or not a successful API answer.
    """
    url = f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
        if not isinstance(body, dict) or body.get("status") != "success":
            raise ValueError(f"status {body.get('status') if isinstance(body, dict) else body!r}")
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise ValueError("no data.result list")
        result: list[dict[str, Any]] = data["result"]
        return result
    except (OSError, ValueError, urllib.error.URLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise PrometheusError(f"{base_url.rstrip('/')}{path}", f"{exc.__class__.__name__}: {first}") from exc


def instant_values(result: list[dict[str, Any]], key: Callable[[Mapping[str, Any]], str]) -> dict[str, float]:
    """An instant vector as ``{key(labels): value}``, skipping malformed and non-finite samples."""
    out: dict[str, float] = {}
    for item in result:
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[key(item.get("metric", {}))] = value
    return out
