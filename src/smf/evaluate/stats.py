"""Uncertainty of accuracies, so a reader can tell a real change from noise.

Every accuracy is reported with lm-eval's standard error (sample standard deviation
over items / sqrt(n)) and a 95% Wilson score interval, which stays inside [0, 1]
and is honest for small sets and accuracies near 0 or 1. On 40 items an accuracy
of 0.5 has stderr 0.08: a 5-point change is well inside the noise.
"""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean as lm-eval reports it: sample stddev / sqrt(n).
    NaN below two items."""
    n = len(values)
    if n < 2:
        return math.nan
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy(name: str, correct: Sequence[bool]) -> dict:
    """{name, name_stderr, name_ci95} for 0/1 outcomes; JSON-ready (the stderr of a
    single item is None)."""
    n = len(correct)
    assert n > 0, "accuracy of no items"
    k = sum(bool(c) for c in correct)
    stderr = mean_stderr([float(bool(c)) for c in correct])
    return {
        name: k / n,
        f"{name}_stderr": None if math.isnan(stderr) else stderr,
        f"{name}_ci95": list(wilson_interval(k, n)),
    }


def mean_score(name: str, scores: Sequence[float]) -> dict:
    """{name, name_stderr, name_ci95} for scores in [0, 1] (e.g. token F1): the mean, its
    standard error, and a normal 95% interval clipped to [0, 1]."""
    n = len(scores)
    assert n > 0, "mean of no items"
    mu = sum(scores) / n
    stderr = mean_stderr(scores)
    ci = [math.nan, math.nan] if math.isnan(stderr) else [max(0.0, mu - Z95 * stderr), min(1.0, mu + Z95 * stderr)]
    return {name: mu, f"{name}_stderr": None if math.isnan(stderr) else stderr, f"{name}_ci95": ci}
