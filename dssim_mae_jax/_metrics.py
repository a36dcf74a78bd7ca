"""Pixel-wise metrics: mean absolute error and PSNR, per image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dssim_mae_jax import _validation


@jax.custom_jvp
def _abs(v):
    return jnp.abs(v)


@_abs.defjvp
def _abs_jvp(primals, tangents):
    # The subgradient 0 at v == 0 (jnp.abs uses 1): identical images then get
    # an exactly zero MAE gradient, like the SSIM terms.
    (v,), (dv,) = primals, tangents
    return jnp.abs(v), jnp.sign(v) * dv


def absolute_difference(x, y):
    """``|x - y|`` whose derivative is 0 where ``x == y`` (shared with the losses)."""
    return _abs(x - y)


def image_axes(spatial_dims: int) -> tuple[int, ...]:
    """The spatial and channel axes of ``[..., *spatial, C]`` images."""
    return tuple(range(-1 - spatial_dims, 0))


def weighted_mean(values, weights, axes, empty):
    """Mean over `axes` weighted by `weights` (None: plain); all-zero weights give `empty`."""
    if weights is None:
        return jnp.mean(values, axis=axes)
    total = jnp.sum(weights, axis=axes)
    has = total > 0
    mean = jnp.sum(values * weights, axis=axes) / jnp.where(has, total, 1.0)
    return jnp.where(has, mean, empty)


def mae(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike | None = None,
    mask: ArrayLike | None = None,
    spatial_dims: int = 2,
) -> jax.Array:
    """Mean absolute error of each image, optionally divided by the data range.

    ``mean(|predictions - targets|) / max_val`` over the spatial and channel axes.
    Dividing by ``max_val`` puts MAE on the [0, 1] scale of DSSIM whatever the
    data range (0..255 data and [0, 1] data then give the same value). The
    gradient uses the subgradient 0 where ``predictions == targets``.

    Args:
      predictions: images ``[..., H, W, C]`` (float or integer dtype).
      targets: images of the same shape.
      max_val: optional data range to divide by; ``None`` keeps the data's units.
      mask: optional weights broadcastable to the images; a weighted mean over
        the pixels it selects (an image whose mask is empty gives 0).
      spatial_dims: number of spatial axes before the channel axis (1, 2 or 3).

    Returns:
      MAE per image, shape ``predictions.shape[:-1 - spatial_dims]``, float32
      (float64 for float64 inputs).

    Raises:
      ValueError: mismatched shapes, too few dimensions, non-positive
        ``max_val``, a mask that does not broadcast.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import mae
      >>> float(mae(jnp.full((4, 4, 1), 255.0), jnp.zeros((4, 4, 1)), max_val=255.0))
      1.0

    References:
      H. Zhao, O. Gallo, I. Frosio and J. Kautz, "Loss functions for image
      restoration with neural networks", IEEE TCI 2017 (the L1 term).
    """
    _validation.check_spatial_dims(spatial_dims)
    x, y = _validation.as_float_pair(predictions, targets, min_rank=spatial_dims + 1)
    _validation.check_positive("max_val", max_val, allow_none=True)
    mask = _validation.broadcast_mask(mask, x.shape, x.dtype)
    # An image with an empty mask has no error to report: 0, with a zero gradient.
    value = weighted_mean(absolute_difference(x, y), mask, image_axes(spatial_dims), 0.0)
    if max_val is not None:
        value = value / jnp.asarray(max_val, value.dtype)
    return value


def psnr(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike,
    mask: ArrayLike | None = None,
    spatial_dims: int = 2,
) -> jax.Array:
    """Peak signal-to-noise ratio of each image, in dB.

    ``10 * log10(max_val^2 / MSE)`` with the MSE over the spatial and channel
    axes, as ``tf.image.psnr`` and ``skimage.metrics.peak_signal_noise_ratio``
    compute it. Identical images give ``inf`` (with a zero gradient).

    Args:
      predictions: images ``[..., H, W, C]``.
      targets: images of the same shape.
      max_val: the data range (1.0 for [0, 1] data, 255 for uint8).
      mask: optional weights broadcastable to the images (weighted MSE).
      spatial_dims: number of spatial axes before the channel axis (1, 2 or 3).

    Returns:
      PSNR per image, shape ``predictions.shape[:-1 - spatial_dims]``.

    Raises:
      ValueError: mismatched shapes, too few dimensions, non-positive
        ``max_val``, a mask that does not broadcast.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import psnr
      >>> round(float(psnr(jnp.full((8, 8, 3), 0.1), jnp.zeros((8, 8, 3)), max_val=1.0)), 6)
      20.0

    References:
      Matches ``tf.image.psnr`` and ``skimage.metrics.peak_signal_noise_ratio``.
    """
    _validation.check_spatial_dims(spatial_dims)
    x, y = _validation.as_float_pair(predictions, targets, min_rank=spatial_dims + 1)
    _validation.check_positive("max_val", max_val)
    mask = _validation.broadcast_mask(mask, x.shape, x.dtype)
    mse = weighted_mean(jnp.square(x - y), mask, image_axes(spatial_dims), 0.0)
    positive = mse > 0
    # log of a zero MSE would make the gradient NaN; report inf with zero gradient.
    safe = jnp.where(positive, mse, 1.0)
    max_val = jnp.asarray(max_val, mse.dtype)
    value = 10.0 * jnp.log10(max_val * max_val / safe)
    return jnp.where(positive, value, jnp.inf)
