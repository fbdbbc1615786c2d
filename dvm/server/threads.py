"""Thread priority and CPU accounting for the serving pipeline's workers."""

from __future__ import annotations

import os
import threading


def lower_this_thread(nice: int) -> str:
    """Give the calling thread the scheduling priority ``nice`` (Linux: per thread); says what happened."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return f"nice {os.getpriority(os.PRIO_PROCESS, threading.get_native_id())}"
    except (AttributeError, OSError) as exc:  # not Linux/BSD, or not permitted: interims still yield by queue
        return f"normal ({exc.__class__.__name__})"


def cpu_seconds() -> float | None:
    """User + system CPU seconds of this process (all threads), where the platform tells."""
    try:
        import resource  # noqa: PLC0415 - POSIX-only module
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
