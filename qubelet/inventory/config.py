"""The versioned QPU inventory file (config ``version: v1``), parsed and validated.

The shape follows NVIDIA's k8s-device-plugin config (``api/config/v1``): a ``version``, global
``flags``, a ``sharing`` section (time-slicing replicas) and then the resources, here ``qpus``.
YAML keys are camelCase like upstream; the Python side is snake_case frozen dataclasses so the
device plugin and the DRA driver share one validated, immutable view of the inventory.

Every validation problem raises :class:`ConfigError` whose message is ONE line naming the file,
the entry and the field, e.g. ``qpus.yaml: qpus[1] (apollo-cloud): qubits: must be a positive
integer, got 'x'`` — an admin reading a crash-looping pod's log sees exactly what to fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal, cast
from urllib.parse import urlparse

from qubelet.errors import ConfigError
from qubelet.yamlfile import read_yaml_file

__all__ = [
    "MAX_DEVICES",
    "MAX_DEVICE_ID_LENGTH",
    "MAX_REPLICAS",
    "Config",
    "ConfigError",
    "Flags",
    "ProbeConfig",
    "QPUConfig",
    "ReservationConfig",
    "load_config",
    "parse_config",
]

SUPPORTED_VERSIONS = ("v1",)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
FAKE_BACKEND = re.compile(r"^fake:[A-Za-z_][A-Za-z0-9_]*$")
PROBES = ("fake", "http", "file")
LOCATIONS = ("onprem", "cloud")

#: Kubelet rejects device ids longer than this; ids are ``<name>-r<replica>``.
MAX_DEVICE_ID_LENGTH = 63
#: Most replicas (time-slicing shares) one QPU may have. Each replica is one device in every
#: ListAndWatch message and ResourceSlice; a device is at most ~80 bytes on the wire (a 63-byte
#: id, the health word, framing), and a gRPC message may not exceed 4 MiB, so an unbounded value
#: (200,000) broke ListAndWatch and 10**9 exhausted memory. A thousand pods sharing one QPU is
#: already far past any useful time-slicing.
MAX_REPLICAS = 1024
#: Most devices of all QPUs together: 16,384 x ~80 bytes is ~1.3 MiB, a third of gRPC's 4 MiB
#: message limit, so the whole ListAndWatch list always fits in one message.
MAX_DEVICES = 16384
DEFAULT_HEALTH_INTERVAL_SECONDS = 10.0
DEFAULT_PROBE_TIMEOUT_SECONDS = 5.0

_TOP_KEYS = {"version", "flags", "sharing", "qpus"}
_FLAG_KEYS = {
    "failOnInitError",
    "cdiEnabled",
    "healthCheckIntervalSeconds",
    "healthFlipAfterProbes",
    "healthHoldSeconds",
}
_SHARING_KEYS = {"timeSlicing"}
_TIME_SLICING_KEYS = {"replicas"}
_QPU_KEYS = {
    "name",
    "vendor",
    "model",
    "qubits",
    "technology",
    "location",
    "topology",
    "backend",
    "endpoint",
    "tokensFile",
    "calibration",
    "health",
    "replicas",
    "nodeSelector",
    "nodes",
    "tenantTokens",
    "reservation",
}
_RESERVATION_KEYS = {"enabled", "durationSeconds", "cooldownSeconds"}
DEFAULT_RESERVATION_SECONDS = 3600
DEFAULT_RESERVATION_COOLDOWN_SECONDS = 60.0
#: A ResourceSlice device attribute's string value may be at most this many bytes (API limit).
MAX_ATTRIBUTE_STRING_BYTES = 64
#: A label name or value (without a prefix): what a node selector in a slice must match.
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CALIBRATION_KEYS = {"fidelity2q", "readoutFidelity", "time"}
_HEALTH_KEYS = {"probe", "url", "path", "intervalSeconds", "timeoutSeconds"}


@dataclass(frozen=True)
class ProbeConfig:
    """How to decide whether one QPU is usable (see :mod:`qubelet.inventory.health`)."""

    probe: Literal["fake", "http", "file"]
    url: str | None
    path: str | None
    interval_seconds: float
    timeout_seconds: float


@dataclass(frozen=True)
class ReservationConfig:
    """Reserve the QPU with its provider before a pod binds (``reservation:``, docs/dra-driver.md).

    Its devices are published with DRA binding conditions; the scheduler holds a pod in PreBind
    until the controller has the provider's reservation (dra_driver/reservations).
    """

    #: the window asked for, in seconds
    duration_seconds: int = DEFAULT_RESERVATION_SECONDS
    #: after a refusal the QPU's devices leave the slice this long, so the scheduler tries another
    cooldown_seconds: float = DEFAULT_RESERVATION_COOLDOWN_SECONDS


@dataclass(frozen=True)
class QPUConfig:
    """One QPU this node reaches (on-prem access node or cloud endpoint)."""

    name: str
    vendor: str
    model: str
    qubits: int
    technology: str
    location: Literal["onprem", "cloud"]
    topology: str
    backend: str
    endpoint: str | None
    tokens_file: str | None
    fidelity_2q: float | None
    readout_fidelity: float | None
    health: ProbeConfig
    replicas: int
    node_selector: dict[str, str] = field(default_factory=dict)
    #: unix seconds of the calibration the fidelities come from (``calibration.time``)
    calibration_time: int | None = None
    #: Names of the nodes that reach this QPU (see :mod:`qubelet.inventory.binding`).
    nodes: tuple[str, ...] = ()
    #: (namespace, token file) pairs: a claim from that namespace gets that token, and a claim
    #: from any other namespace none (``tenantTokens``; set, it replaces ``tokensFile``).
    tenant_tokens: tuple[tuple[str, str], ...] = ()
    #: Reserve before binding (None: off, today's behaviour).
    reservation: ReservationConfig | None = None

    def token_for(self, namespace: str | None) -> str | None:
        """The token file a claim from ``namespace`` gets (None: this namespace gets none)."""
        if self.tenant_tokens:
            return dict(self.tenant_tokens).get(namespace or "")
        return self.tokens_file


@dataclass(frozen=True)
class Flags:
    """Global switches (``flags:`` in the file)."""

    fail_on_init_error: bool
    cdi_enabled: bool
    health_check_interval_seconds: float
    #: a health change is published after this many consecutive probes agree (damping)
    health_flip_after_probes: int = 1
    #: a published health state holds at least this long (damping)
    health_hold_seconds: float = 0.0


@dataclass(frozen=True)
class Config:
    """A whole validated inventory; ``source`` is the file it came from (for messages)."""

    version: str
    flags: Flags
    qpus: tuple[QPUConfig, ...]
    source: str

    def qpu(self, name: str) -> QPUConfig:
        """The QPU called ``name``; raises :class:`ConfigError` (not KeyError) when unknown."""
        for qpu in self.qpus:
            if qpu.name == name:
                return qpu
        known = ", ".join(q.name for q in self.qpus) or "none"
        raise ConfigError(f"unknown QPU {name!r} (known: {known})")


def _show(value: object) -> str:
    """A short one-line rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Ctx:
    """Where in the file we are, so every error names file, entry and field."""

    def __init__(self, source: str, entry: str = "") -> None:
        self.source = source
        self.entry = entry

    def fail(self, field_name: str, problem: str) -> ConfigError:
        where = f"{self.entry}: " if self.entry else ""
        return ConfigError(f"{self.source}: {where}{field_name}: {problem}")

    def mapping(self, value: object, field_name: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(field_name, f"must be a mapping, got {_show(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    f"{field_name}.{key}" if field_name else str(key),
                    f"unknown field (allowed: {', '.join(sorted(allowed))})",
                )
        return value

    def string(self, value: object, field_name: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field_name, f"must be a non-empty string, got {_show(value)}")
        if "\n" in value:
            raise self.fail(field_name, "must be a single line")
        return value

    def attribute(self, value: object, field_name: str) -> str:
        """A string published as a ResourceSlice attribute: at most 64 bytes (UTF-8)."""
        text = self.string(value, field_name)
        size = len(text.encode("utf-8"))
        if size > MAX_ATTRIBUTE_STRING_BYTES:
            raise self.fail(
                field_name,
                f"too long: {size} bytes, a ResourceSlice attribute holds at most "
                f"{MAX_ATTRIBUTE_STRING_BYTES} ({_show(text)})",
            )
        return text

    def token_path(self, value: object, field_name: str) -> str:
        """A token file path: no ``..`` (it must resolve inside the tokens Secret's mount)."""
        text = self.string(value, field_name)
        if ".." in PurePosixPath(text).parts:
            raise self.fail(
                field_name,
                f"must not contain '..' (token files live in the tokens Secret), got {_show(text)}",
            )
        return text

    def boolean(self, value: object, field_name: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field_name, f"must be a boolean, got {_show(value)}")
        return value

    def positive_int(self, value: object, field_name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(field_name, f"must be a positive integer, got {_show(value)}")
        return value

    def positive_float(self, value: object, field_name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.fail(field_name, f"must be a positive number, got {_show(value)}")
        if value != value or value == float("inf"):
            raise self.fail(field_name, f"must be a finite number, got {_show(value)}")
        return float(value)

    def fraction(self, value: object, field_name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise self.fail(field_name, f"must be a number in (0, 1], got {_show(value)}")
        return float(value)

    def enum(self, value: object, field_name: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.fail(field_name, f"must be one of {', '.join(allowed)}, got {_show(value)}")
        return cast(str, value)

    def url(self, value: object, field_name: str) -> str:
        text = self.string(value, field_name)
        parsed = urlparse(text)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise self.fail(field_name, f"must be an http(s) URL, got {_show(value)}")
        return text


def _too_many_replicas(replicas: int) -> str:
    return (
        f"must be at most {MAX_REPLICAS}, got {replicas}: every replica is one device in each "
        "ListAndWatch message and ResourceSlice (gRPC messages are limited to 4 MiB)"
    )


def _parse_health(raw: object, ctx: _Ctx, default_interval: float, backend: str) -> ProbeConfig:
    data = ctx.mapping({} if raw is None else raw, "health", _HEALTH_KEYS)
    default_probe = "fake" if backend.startswith("fake:") else None
    if "probe" not in data and default_probe is None:
        raise ctx.fail("health.probe", f"required for backend {backend!r} (one of {', '.join(PROBES)})")
    probe = ctx.enum(data.get("probe", default_probe), "health.probe", PROBES)
    if probe == "fake" and not backend.startswith("fake:"):
        raise ctx.fail("health.probe", f"'fake' only probes fake: backends, backend is {backend!r}")
    url = ctx.url(data["url"], "health.url") if data.get("url") is not None else None
    path = ctx.string(data["path"], "health.path") if data.get("path") is not None else None
    if probe == "http" and url is None:
        raise ctx.fail("health.url", "required when probe is 'http'")
    if probe == "file" and path is None:
        raise ctx.fail("health.path", "required when probe is 'file'")
    interval = (
        ctx.positive_float(data["intervalSeconds"], "health.intervalSeconds")
        if "intervalSeconds" in data
        else default_interval
    )
    timeout = (
        ctx.positive_float(data["timeoutSeconds"], "health.timeoutSeconds")
        if "timeoutSeconds" in data
        else DEFAULT_PROBE_TIMEOUT_SECONDS
    )
    return ProbeConfig(
        probe=cast(Literal["fake", "http", "file"], probe),
        url=url,
        path=path,
        interval_seconds=interval,
        timeout_seconds=timeout,
    )


def _parse_reservation(raw: object, ctx: _Ctx, endpoint: str | None) -> ReservationConfig | None:
    if raw is None:
        return None
    data = ctx.mapping(raw, "reservation", _RESERVATION_KEYS)
    if not ctx.boolean(data.get("enabled", True), "reservation.enabled"):
        return None
    if endpoint is None:
        raise ctx.fail("reservation", "needs endpoint: reservations are asked of the QPU's server")
    return ReservationConfig(
        duration_seconds=ctx.positive_int(
            data.get("durationSeconds", DEFAULT_RESERVATION_SECONDS), "reservation.durationSeconds"
        ),
        cooldown_seconds=ctx.positive_float(
            data.get("cooldownSeconds", DEFAULT_RESERVATION_COOLDOWN_SECONDS), "reservation.cooldownSeconds"
        ),
    )


def _parse_qpu(raw: object, index: int, source: str, flags: Flags, default_replicas: int) -> QPUConfig:
    ctx = _Ctx(source, f"qpus[{index}]")
    if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
        ctx.entry = f"qpus[{index}] ({raw['name']})"
    data = ctx.mapping(raw, "", _QPU_KEYS) if isinstance(raw, Mapping) else None
    if data is None:
        raise ctx.fail("qpus", f"entry must be a mapping, got {_show(raw)}")
    for required in ("name", "vendor", "model", "qubits", "technology", "location", "backend"):
        if required not in data:
            raise ctx.fail(required, "required field is missing")
    name = ctx.string(data["name"], "name")
    if len(name) > 63 or not DNS1123_LABEL.match(name):
        raise ctx.fail("name", f"must be a DNS-1123 label (lowercase a-z, 0-9, '-'), got {_show(name)}")
    backend = ctx.string(data["backend"], "backend")
    if backend != "iqm" and not FAKE_BACKEND.match(backend):
        raise ctx.fail("backend", f"must be 'iqm' or 'fake:<IQMFakeBackendClass>', got {_show(backend)}")
    endpoint = ctx.url(data["endpoint"], "endpoint") if data.get("endpoint") is not None else None
    if backend == "iqm" and endpoint is None:
        raise ctx.fail("endpoint", "required when backend is 'iqm'")
    tokens_file = (
        ctx.token_path(data["tokensFile"], "tokensFile") if data.get("tokensFile") is not None else None
    )
    tenant_raw = data.get("tenantTokens")
    tenant_tokens: list[tuple[str, str]] = []
    if tenant_raw is not None:
        if not isinstance(tenant_raw, Mapping) or not tenant_raw:
            raise ctx.fail(
                "tenantTokens", f"must be a mapping of namespace to token file, got {_show(tenant_raw)}"
            )
        for ns, path in tenant_raw.items():
            if not isinstance(ns, str) or len(ns) > 63 or not DNS1123_LABEL.match(ns):
                raise ctx.fail(
                    "tenantTokens", f"key must be a namespace name (DNS-1123 label), got {_show(ns)}"
                )
            tenant_tokens.append((ns, ctx.token_path(path, f"tenantTokens.{ns}")))
    calibration = ctx.mapping(data.get("calibration") or {}, "calibration", _CALIBRATION_KEYS)
    fidelity_2q = (
        ctx.fraction(calibration["fidelity2q"], "calibration.fidelity2q")
        if calibration.get("fidelity2q") is not None
        else None
    )
    readout = (
        ctx.fraction(calibration["readoutFidelity"], "calibration.readoutFidelity")
        if calibration.get("readoutFidelity") is not None
        else None
    )
    calibration_time = None
    if calibration.get("time") is not None:
        calibration_time = _unix_seconds(calibration["time"], ctx, "calibration.time")
    selector_raw = data.get("nodeSelector") or {}
    if not isinstance(selector_raw, Mapping):
        raise ctx.fail("nodeSelector", f"must be a mapping of strings, got {_show(selector_raw)}")
    node_selector: dict[str, str] = {}
    for key, value in selector_raw.items():
        key_text = ctx.string(key, "nodeSelector")
        prefix, _, label = key_text.rpartition("/")
        if (
            not LABEL_NAME.match(label)
            or len(label) > 63
            or (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)))
        ):
            raise ctx.fail(
                "nodeSelector",
                f"key must be a label key ([prefix/]name, name at most 63 characters), got {_show(key_text)}",
            )
        value_text = ctx.string(value, f"nodeSelector.{key}")
        if len(value_text) > 63 or not LABEL_NAME.match(value_text):
            raise ctx.fail(
                f"nodeSelector.{key}",
                f"must be a label value (at most 63 of A-Z a-z 0-9 - _ .), got {_show(value_text)}",
            )
        node_selector[key_text] = value_text
    nodes_raw = data.get("nodes")
    nodes: list[str] = []
    if nodes_raw is not None:
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise ctx.fail("nodes", f"must be a non-empty list of node names, got {_show(nodes_raw)}")
        for i, node in enumerate(nodes_raw):
            text = ctx.string(node, f"nodes[{i}]")
            if len(text) > 253 or not DNS1123_SUBDOMAIN.match(text):
                raise ctx.fail(f"nodes[{i}]", f"must be a node name (DNS-1123 subdomain), got {_show(text)}")
            if text in nodes:
                raise ctx.fail(f"nodes[{i}]", f"duplicate node {text!r}")
            nodes.append(text)
    if nodes and node_selector:
        raise ctx.fail("nodes", "set nodes or nodeSelector, not both (which nodes reach this QPU)")
    replicas = ctx.positive_int(data["replicas"], "replicas") if "replicas" in data else default_replicas
    if replicas > MAX_REPLICAS:
        raise ctx.fail("replicas", _too_many_replicas(replicas))
    longest_id = f"{name}-r{replicas - 1}"
    if len(longest_id) > MAX_DEVICE_ID_LENGTH:
        raise ctx.fail(
            "name",
            f"too long: device id {longest_id!r} would exceed kubelet's {MAX_DEVICE_ID_LENGTH} characters",
        )
    return QPUConfig(
        name=name,
        vendor=ctx.attribute(data["vendor"], "vendor"),
        model=ctx.attribute(data["model"], "model"),
        qubits=ctx.positive_int(data["qubits"], "qubits"),
        technology=ctx.attribute(data["technology"], "technology"),
        location=cast(Literal["onprem", "cloud"], ctx.enum(data["location"], "location", LOCATIONS)),
        topology=ctx.attribute(data["topology"], "topology") if "topology" in data else "unknown",
        backend=backend,
        endpoint=endpoint,
        tokens_file=tokens_file,
        fidelity_2q=fidelity_2q,
        readout_fidelity=readout,
        health=_parse_health(data.get("health"), ctx, flags.health_check_interval_seconds, backend),
        replicas=replicas,
        node_selector=node_selector,
        calibration_time=calibration_time,
        nodes=tuple(nodes),
        tenant_tokens=tuple(sorted(tenant_tokens)),
        reservation=_parse_reservation(data.get("reservation"), ctx, endpoint),
    )


def _non_negative(value: object, ctx: _Ctx, field_name: str) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return ctx.positive_float(value, field_name)


def _unix_seconds(value: object, ctx: _Ctx, field_name: str) -> int:
    """An RFC 3339 timestamp (YAML may already have parsed it) or unix seconds, as unix seconds."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return int(stamp.timestamp())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return int((stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp())
    raise ctx.fail(field_name, f"must be an RFC 3339 time or unix seconds, got {_show(value)}")


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-decoded YAML/JSON ``data``; ``source`` names it in error messages."""
    ctx = _Ctx(source)
    top = ctx.mapping(data, "", _TOP_KEYS) if isinstance(data, Mapping) else None
    if top is None:
        raise ConfigError(f"{source}: top level must be a mapping, got {_show(data)}")
    if "version" not in top:
        raise ctx.fail("version", f"required field is missing (supported: {', '.join(SUPPORTED_VERSIONS)})")
    version = ctx.enum(top["version"], "version", SUPPORTED_VERSIONS)

    flags_raw = ctx.mapping(top.get("flags") or {}, "flags", _FLAG_KEYS)
    flags = Flags(
        fail_on_init_error=ctx.boolean(flags_raw.get("failOnInitError", False), "flags.failOnInitError"),
        cdi_enabled=ctx.boolean(flags_raw.get("cdiEnabled", False), "flags.cdiEnabled"),
        health_check_interval_seconds=ctx.positive_float(
            flags_raw.get("healthCheckIntervalSeconds", DEFAULT_HEALTH_INTERVAL_SECONDS),
            "flags.healthCheckIntervalSeconds",
        ),
        health_flip_after_probes=ctx.positive_int(
            flags_raw.get("healthFlipAfterProbes", 1), "flags.healthFlipAfterProbes"
        ),
        health_hold_seconds=_non_negative(
            flags_raw.get("healthHoldSeconds", 0), ctx, "flags.healthHoldSeconds"
        ),
    )
    sharing = ctx.mapping(top.get("sharing") or {}, "sharing", _SHARING_KEYS)
    slicing = ctx.mapping(sharing.get("timeSlicing") or {}, "sharing.timeSlicing", _TIME_SLICING_KEYS)
    default_replicas = ctx.positive_int(slicing.get("replicas", 1), "sharing.timeSlicing.replicas")
    if default_replicas > MAX_REPLICAS:
        raise ctx.fail("sharing.timeSlicing.replicas", _too_many_replicas(default_replicas))

    qpus_raw = top.get("qpus")
    if not isinstance(qpus_raw, list) or not qpus_raw:
        raise ctx.fail("qpus", f"must be a non-empty list, got {_show(qpus_raw)}")
    qpus: list[QPUConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(qpus_raw):
        qpu = _parse_qpu(raw, index, source, flags, default_replicas)
        if qpu.name in seen:
            raise ConfigError(
                f"{source}: qpus[{index}] ({qpu.name}): name: duplicate of qpus[{seen[qpu.name]}]"
            )
        seen[qpu.name] = index
        qpus.append(qpu)
    devices = sum(q.replicas for q in qpus)
    if devices > MAX_DEVICES:
        raise ctx.fail(
            "qpus",
            f"{devices} devices in all (sum of replicas) exceeds {MAX_DEVICES}: the device list "
            "kubelet is sent must fit one 4 MiB gRPC message",
        )
    return Config(version=version, flags=flags, qpus=tuple(qpus), source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate an inventory file; any problem raises a one-line :class:`ConfigError`."""
    source = os.fspath(path)
    return parse_config(read_yaml_file(source), source)
