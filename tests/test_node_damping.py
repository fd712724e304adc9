"""Flapping health is damped (issue 23, item 10).

A QPU whose health file flips every 0.1 s used to produce an update per flip: 31 ListAndWatch
updates in 6 s and 49 slice writes in 10 s. With ``flags.healthFlipAfterProbes`` (N consecutive
probes must agree) and ``flags.healthHoldSeconds`` (a published state holds at least this long)
the plugin publishes a few changes, and the slice loop writes at most once per
``min_interval_seconds`` however often it is woken. A steady change still goes through.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from test_dra_kubelet_plugin import Env

from qubelet.inventory import HealthMonitor, ProbeResult, parse_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    shutil.rmtree(e.root, ignore_errors=True)


def test_flags_parse_and_default_to_undamped() -> None:
    qpu = {
        "name": "q",
        "vendor": "IQM",
        "model": "M",
        "qubits": 5,
        "technology": "superconducting",
        "location": "onprem",
        "backend": "fake:IQMFakeAdonis",
    }
    base = {"version": "v1", "qpus": [qpu]}
    assert parse_config(base, "x").flags.health_flip_after_probes == 1
    assert parse_config(base, "x").flags.health_hold_seconds == 0
    damped = parse_config({**base, "flags": {"healthFlipAfterProbes": 3, "healthHoldSeconds": 5}}, "x")
    assert (damped.flags.health_flip_after_probes, damped.flags.health_hold_seconds) == (3, 5.0)


def scripted(results: list[bool]) -> tuple[HealthMonitor, list[tuple[str, bool]], object]:
    config = parse_config(
        {
            "version": "v1",
            "qpus": [
                {
                    "name": "q",
                    "vendor": "IQM",
                    "model": "M",
                    "qubits": 5,
                    "technology": "superconducting",
                    "location": "onprem",
                    "backend": "fake:IQMFakeAdonis",
                    "health": {"probe": "file", "path": "/nonexistent", "intervalSeconds": 0.01},
                }
            ],
        },
        "x",
    )
    changes: list[tuple[str, bool]] = []
    it = iter(results)

    def probe(_qpu: object) -> ProbeResult:
        return ProbeResult(next(it, results[-1]), 0.0, "scripted")

    monitor = HealthMonitor(
        config.qpus, on_change=lambda n, h: changes.append((n, h)), probe=probe, flip_after=3, hold_seconds=0
    )
    return monitor, changes, config.qpus[0]


def test_a_change_needs_n_consecutive_probes() -> None:
    monitor, changes, qpu = scripted([True, False, True, False, False, True, False, False, False, True])
    for _ in range(10):
        monitor._run_probe(qpu)  # type: ignore[arg-type]
    # the first result is published at once, then only the run of 3 Falses
    assert changes == [("q", True), ("q", False)]
    assert monitor.is_healthy("q") is False


def test_a_published_state_holds_for_the_hold_time() -> None:
    monitor, changes, qpu = scripted([True] + [False] * 5)
    monitor.hold_seconds = 0.5
    started = time.monotonic()
    for _ in range(4):
        monitor._run_probe(qpu)  # type: ignore[arg-type]
    assert changes == [("q", True)]  # 3 Falses in a row, but True was published < 0.5 s ago
    while time.monotonic() - started < 0.6:
        time.sleep(0.05)
    monitor._run_probe(qpu)  # type: ignore[arg-type]
    assert changes == [("q", True), ("q", False)]


def test_flapping_qpu_gives_few_updates_and_rate_limited_slice_writes(env: Env) -> None:
    """The health file flips every 0.15 s for 4 s: a handful of updates, not dozens."""
    env.config = replace(
        env.config, flags=replace(env.config.flags, health_flip_after_probes=3, health_hold_seconds=1.0)
    )
    plugin = env.plugin(resync_seconds=30, slice_min_interval_seconds=0.5)
    plugin.start()
    changes: list[bool] = []
    plugin.broadcaster.add_listener(lambda: changes.append(True))
    stop = threading.Event()

    def flap() -> None:
        state = False
        while not stop.is_set():
            (env.health / "adonis").write_text("healthy" if state else "maintenance")
            state = not state
            time.sleep(0.15)  # not a multiple of the 0.1 s probe interval: every flip is seen

    flapper = threading.Thread(target=flap, daemon=True)
    try:
        writes_before = env.api.calls["replace_resource_slice"] + env.api.calls["create_resource_slice"]
        flapper.start()
        time.sleep(4.0)
        stop.set()
        flapper.join()
        writes = (
            env.api.calls["replace_resource_slice"] + env.api.calls["create_resource_slice"] - writes_before
        )
        assert len(changes) <= 4, f"{len(changes)} health updates in 4 s of flapping"
        assert writes <= 5, f"{writes} slice writes in 4 s of flapping"
        # a steady change still goes through: maintenance for good
        (env.health / "adonis").write_text("maintenance")
        deadline = time.monotonic() + 5
        while plugin.broadcaster.snapshot().get("adonis-onprem") is not False:
            assert time.monotonic() < deadline, "a steady Unhealthy never published"
            time.sleep(0.05)
    finally:
        stop.set()
        plugin.stop()
