"""Means with intervals, without torch: the one mean interval of the package (evaluators, reports,
the README table) lives here, so that reports need not import torch to compute it."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def mean_ci(values: Iterable[float] | np.ndarray, confidence: float = 0.95,
            bounds: tuple[float, float] | None = None) -> dict:
    """Mean with a two-sided Student-t confidence interval: `{mean, ci_low, ci_high, n}`.

    The one mean interval of the package (evaluators and reports alike). Non-finite values are
    left out (and so not counted in n). One value gives no interval (NaN bounds: a single value
    says nothing about its spread); none gives NaN throughout; equal values give the mean itself.
    `bounds` (low, high): the metric's range, to which the interval is clipped (a t interval over
    two seeds' accuracies can reach past 100%, which no accuracy can).
    """
    from scipy import stats

    if hasattr(values, "detach"):  # a torch tensor (this module does not import torch)
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    mean = float(arr.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    if np.all(arr == arr[0]):  # no spread (scipy's t statistic would divide by zero)
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": n}
    interval = stats.ttest_1samp(arr, 0.0).confidence_interval(confidence_level=confidence)
    low, high = float(interval.low), float(interval.high)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n}
