"""Per-image scores of padded (bucketed) batches, each equal to its unpadded score.

Every image of a ``[B, H, W, C]`` batch occupies the top-left ``h x w`` corner
(``sizes[b] = (h, w)``); the rest is padding. Each score is built from the
public functions (:func:`dssim_mae_jax.ssim` and the others) so that the
padding changes no value:

* ``padding="valid"`` maps: a map position whose window lies entirely inside
  the image is computed from image pixels only, exactly as in the unpadded
  map, so the map is averaged over those positions (and, with a mask, weighted
  by the mask at each window's centre, as the functions do).
* ``"same"``: the padding is zeros, which is what the zero padding of the
  unpadded image holds (a mask is set to 1 there, as the functions treat
  their own padding); ``"reflect"``: the padding is filled with the mirror
  image. The map is averaged over the image's positions.
* MS-SSIM: before each 2x2 pooling the row and column after an odd-sized
  level are filled with its last ones (``tf.image.ssim_multiscale``'s
  symmetric padding), so every pooled pixel of the image equals the
  unpadded pyramid's. The contrast-structure map of each level is
  :func:`dssim_mae_jax.ssim` with ``k1 = 2**14``: ``C1 = 2**28`` makes the
  luminance factor exactly 1 in float32 and float64 for data in
  ``[0, max_val]`` (``2 mu_x mu_y`` and ``(mu_x - mu_y)^2`` vanish against
  it), and the map is then bitwise the contrast-structure map.
* PSNR and MAE: the image region is the mask.

An image (channel) with no weight gets 1, as the functions give it.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

import dssim_mae_jax as dmj
from dssim_mae_jax import _protocols

# k1 whose C1 = k1**2 = 2**28 turns SSIM into its contrast-structure term (see above).
CS_K1 = 2.0**14


def region(sizes, height: int, width: int):
    """``[B, H, W, 1]`` bool: True inside each image's ``sizes[b]`` corner."""
    rows = jnp.arange(height)[None, :] < sizes[:, 0:1]
    cols = jnp.arange(width)[None, :] < sizes[:, 1:2]
    return (rows[:, :, None] & cols[:, None, :])[..., None]


def _mirror_indices(n_out, size, *, before: int, mode: str):
    """``[B, n_out]`` source indices: ``j - before`` mirrored into ``[0, size)``."""
    j = jnp.arange(n_out)[None, :] - before
    s = size[:, None]
    if mode == "symmetric":  # edge sample repeated (numpy/MATLAB "symmetric")
        j = jnp.where(j < 0, -1 - j, j)
        j = jnp.where(j >= s, 2 * s - 1 - j, j)
    else:  # "reflect": edge sample not repeated
        j = jnp.where(j < 0, -j, j)
        j = jnp.where(j >= s, 2 * (s - 1) - j, j)
    return jnp.clip(j, 0, s - 1)


def mirror(x, sizes, *, mode: str, before: int = 0, after: int | None = None):
    """`x` ``[B, H, W, C]`` with everything outside each image mirrored from it.

    The output has ``before`` extra rows/columns in front and ``after`` behind
    (default: none in front, and the same size as `x`).
    """
    height, width = x.shape[1], x.shape[2]
    extra = 0 if after is None else after
    rows = _mirror_indices(height + before + extra, sizes[:, 0], before=before, mode=mode)
    cols = _mirror_indices(width + before + extra, sizes[:, 1], before=before, mode=mode)
    x = jnp.take_along_axis(x, rows[:, :, None, None], axis=1)
    return jnp.take_along_axis(x, cols[:, None, :, None], axis=2)


def weighted_image_mean(value_map, weights):
    """Per image: the per-channel weighted mean of the map (no weight: 1), then the channel mean."""
    w = jnp.broadcast_to(weights, value_map.shape).astype(value_map.dtype)
    total = jnp.sum(w, axis=(1, 2))
    s = jnp.sum(w * value_map, axis=(1, 2))
    empty = total == 0
    per_channel = jnp.where(empty, 1.0, s / jnp.where(empty, 1.0, total))
    return jnp.mean(per_channel, axis=-1)


def balance(x, sizes, halo: int, mask=None):
    """`x` with the padding past ``halo`` pixels set so that each image keeps its mean.

    The functions subtract each image's mean before filtering (for float
    precision; the value does not depend on it). Filling the padding no map
    position reads with the value that keeps that mean makes the bucketed
    computation round as the unpadded one does (measured: about 1e-7 instead
    of 1e-6 for SSIM in float32). Masked-out pixels count as 0, as the
    functions zero them.
    """
    height, width = x.shape[1], x.shape[2]
    inside = region(sizes, height, width)
    near = region(sizes + halo, height, width)
    if mask is not None:
        x = jnp.where(mask > 0, x, 0.0)
    n = jnp.sum(inside, axis=(1, 2), keepdims=True).astype(x.dtype)
    mean = jnp.sum(jnp.where(inside, x, 0.0), axis=(1, 2), keepdims=True) / n
    near_sum = jnp.sum(jnp.where(near, x, 0.0), axis=(1, 2), keepdims=True)
    n_far = float(height * width) - jnp.sum(near, axis=(1, 2), keepdims=True).astype(x.dtype)
    fill = (mean * float(height * width) - near_sum) / jnp.maximum(n_far, 1.0)
    return jnp.where(near, x, fill)


def _center_crop(m, filter_size: int):
    """The mask at the centres of the valid windows (as the functions weight a valid map)."""
    before = (filter_size - 1) // 2
    h = m.shape[1] - filter_size + 1
    w = m.shape[2] - filter_size + 1
    return m[:, before : before + h, before : before + w, :]


def _inside(sizes, height: int, width: int, filter_size: int):
    """``[B, h', w', 1]``: valid-map positions whose window lies inside the image."""
    return region(sizes - (filter_size - 1), height - filter_size + 1, width - filter_size + 1)


def windowed(fn, x, y, mask, sizes, *, filter_size: int, padding: str, options: dict):
    """Per-image mean of ``fn(..., return_map=True)`` (``ssim``, ``multi_sigma_ssim``), bucketed."""
    height, width = x.shape[1], x.shape[2]
    inside = region(sizes, height, width)
    if padding == "reflect":
        x, y = mirror(x, sizes, mode="reflect"), mirror(y, sizes, mode="reflect")
        mask = None if mask is None else mirror(mask, sizes, mode="reflect")
    else:
        x, y = jnp.where(inside, x, 0.0), jnp.where(inside, y, 0.0)
        if mask is not None:
            # "same" counts the padding as (zero) data; "valid" never reaches it.
            mask = jnp.where(inside, mask, 1.0 if padding == "same" else 0.0)
    halo = 0 if padding == "valid" else filter_size // 2
    x, y = balance(x, sizes, halo, mask), balance(y, sizes, halo, mask)
    if mask is not None:
        # The balancing fill must count as data (no map position used reads it).
        mask = jnp.where(region(sizes + halo, height, width), mask, 1.0)
    value_map = fn(x, y, mask=mask, return_map=True, padding=padding, **options)
    if padding == "valid":
        weights = _inside(sizes, height, width, filter_size)
        if mask is not None:
            weights = weights * _center_crop(mask, filter_size)
    else:
        weights = inside if mask is None else inside * mask
    return weighted_image_mean(value_map, weights)


def _pool(x, sizes):
    """2x2 mean of a bucket level whose odd-sized images repeat their last row/column."""
    x = mirror(x, sizes, mode="symmetric")
    b, h, w, c = x.shape
    return jnp.mean(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def ms_ssim(x, y, mask, sizes, *, weights: tuple[float, ...], filter_size: int, options: dict):
    """Per-image MS-SSIM (``dmj.ms_ssim`` semantics) of a bucket; `weights` per level."""
    terms = []
    for level in range(len(weights)):
        if level:
            if mask is None:
                x, y = _pool(x, sizes), _pool(y, sizes)
            else:
                # As dmj.ms_ssim: a normalised convolution with the pooled mask.
                pooled = _pool(mask, sizes)
                has = pooled > 0
                safe = jnp.where(has, pooled, 1.0)
                x = jnp.where(has, _pool(x * mask, sizes) / safe, 0.0)
                y = jnp.where(has, _pool(y * mask, sizes) / safe, 0.0)
                mask = pooled
            sizes = (sizes + 1) // 2
        last = level == len(weights) - 1
        xb, yb = balance(x, sizes, 0, mask), balance(y, sizes, 0, mask)
        mb = None if mask is None else jnp.where(region(sizes, x.shape[1], x.shape[2]), mask, 1.0)
        level_options = dict(options) if last else {**options, "k1": CS_K1}
        value_map = dmj.ssim(
            xb, yb, mask=mb, return_map=True, padding="valid", filter_size=filter_size,
            **level_options,
        )  # fmt: skip
        w = _inside(sizes, x.shape[1], x.shape[2], filter_size)
        if mask is not None:
            w = w * _center_crop(mask, filter_size)
        ww = jnp.broadcast_to(w, value_map.shape).astype(value_map.dtype)
        total = jnp.sum(ww, axis=(1, 2))
        empty = total == 0
        terms.append(
            jnp.where(empty, 1.0, jnp.sum(ww * value_map, axis=(1, 2)) / jnp.where(empty, 1, total))
        )
    stacked = jnp.stack(terms, axis=-1)
    exponents = jnp.asarray(weights, stacked.dtype)[None, None, :]
    # Negative terms count as 0 (tf.image.ssim_multiscale); NaN stays NaN.
    powered = jnp.where(stacked <= 0, 0.0, jnp.where(stacked <= 0, 1.0, stacked) ** exponents)
    return jnp.mean(jnp.prod(powered, axis=-1), axis=-1)


def matlab_downsample(x, sizes, factor: int):
    """``ssim.m``'s box filter and subsampling of a bucket (each image mirrored at its own edge)."""
    if factor == 1:
        return x, sizes
    before, after = _protocols.box_pad_widths(factor)
    padded = mirror(x, sizes, mode="symmetric", before=before, after=after)
    out = _protocols.box_average_valid(padded, factor, (x.shape[1], x.shape[2]))
    return out, (sizes + factor - 1) // factor


def pixel_sums(x, y, weights, *, max_val):
    """Per image: (sum of squared errors / max_val^2, weight), over pixels and channels."""
    w = jnp.broadcast_to(weights, x.shape).astype(x.dtype)
    d = (x - y) / max_val
    return jnp.sum(w * d * d, axis=(1, 2, 3)), jnp.sum(w, axis=(1, 2, 3))


def ms_ssim_levels(min_side: int, filter_size: int, power_factors, fit_scales: bool):
    """The per-level weights ``dmj.ms_ssim`` uses for an image whose smaller side is `min_side`.

    All of `power_factors`, or with `fit_scales` the first ``M`` that fit,
    renormalised (``M`` the largest with ``min_side >= (filter_size - 1) *
    2**(M - 1) + 1``). Raises ``ValueError`` for a too-small image.
    """
    levels = len(power_factors)

    def need(k):
        return (filter_size - 1) * 2 ** (k - 1) + 1

    if fit_scales:
        fit = sum(min_side >= need(k) for k in range(1, levels + 1))
        if fit == 0:
            raise ValueError(
                f"`predictions`: an image side of {min_side} pixels is smaller than the window "
                f"(filter_size={filter_size})."
            )
        if fit < levels:
            kept = power_factors[:fit]
            total = math.fsum(kept)
            return tuple(w / total for w in kept)
        return tuple(power_factors)
    if min_side < need(levels):
        raise ValueError(
            f"`predictions`: MS-SSIM with {levels} scales and filter_size={filter_size} needs "
            f"every image side >= {need(levels)} pixels, got an image side of {min_side} "
            "(use fit_scales=True for smaller images)."
        )
    return tuple(power_factors)
