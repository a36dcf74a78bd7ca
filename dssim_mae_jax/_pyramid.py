"""The MS-SSIM pyramid of Wang, Simoncelli and Bovik (2003): scales, pooling, product."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dssim_mae_jax import _reductions, _ssim_maps, _validation
from dssim_mae_jax._inputs import Pair

# MS-SSIM scale weights of Wang, Simoncelli & Bovik (2003). They sum to 1.0001;
# kept as published, as the MATLAB reference and tf.image.ssim_multiscale do.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# The derivative of v**w (w < 1) grows without bound as v -> 0+; it is
# evaluated at max(v, POW_GRAD_FLOOR) so gradients stay finite for any input.
POW_GRAD_FLOOR = 1e-4


@jax.custom_jvp
def relu_pow(v, w):
    """``max(v, 0) ** w`` with a finite derivative for finite v (0 for v <= 0); NaN stays NaN."""
    clipped = v <= 0
    return jnp.where(clipped, 0.0, jnp.where(clipped, 1.0, v) ** w)


@relu_pow.defjvp
def _relu_pow_jvp(primals, tangents):
    v, w = primals
    dv, dw = tangents
    out = relu_pow(v, w)
    clipped = v <= 0
    safe = jnp.where(clipped, 1.0, v)
    floored = jnp.maximum(safe, POW_GRAD_FLOOR)
    d_v = jnp.where(clipped, 0.0, w * floored ** (w - 1.0))
    d_w = jnp.where(clipped, 0.0, out * jnp.log(safe))
    return out, d_v * dv + d_w * dw


def ms_ssim_min_size(filter_size: int, num_scales: int) -> int:
    """The smallest spatial size MS-SSIM with `num_scales` scales accepts.

    Each 2x pooling halves a size (rounding up: odd sizes repeat their last
    sample), and the coarsest scale must still hold `filter_size` samples:
    ``ceil(n / 2**(num_scales - 1)) >= filter_size``, i.e.
    ``n >= (filter_size - 1) * 2**(num_scales - 1) + 1`` (161 for the
    default 11 taps and 5 scales, as ``tf.image.ssim_multiscale`` requires).
    """
    return (filter_size - 1) * 2 ** (num_scales - 1) + 1


def pool2(x: jnp.ndarray, axes: tuple[int, ...]) -> jnp.ndarray:
    """2x average pooling along `axes`; odd sizes first repeat their last sample.

    This is tf.image.ssim_multiscale's rule in 2-D (symmetric padding of the
    bottom and right edges by the remainder, then VALID 2x2 pooling), applied
    to every spatial axis (2x2x2 for volumes). Written as sums of strided
    slices: no reshape, so a batch sharded along a mesh axis stays as it is.
    """
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis % x.ndim] = (0, x.shape[axis] % 2)
    if any(w[1] for w in widths):
        x = jnp.pad(x, widths, mode="symmetric")
    for axis in axes:
        axis %= x.ndim
        n = x.shape[axis] // 2
        even = jax.lax.slice_in_dim(x, 0, 2 * n, stride=2, axis=axis)
        odd = jax.lax.slice_in_dim(x, 1, 2 * n, stride=2, axis=axis)
        x = (even + odd) * 0.5
    return x


def downsample(spec: _ssim_maps.Spec, x, y, mask):
    """The next MS-SSIM scale of both images and of the mask.

    With a mask, the images are pooled as a normalised convolution (the
    pooled ``x * mask`` divided by the pooled mask, 0 where it is 0): masked-out
    pixels do not leak into the coarser scales, and the pooled mask weights the
    statistics there. An all-ones mask pools to exactly ones.
    """
    if mask is None:
        return pool2(x, spec.axes), pool2(y, spec.axes), None
    m = pool2(mask, spec.axes)
    has = m > 0
    safe = jnp.where(has, m, 1.0)
    x = jnp.where(has, pool2(x * mask, spec.axes) / safe, 0.0)
    y = jnp.where(has, pool2(y * mask, spec.axes) / safe, 0.0)
    return x, y, m


def scale_weights(shape, spatial_dims, filter_size, power_factors, fit_scales):
    """The weights of the scales used: all of them, or as many as fit (renormalised)."""
    levels = len(power_factors)
    smallest = min(shape[-1 - spatial_dims : -1])
    if fit_scales:
        fit = sum(smallest >= ms_ssim_min_size(filter_size, k) for k in range(1, levels + 1))
        if 0 < fit < levels:
            kept = power_factors[:fit]
            total = math.fsum(kept)
            if total <= 0:
                raise ValueError(
                    f"With fit_scales=True only {fit} scale(s) fit spatial shape "
                    f"{tuple(shape[-1 - spatial_dims : -1])}, and their `power_factors` "
                    f"{kept} sum to 0."
                )
            return tuple(w / total for w in kept)
        levels = max(fit, 1)
    min_size = ms_ssim_min_size(filter_size, levels)
    _validation.check_min_size(
        shape,
        spatial_dims,
        min_size,
        f"MS-SSIM with {levels} scales and filter_size={filter_size} needs "
        f"(filter_size - 1) * 2**(scales - 1) + 1 = {min_size}",
    )
    return power_factors


def ms_ssim_value(pair: Pair, spec: _ssim_maps.Spec, c1, c2, weights) -> jax.Array:
    """MS-SSIM per image of a prepared pair (NaN for its `bad` images)."""
    x, y, mask = pair.x, pair.y, pair.mask
    size = len(spec.taps)
    terms = []

    def position_mean(maps, chunk_mask):
        centre = _reductions.center_weights(chunk_mask, spec.axes, size, spec.padding)
        return _reductions.unit_mean(maps[0], centre, spec.axes)[0]

    for level in range(len(weights)):
        if level:
            x, y, mask = downsample(spec, x, y, mask)
        want = ("s",) if level == len(weights) - 1 else ("cs",)
        terms.append(
            _ssim_maps.ssim_cs_maps(spec, x, y, mask, c1, c2, want=want, reduce=position_mean)
        )
    stacked = jnp.stack(terms, axis=-1)
    exponents = jnp.asarray(weights, stacked.dtype).reshape((1,) * (stacked.ndim - 1) + (-1,))
    per_channel = jnp.prod(relu_pow(stacked, exponents), axis=-1)
    return _reductions.nan_where(pair.bad, _reductions.unit_mean(per_channel, None, -1)[0])
