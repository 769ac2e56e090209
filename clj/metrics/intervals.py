"""Confidence intervals of a mean over seeds (or over paired differences)."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

__all__ = ["mean_ci"]


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` and its two-sided Student-t confidence interval.

    With n values of mean m and sample standard deviation s (``ddof=1``), the
    interval is ``m -+ t_{(1 + level) / 2, n - 1} * s / sqrt(n)``: for
    ``[1, 2, 3]`` at 0.95, ``2 -+ 4.302653 / sqrt(3) = 2 -+ 2.484``.  For
    paired differences (e.g. two methods run on the same seeds), pass the
    per-seed differences.

    Args:
      values: the numbers (e.g. one metric of each seed).
      level: the confidence level, in (0, 1).

    Returns:
      ``(mean, lo, hi)`` as floats.  One value: ``(value, nan, nan)`` (no
      spread to estimate); no values: three NaNs.

    Raises:
      ValueError: ``level`` outside (0, 1).
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} is invalid; valid: a confidence level in (0, 1), e.g. 0.95.")
    d = np.asarray(list(values), np.float64).reshape(-1)
    n = d.size
    if n == 0:
        return math.nan, math.nan, math.nan
    m = float(d.mean())
    if n < 2:
        return m, math.nan, math.nan
    from scipy import stats

    h = float(stats.t.ppf(0.5 + level / 2.0, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return m, m - h, m + h
