"""Paired differences between losses, with 95% intervals over seeds and images.

A difference ``d[s, i]`` is one loss's metric minus the reference loss's, on held-out image i,
for seed s (same initial weights, patches and noise). Its interval comes from a two-way
bootstrap: seeds and images are resampled with replacement, independently, and the mean of the
resampled grid is taken; the 2.5% and 97.5% quantiles of 4000 such means bound the interval.
Resampling both factors accounts for the two sources of spread (training randomness and image
content); with 3 seeds and a handful of images the interval is approximate, not exact.
"""

from __future__ import annotations

import numpy as np

FLAT_DB = 0.1  # converged: doubling the steps moved the mean validation PSNR by < 0.1 dB
TAIL = 0.2


def bootstrap_interval(d: np.ndarray, *, reps: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean of a [seeds, images] grid (two-way bootstrap)."""
    d = np.asarray(d, np.float64)
    if d.size == 0 or not np.all(np.isfinite(d)):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    s = rng.integers(0, d.shape[0], size=(reps, d.shape[0]))
    i = rng.integers(0, d.shape[1], size=(reps, d.shape[1]))
    means = d[s[:, :, None], i[:, None, :]].mean(axis=(1, 2))
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of ``a - b`` (grids [seeds, images]), its interval, and how often a > b."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    lo, hi = bootstrap_interval(d)
    return {
        "mean": float(np.mean(d)),
        "lo": lo,
        "hi": hi,
        "positive": int(np.sum(d > 0)),
        "n": int(d.size),
    }


def late_gain(curve: list[dict], *, key: str = "psnr", tail: float = TAIL) -> float:
    """Validation gain over the last `tail` of training: last value - value at (1-tail).

    The value at the start of the tail is the last logged point at or before it.
    """
    steps = np.asarray([c["step"] for c in curve])
    values = np.asarray([c[key] for c in curve], np.float64)
    cut = steps[-1] * (1 - tail)
    start = values[steps <= cut][-1]
    return float(values[-1] - start)


def late_relative_change(curve: list[dict], *, key: str, tail: float = TAIL) -> float:
    """Relative change of `key` over the last `tail` of training (points with a value only)."""
    pts = [c for c in curve if c.get(key) is not None]
    steps = np.asarray([c["step"] for c in pts])
    values = np.asarray([c[key] for c in pts], np.float64)
    start = values[steps <= steps[-1] * (1 - tail)][-1]
    return float((values[-1] - start) / abs(start))
