"""Reductions of maps to per-image values, shared by the metrics and the losses."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from dssim_mae_jax import _filters


def nan_where(bad, value, trailing: int = 0):
    """`value` with NaN for the images flagged `bad` (``trailing`` axes after the batch)."""
    return jnp.where(
        jnp.expand_dims(bad, tuple(range(bad.ndim, bad.ndim + trailing))), jnp.nan, value
    )


def weighted_mean(values, weights, axes, empty):
    """Mean over `axes` weighted by `weights` (None: plain); all-zero weights give `empty`."""
    if weights is None:
        return jnp.mean(values, axis=axes)
    total = jnp.sum(weights, axis=axes)
    nothing = total == 0
    mean = jnp.sum(values * weights, axis=axes) / jnp.where(nothing, 1.0, total)
    return jnp.where(nothing, empty, mean)


def unit_mean(values, weights, axes, deficits=None):
    """Weighted mean of values <= 1 over `axes`, as (mean, 1 - mean).

    Both the values and their deficits ``1 - values`` are averaged and each
    result is taken from the better-conditioned one: near 1 from the deficits
    (a map of exact ones stays exactly 1 even where XLA divides by multiplying
    with a rounded reciprocal, and small dissimilarities keep their digits),
    below 1/2 from the values (tiny similarities keep their relative
    precision). All-zero weights give (1, 0): nothing observed, nothing lost.
    Weighted sums are divided by the total weight, as ``jnp.mean`` divides by
    the count, so all-ones weights give exactly the unweighted mean.
    """
    if deficits is None:
        deficits = 1.0 - values
    if weights is None:
        mean, deficit = jnp.mean(values, axis=axes), jnp.mean(deficits, axis=axes)
    else:
        total = jnp.sum(weights, axis=axes)
        nothing = total == 0
        safe = jnp.where(nothing, 1.0, total)
        mean = jnp.where(nothing, 1.0, jnp.sum(values * weights, axis=axes) / safe)
        deficit = jnp.where(nothing, 0.0, jnp.sum(deficits * weights, axis=axes) / safe)
    small = mean < 0.5
    return jnp.where(small, mean, 1.0 - deficit), jnp.where(small, 1.0 - mean, deficit)


def center_weights(mask, axes: Sequence[int], size: int, padding: str):
    """Per-position weights of a map: the mask at each window's centre (None: none)."""
    if mask is None or padding != "valid":
        return mask
    return _filters.crop_to_centers(mask, axes, size)


def map_mean(value_map, centre, spatial_dims: int):
    """(S, 1 - S) per image from a similarity map: over positions, then channels."""
    per_channel, deficit = unit_mean(value_map, centre, tuple(range(-1 - spatial_dims, -1)))
    return unit_mean(per_channel, None, -1, deficit)
