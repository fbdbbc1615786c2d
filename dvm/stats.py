"""Order statistics shared by the harness and the server: percentiles and the median."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between the two nearest
    ranks (numpy's default method); the input need not be sorted. None when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Iterable[float]) -> float | None:
    """The 50th percentile: the middle value, or the mean of the two middle ones. None when empty."""
    return percentile(values, 50)
