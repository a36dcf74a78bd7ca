"""Separable window filtering: the local statistics behind SSIM.

The windows are normalised 1-D taps applied along each spatial axis in turn
(a separable N-D window is the outer product of the 1-D taps). Filtering is a
*valid* correlation written as a sum of shifted slices: only elementwise
multiplies and adds, so no matmul/convolution precision mode (TF32 on GPUs,
bf16 passes on TPUs) can degrade the statistics, and XLA fuses the products
that form the moments into the filtering itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax


def gaussian_taps(size: int, sigma: float) -> tuple[float, ...]:
    """Normalised 1-D Gaussian taps, centred on the middle of the window.

    Matches the window of tf.image.ssim / dm_pix.ssim (``exp(-d^2 / (2 sigma^2))``
    with ``d = i - (size - 1) / 2``, normalised to sum 1), computed in float64.
    """
    d = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(d**2) / (2.0 * float(sigma) ** 2))
    return tuple(float(v) for v in g / g.sum())


def uniform_taps(size: int) -> tuple[float, ...]:
    """Normalised 1-D box taps (all equal to ``1 / size``)."""
    return (1.0 / size,) * size


def window_taps(window: str, size: int, sigma: float) -> tuple[float, ...]:
    if window == "gaussian":
        return gaussian_taps(size, sigma)
    if window == "uniform":
        return uniform_taps(size)
    raise ValueError(f"`window` must be 'gaussian' or 'uniform', got {window!r}.")


def pad_amounts(size: int) -> tuple[int, int]:
    """(before, after) padding that keeps the output the size of the input."""
    before = (size - 1) // 2
    return before, size - 1 - before


def pad_spatial(
    x: jnp.ndarray, axes: Sequence[int], size: int, mode: str, constant: float = 0.0
) -> jnp.ndarray:
    """Pads the spatial axes for a window of `size` taps.

    ``mode="valid"`` returns `x` unchanged; ``"same"`` pads with `constant`;
    ``"reflect"`` mirrors without repeating the edge sample (numpy ``reflect``).
    """
    if mode == "valid":
        return x
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis % x.ndim] = pad_amounts(size)
    if mode == "same":
        return jnp.pad(x, widths, mode="constant", constant_values=constant)
    if mode == "reflect":
        return jnp.pad(x, widths, mode="reflect")
    raise ValueError(f"Unknown padding mode {mode!r}.")


def _filter_axis(x: jnp.ndarray, taps: Sequence[float], axis: int) -> jnp.ndarray:
    k = len(taps)
    n = x.shape[axis] - k + 1

    def shifted(i):
        return lax.slice_in_dim(x, i, i + n, axis=axis)

    out = None
    for i in range(k // 2):
        j = k - 1 - i
        if taps[i] == taps[j]:
            # Symmetric taps: one multiply for each pair of shifted slices.
            term = (shifted(i) + shifted(j)) * taps[i]
        else:
            term = shifted(i) * taps[i] + shifted(j) * taps[j]
        out = term if out is None else out + term
    if k % 2:
        term = shifted(k // 2) * taps[k // 2]
        out = term if out is None else out + term
    return out


def filter_valid(x: jnp.ndarray, taps: Sequence[float], axes: Sequence[int]) -> jnp.ndarray:
    """Valid correlation of `x` with the separable window `taps` along `axes`.

    Each listed axis shrinks by ``len(taps) - 1``.
    """
    for axis in axes:
        x = _filter_axis(x, taps, axis)
    return x


def filter_valid_transpose(
    g: jnp.ndarray, taps: Sequence[float], axes: Sequence[int]
) -> jnp.ndarray:
    """Adjoint of :func:`filter_valid`: each listed axis grows by ``len(taps) - 1``.

    The adjoint of a valid correlation is a full correlation with the reversed
    taps, i.e. zero padding by ``len(taps) - 1`` on both sides, then valid.
    """
    k = len(taps)
    reversed_taps = tuple(taps[::-1])
    for axis in axes:
        widths = [(0, 0)] * g.ndim
        widths[axis % g.ndim] = (k - 1, k - 1)
        g = _filter_axis(jnp.pad(g, widths), reversed_taps, axis)
    return g
