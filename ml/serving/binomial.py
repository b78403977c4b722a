"""Exact binomial tails and binomial coefficients in log space (the monitor's and the threshold's tests)."""

from __future__ import annotations

import numpy as np

_log_factorial_table = np.zeros(1)


def _log_factorial(values) -> np.ndarray:
    global _log_factorial_table
    values = np.asarray(values, dtype=np.int64)
    needed = int(values.max(initial=0)) + 1
    if len(_log_factorial_table) < needed:
        size = max(needed, 2 * len(_log_factorial_table))
        _log_factorial_table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, size, dtype=np.float64)))])
    return _log_factorial_table[values]


def log_choose(n, k) -> np.ndarray:
    """log of the binomial coefficient C(n, k), elementwise (exact factorial logs from a growing table)."""
    n, k = np.asarray(n), np.asarray(k)
    return _log_factorial(n) - _log_factorial(k) - _log_factorial(n - k)


def binomial_tail(*, hits: int, n: int, rate: float, at_least: bool) -> float:
    """P(X >= hits) (``at_least``) or P(X <= hits) for X ~ Binomial(n, rate), summed in log space.

    Summed directly on either side, so a tiny tail stays exact instead of being 1 minus the other side.
    """
    if (hits <= 0) if at_least else (hits >= n):
        return 1.0
    outcomes = np.arange(hits, n + 1) if at_least else np.arange(0, hits + 1)
    if len(outcomes) == 0:
        return 0.0
    if rate <= 0.0 or rate >= 1.0:
        certain = 0 if rate <= 0.0 else n  # every other outcome has probability 0
        return float(certain in outcomes)
    logs = log_choose(n, outcomes) + outcomes * np.log(rate) + (n - outcomes) * np.log1p(-rate)
    top = logs.max()
    return float(min(1.0, np.exp(top) * np.exp(logs - top).sum()))
