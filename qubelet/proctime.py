"""When this process started, so a command can report the wall time its user actually waited.

A user waits from the moment they press enter: interpreter start-up and imports included. Timing
from the first line of a command's handler leaves that out (for ``qubelet run`` it once hid most
of the wait). On Linux the kernel records each process's start in ``/proc/self/stat`` (clock
ticks since boot, the same clock as ``CLOCK_BOOTTIME``); elsewhere, or if that looks wrong, the
fallback is the moment this module was first imported, which ``qubelet/__init__`` does first.
"""

from __future__ import annotations

import os
import time

#: Unix time at which ``qubelet`` was first imported: the fallback start.
IMPORTED_AT = time.time()

#: Longest plausible gap between process start and this module's import, in seconds: anything
#: larger means the clocks disagree (unusual kernels, time namespaces), so the fallback is used.
_MAX_PLAUSIBLE_STARTUP = 600.0


def _seconds_since_process_start() -> float | None:
    """Seconds since the kernel started this process, or None where that is unknown."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            stat = handle.read().decode()
        # Field 2 (comm) may contain spaces or parentheses; fields after it follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        start_ticks = int(fields[19])  # field 22 overall: starttime, in clock ticks since boot
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return now - start_ticks / ticks_per_second


def _process_started_at() -> float:
    elapsed = _seconds_since_process_start()
    import_gap = time.time() - IMPORTED_AT
    if elapsed is None or not import_gap <= elapsed + 0.02 or elapsed - import_gap > _MAX_PLAUSIBLE_STARTUP:
        return IMPORTED_AT
    return time.time() - elapsed


#: Unix time at which this process started (tick resolution, 10 ms on most Linux systems).
PROCESS_STARTED_AT = _process_started_at()


def process_seconds() -> float:
    """Wall-clock seconds since this process started."""
    return time.time() - PROCESS_STARTED_AT
