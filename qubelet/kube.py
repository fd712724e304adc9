"""The Kubernetes client, configured and with its errors translated, in one place.

``load_kube_client`` is how every daemon and ``qubelet submit`` get an ``ApiClient``; ``api_error``
and :func:`api_errors` turn the client's ``ApiException`` into qubelet's error tree
(:class:`~qubelet.errors.NotFound`, :class:`~qubelet.errors.Conflict`,
:class:`~qubelet.errors.ApiError`) with a one-line message, so no caller tests HTTP statuses.
The ``kubernetes`` package is imported inside the functions: the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from qubelet.errors import ApiError, Conflict, NotFound, UsageError

__all__ = ["api_error", "api_errors", "load_kube_client"]


def load_kube_client(
    kubeconfig: str | None = None, env: Mapping[str, str] | None = None, *, retries: bool | None = None
) -> Any:
    """A ``kubernetes.client.ApiClient`` for a daemon or ``qubelet submit``.

    ``kubeconfig`` wins, else the pod's service account, else ``$KUBECONFIG`` /
    ``~/.kube/config`` (client-go's order for a daemon). ``retries=False`` turns urllib3's own
    retries off: a caller with a deadline (the DRA kubelet plugin) must not have each request
    silently repeated, which stacks request timeouts (5 s x 4 = 20 s per read) and turns a timeout
    into ``MaxRetryError``.

    Raises:
        UsageError: no usable configuration was found (one line, no credentials in it).
    """
    from kubernetes import client, config

    env = os.environ if env is None else env
    try:
        configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        elif env.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
        if retries is not None:
            configuration.retries = retries
        return client.ApiClient(configuration)
    except (config.ConfigException, OSError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"no Kubernetes configuration (use --kubeconfig or KUBECONFIG): {first}") from None


def api_error(exc: Exception, what: str) -> ApiError:
    """The qubelet error for a client ``ApiException``: ``what: status reason message`` on one line."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or type(exc).__name__
    message = ""
    body = getattr(exc, "body", None)
    if isinstance(body, str | bytes) and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            message = str(decoded.get("message", ""))
    text = " ".join(str(part) for part in (f"{what}:", status, reason, message) if part)
    cls = {404: NotFound, 409: Conflict}.get(status or 0, ApiError)
    return cls(text.splitlines()[0], status=status, reason=str(reason))


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Re-raise a client ``ApiException`` from the block as :func:`api_error` says.

    An unreachable server (urllib3 gives up after its retries) is an :class:`ApiError` without a
    status, so callers that retry on API errors retry on it too.
    """
    from kubernetes.client import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        raise api_error(exc, what) from exc
    except HTTPError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ApiError(f"{what}: {type(exc).__name__} {first}".strip(), reason=type(exc).__name__) from exc
