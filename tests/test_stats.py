"""dvm.stats: percentiles by linear interpolation (numpy's default), on unsorted input too."""

from __future__ import annotations

import random

import numpy as np
import pytest

from dvm.stats import median, percentile


def test_empty_gives_none():
    assert percentile([], 50) is None
    assert median([]) is None


def test_single_value_is_every_percentile():
    assert percentile([3.5], 0) == percentile([3.5], 95) == percentile([3.5], 100) == 3.5


def test_interpolates_between_ranks():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)


def test_unsorted_input_gives_the_sorted_answer():
    values = [9.0, 1.0, 5.0, 3.0, 7.0]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 25) == 3.0
    assert values == [9.0, 1.0, 5.0, 3.0, 7.0]  # the caller's list is left alone
    assert percentile(iter(values), 75) == 7.0  # any iterable


@pytest.mark.parametrize("q", [0, 10, 50, 90, 95, 99, 100])
def test_matches_numpy(q):
    rng = random.Random(q)
    values = [rng.uniform(0, 10) for _ in range(37)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_median():
    assert median([4.0, 1.0, 3.0]) == 3.0
    assert median([4.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)
