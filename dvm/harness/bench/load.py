"""How busy the machine was with *other* work while a cell ran: /proc/stat jiffies minus our children's CPU."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies from /proc/stat, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = list(map(int, fields))
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def _children_cpu() -> float:
    """CPU seconds used by finished child processes (0 where the platform cannot tell, e.g. Windows)."""
    try:
        import resource  # noqa: PLC0415 - POSIX-only module
    except ImportError:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


class LoadMonitor:
    """How much CPU *other* processes used while a cell ran (in cores), from /proc/stat minus our children
    (and minus this process itself with ``include_self``, for work measured in-process)."""

    def __init__(self, include_self: bool = False):
        self.include_self = include_self
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") and "SC_CLK_TCK" in os.sysconf_names else 100

    def start(self):
        self._jiffies = _cpu_jiffies()
        self._ours_at_start = self._ours()
        self._wall = time.monotonic()
        self._load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    def _ours(self) -> float:
        return _children_cpu() + (_self_cpu() if self.include_self else 0.0)

    def stop(self) -> dict:
        wall = time.monotonic() - self._wall
        ours = self._ours() - self._ours_at_start
        now = _cpu_jiffies()
        out = {"loadavg_1m_before": self._load, "wall_s": wall}
        if self._jiffies and now:
            busy = (now[0] - self._jiffies[0]) / self.ticks
            out["foreign_cores"] = max(0.0, (busy - ours) / wall) if wall > 0 else 0.0
        return out
