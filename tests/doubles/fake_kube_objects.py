"""FakeKubeObjects: a kube-apiserver double over real HTTP that stores whatever kinds it is told to serve.

For ``qubelet render|submit|runs`` tests that need no Argo controller, no scheduler and no
kubelet: the real ``kubernetes`` client talks to it with its own URLs. It serves

- ``GET`` of a collection (``/api/v1/nodes``, ``/apis/<g>/<v>/namespaces/<ns>/<plural>``) with an
  equality ``labelSelector``, and of one object; ``404`` with a ``Status`` body for a collection
  it does not serve (a CRD that is not installed) or a missing object;
- ``POST`` (``generateName``, ``uid`` and ``creationTimestamp`` assigned, ``409`` on a name taken,
  ``dryRun`` honoured);
- ``PATCH`` as a JSON merge patch (RFC 7386; strategic-merge patches are applied the same way,
  which is what they do to the maps and the one-element lists qubelet sends);
- ``GET .../pods/<name>/log`` from :attr:`FakeKubeObjects.logs`;
- ``403`` for the collections in :attr:`FakeKubeObjects.forbidden` (what RBAC answers).

It does not validate objects (the render tests validate them against the schemas) and runs no
controllers: a test plays Argo's controller or the kubelet by writing objects itself.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeKubeObjects(ThreadingHTTPServer):
    """Objects by collection path (``/api/v1/namespaces/ns/pods``) and name."""

    def __init__(self, served: list[str]) -> None:
        """``served``: collection paths, ``{ns}`` for a namespace (``/api/v1/namespaces/{ns}/pods``)."""
        super().__init__(("127.0.0.1", 0), _Handler)
        self.served = served
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.logs: dict[tuple[str, str], str] = {}
        #: collections this client may not list (answered 403 Forbidden, as RBAC does)
        self.forbidden: set[str] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def collection(self, path: str) -> str | None:
        """The served collection a request path names (namespace filled in), else None."""
        for pattern in self.served:
            head, _, tail = pattern.partition("{ns}")
            if not tail and path == head:
                return path
            if tail and path.startswith(head) and path.endswith(tail):
                ns = path[len(head) : len(path) - len(tail)]
                if ns and "/" not in ns:
                    return path
        return None

    def put(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as the API server would after a create (what a controller double writes)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with self.lock:
            self.objects.setdefault(collection, {})[meta["name"]] = obj
        return obj

    def get(self, collection: str, name: str) -> dict[str, Any] | None:
        """One stored object."""
        return self.objects.get(collection, {}).get(name)

    def items(self, collection: str) -> list[dict[str, Any]]:
        """Every object stored in ``collection``."""
        return list(self.objects.get(collection, {}).values())


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubeObjects

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: Any, text: bool = False) -> None:
        data = body.encode() if text else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._reply(
            code, {"kind": "Status", "apiVersion": "v1", "code": code, "reason": reason, "message": message}
        )

    def _split(self) -> tuple[str | None, str | None, str | None, dict[str, list[str]]]:
        """(collection, name, subresource, query) of the request path."""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        path = parts.path.rstrip("/")
        collection = self.server.collection(path)
        if collection is not None:
            return collection, None, None, query
        head, _, last = path.rpartition("/")
        collection = self.server.collection(head)
        if collection is not None:
            return collection, last, None, query
        head2, _, name = head.rpartition("/")
        collection = self.server.collection(head2)
        if collection is not None:
            return collection, name, last, query
        return None, None, None, query

    def do_GET(self) -> None:
        collection, name, sub, query = self._split()
        if collection is None:
            return self._status(
                404, "NotFound", f"the server could not find the requested resource {self.path}"
            )
        if collection in self.server.forbidden:
            return self._status(403, "Forbidden", f"cannot list resource at {collection}")
        if name is None:
            selector = query.get("labelSelector", [""])[0]
            wanted = dict(p.split("=", 1) for p in selector.split(",") if "=" in p)
            items = [
                o
                for o in self.server.items(collection)
                if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
            ]
            return self._reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
        obj = self.server.get(collection, name)
        if obj is None:
            return self._status(404, "NotFound", f"{collection.rsplit('/', 1)[1]} {name!r} not found")
        if sub == "log":
            return self._reply(
                200, self.server.logs.get((obj["metadata"].get("namespace", ""), name), ""), True
            )
        return self._reply(200, obj)

    def _body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")

    def do_POST(self) -> None:
        collection, name, _, query = self._split()
        body = self._body()
        if collection is None or name is not None:
            return self._status(404, "NotFound", f"no route {self.path}")
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = meta.pop("generateName", "obj-") + uuid.uuid4().hex[:5]
        if "/namespaces/" in collection:
            meta.setdefault("namespace", collection.split("/namespaces/", 1)[1].split("/", 1)[0])
        if self.server.get(collection, meta["name"]) is not None:
            return self._status(409, "AlreadyExists", f"{meta['name']!r} already exists")
        if query.get("dryRun"):
            return self._reply(201, body)
        return self._reply(201, self.server.put(collection, body))

    def do_PATCH(self) -> None:
        collection, name, _, _ = self._split()
        body = self._body()
        obj = self.server.get(collection, name) if collection and name else None
        if obj is None or collection is None:
            return self._status(404, "NotFound", f"{name!r} not found")
        if isinstance(body, list):
            return self._status(415, "UnsupportedMediaType", "JSON patch is not supported by this double")
        patched = merge_patch(obj, body)
        with self.server.lock:
            self.server.objects[collection][str(name)] = patched
        return self._reply(200, patched)


@contextmanager
def serving(served: list[str]) -> Iterator[FakeKubeObjects]:
    """Run the double on a loopback port for the ``with`` block."""
    server = FakeKubeObjects(served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def api_client(server: FakeKubeObjects) -> Any:
    """A ``kubernetes`` ApiClient pointed at the double."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = server.url
    return client.ApiClient(configuration)


def kubeconfig(server: FakeKubeObjects, path: Any) -> Any:
    """Write a kubeconfig file for the double (what ``--kubeconfig`` takes); return its path."""
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
                "users": [{"name": "fake", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    return path
