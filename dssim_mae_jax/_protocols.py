"""Evaluation protocols of restoration papers: Y channel, border crop, ``ssim.m`` downsampling.

Pure functions on ``[..., H, W, C]`` images; the metric states of
:mod:`dssim_mae_jax.metrics` apply them (options ``y_channel``, ``crop_border``
and ``matlab_downsample``) before scoring.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

# ITU-R BT.601 luma in studio range, as MATLAB's rgb2ycbcr: on [0, 255] data
# Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, i.e. Y in [16, 235].
BT601_LUMA = (65.481, 128.553, 24.966)
BT601_OFFSET = 16.0


def rgb_to_y(images: ArrayLike, *, max_val: float) -> jax.Array:
    """BT.601 studio-range luma of RGB images, in the units of the input.

    On data in ``[0, max_val]`` the image is read as ``[0, 255]`` data scaled by
    ``max_val / 255``, so with ``max_val=255``::

      Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255

    (MATLAB ``rgb2ycbcr``; BasicSR ``calculate_psnr(..., test_y_channel=True)``),
    computed in floating point without rounding, and with ``max_val=1`` the
    same value divided by 255. Score the result with the same ``max_val``.

    Args:
      images: RGB images ``[..., H, W, 3]`` (float or integer dtype).
      max_val: the data range of `images` (255 for 8-bit data, 1 for [0, 1]).

    Returns:
      ``[..., H, W, 1]`` luma, float32 (float64 for float64 inputs).

    Raises:
      ValueError: the last axis does not hold 3 channels; non-positive `max_val`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax._protocols import rgb_to_y
      >>> rgb_to_y(jnp.full((1, 1, 3), 255.0), max_val=255.0).tolist()
      [[[235.0]]]

    References:
      ITU-R Recommendation BT.601; MATLAB ``rgb2ycbcr``; BasicSR
      ``basicsr/metrics/psnr_ssim.py`` (``to_y_channel``).
    """
    x = jnp.asarray(images)
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(
            f"`predictions`/`targets` with y_channel=True must be RGB images [..., H, W, 3], "
            f"got shape {tuple(x.shape)}."
        )
    if not max_val > 0:
        raise ValueError(f"`max_val` must be positive, got {max_val}.")
    dtype = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    x = x.astype(dtype)
    r, g, b = x[..., 0:1], x[..., 1:2], x[..., 2:3]
    luma = BT601_LUMA[0] * r + BT601_LUMA[1] * g + BT601_LUMA[2] * b
    # On [0, 255] data: 16 + luma / 255; other ranges scale with max_val / 255.
    return luma / 255.0 + BT601_OFFSET * (float(max_val) / 255.0)


def crop_border(images: ArrayLike, border: int, *, spatial_axes: tuple[int, int] = (-3, -2)):
    """`images` without `border` pixels on every side of the two spatial axes.

    Args:
      images: ``[..., H, W, C]``.
      border: pixels removed from each side (0: unchanged); SR papers use the
        upscaling factor.
      spatial_axes: the height and width axes.

    Returns:
      ``[..., H - 2 border, W - 2 border, C]``.

    Raises:
      ValueError: a negative `border`, or one that leaves no pixel.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax._protocols import crop_border
      >>> crop_border(jnp.zeros((1, 8, 10, 3)), 2).shape
      (1, 4, 6, 3)
    """
    check_crop_border(border)
    if border == 0:
        return images
    for axis in spatial_axes:
        n = images.shape[axis]
        if n <= 2 * border:
            raise ValueError(
                f"`crop_border`={border} leaves no pixel of a spatial size {n} "
                f"(images of shape {tuple(images.shape)})."
            )
        images = lax.slice_in_dim(images, border, n - border, axis=axis % images.ndim)
    return images


def check_crop_border(border) -> None:
    """Raises unless `border` is an int >= 0."""
    if isinstance(border, bool) or not isinstance(border, int):
        raise TypeError(f"`crop_border` must be an int, got {type(border).__name__} ({border!r}).")
    if border < 0:
        raise ValueError(f"`crop_border` must be >= 0, got {border}.")


def matlab_round(value: float) -> int:
    """MATLAB's ``round``: to the nearest integer, halves away from zero."""
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


def matlab_downsample_factor(height: int, width: int) -> int:
    """The factor of ``ssim.m``'s automatic downsampling: ``max(1, round(min(H, W) / 256))``.

    Examples:
      >>> from dssim_mae_jax._protocols import matlab_downsample_factor
      >>> matlab_downsample_factor(512, 768), matlab_downsample_factor(640, 640)
      (2, 3)
    """
    return max(1, matlab_round(min(height, width) / 256.0))


def box_pad_widths(factor: int) -> tuple[int, int]:
    """(before, after) samples an ``imfilter(..., 'same')`` box of `factor` taps reads.

    MATLAB centres an even kernel of ``f`` taps at its ``floor((f + 1) / 2)``-th
    tap (1-based), so output ``i`` averages inputs ``i - before .. i + after``.
    """
    centre = (factor + 1) // 2
    return centre - 1, factor - centre


def box_average_valid(padded: jax.Array, factor: int, out_shape: tuple[int, int]) -> jax.Array:
    """The ``factor x factor`` box mean of padded ``[..., H', W', C]`` images, then ``[::f, ::f]``.

    `padded` holds, along each spatial axis, ``before`` extra samples in front
    and enough behind (see :func:`box_pad_widths`); `out_shape` is the
    (height, width) of the unpadded image. The sum runs over the box rows and
    columns separately (``imfilter`` of the separable normalised box).
    """
    h, w = out_shape
    acc = None
    for di in range(factor):
        rows = lax.slice_in_dim(padded, di, di + h, axis=padded.ndim - 3)
        acc = rows if acc is None else acc + rows
    out = None
    for dj in range(factor):
        cols = lax.slice_in_dim(acc, dj, dj + w, axis=acc.ndim - 2)
        out = cols if out is None else out + cols
    out = out / float(factor * factor)
    return out[..., ::factor, ::factor, :]


def matlab_downsample(images: ArrayLike) -> jax.Array:
    """``ssim.m``'s automatic downsampling of ``[..., H, W, C]`` images.

    ``f = max(1, round(min(H, W) / 256))`` (MATLAB ``round``, halves away from
    zero); if ``f > 1``, each channel is filtered with the normalised ``f x f``
    box as ``imfilter(img, ones(f) / f^2, 'symmetric', 'same')`` (edges mirrored
    with the edge sample repeated; an even box reads one sample more after the
    centre than before it) and every ``f``-th pixel is kept, starting at the
    first. Apply it to both images, then compute SSIM with the Wang et al.
    defaults: that is the value MATLAB's ``ssim.m`` (Wang, 2009 release) reports.

    Args:
      images: ``[..., H, W, C]``.

    Returns:
      ``[..., ceil(H / f), ceil(W / f), C]``, float32 (float64 for float64
      inputs); `images` (as float) when ``f == 1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax._protocols import matlab_downsample
      >>> matlab_downsample(jnp.ones((1, 512, 600, 1))).shape
      (1, 256, 300, 1)

    References:
      Z. Wang, ``ssim.m`` (2009, "automatic downsampling"); scikit-image issue
      #5192 (the difference from ``ssim_index.m``).
    """
    x = jnp.asarray(images)
    dtype = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    x = x.astype(dtype)
    if x.ndim < 3:
        raise ValueError(f"`images` must be [..., H, W, C], got shape {tuple(x.shape)}.")
    h, w = x.shape[-3], x.shape[-2]
    f = matlab_downsample_factor(h, w)
    if f == 1:
        return x
    before, after = box_pad_widths(f)
    widths = [(0, 0)] * (x.ndim - 3) + [(before, after), (before, after), (0, 0)]
    padded = jnp.pad(x, widths, mode="symmetric")
    return box_average_valid(padded, f, (h, w))
