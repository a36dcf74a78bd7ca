"""Pixel-wise metrics: mean absolute error and PSNR, per image."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from dssim_mae_jax import _inputs, _jit, _reductions


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


def mae_from_pair(pair: _inputs.Pair, weights=None) -> jax.Array:
    """Mean absolute difference per image of a prepared pair, in units of ``max_val``.

    `weights` (broadcast to the images, e.g. a window footprint) replace the
    pair's mask; an image whose weights are all zero gives 0.
    """
    weights = pair.mask if weights is None else weights
    # An image with an empty mask has no error to report: 0, with a zero gradient.
    value = _reductions.weighted_mean(_abs(pair.diff), weights, pair.axes, 0.0)
    return _reductions.nan_where(pair.bad, value)


def psnr_from_pair(pair: _inputs.Pair) -> jax.Array:
    """PSNR per image of a prepared pair (the difference is in units of ``max_val``).

    ``-10 log10(mean(d^2))`` is evaluated as ``-10 log10(mean((d / s)^2)) -
    20 log10(s)`` with ``s`` the largest ``|d|`` of the image, so that tiny
    differences (``1e-20``, whose squares underflow float32) keep their true
    value; ``inf`` only for identical images.
    """
    axes = pair.axes
    size = jnp.abs(pair.diff)
    if pair.mask is not None:
        size = jnp.where(pair.mask > 0, size, 0.0)
    # A constant (the result does not depend on it), so no gradient flows into it.
    s = lax.stop_gradient(jnp.max(size, axis=axes))
    zero = s == 0
    safe = jnp.where(zero, 1.0, s)
    scaled = pair.diff / jnp.expand_dims(safe, tuple(range(safe.ndim, safe.ndim + len(axes))))
    mse = _reductions.weighted_mean(jnp.square(scaled), pair.mask, axes, 0.0)
    zero = zero | (mse == 0)
    value = -10.0 * jnp.log10(jnp.where(zero, 1.0, mse)) - 20.0 * jnp.log10(safe)
    # log of a zero MSE would make the gradient NaN; report inf with zero gradient.
    return _reductions.nan_where(pair.bad, jnp.where(zero, jnp.inf, value))


_CHECK_OPTIONAL = functools.partial(_inputs.check_concrete, max_val_required=False)
_CHECK_REQUIRED = functools.partial(_inputs.check_concrete, max_val_required=True)


@_jit.jit_public(("spatial_dims",), check_all=_CHECK_OPTIONAL)
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
    gradient uses the subgradient 0 where ``predictions == targets``. An image
    holding a NaN or inf among its (unmasked) pixels gets NaN, never a score.
    Compiled once per shape and options, also when called eagerly.

    Args:
      predictions: images ``[..., H, W, C]`` (float or integer dtype).
      targets: images of the same shape.
      max_val: optional data range to divide by; ``None`` keeps the data's units.
      mask: optional weights broadcastable to the images; a weighted mean over
        the pixels it selects (an image whose mask is empty gives 0). Pixels
        with weight 0 are set to 0 first: what they hold (NaN included)
        changes neither value nor gradient. A concrete mask must be finite
        and >= 0; a traced NaN weight gives NaN.
      spatial_dims: number of spatial axes before the channel axis (1, 2 or 3).

    Returns:
      MAE per image, shape ``predictions.shape[:-1 - spatial_dims]``, float32
      (float64 for float64 inputs); NaN for an image holding NaN or inf.

    Raises:
      ValueError: mismatched shapes, too few dimensions, empty spatial or
        channel axes, non-positive or non-finite ``max_val``, a mask that does
        not broadcast or holds negative or non-finite weights.
      TypeError: non-numeric inputs, a non-int ``spatial_dims``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import mae
      >>> float(mae(jnp.full((4, 4, 1), 255.0), jnp.zeros((4, 4, 1)), max_val=255.0))
      1.0

    References:
      H. Zhao, O. Gallo, I. Frosio and J. Kautz, "Loss functions for image
      restoration with neural networks", IEEE TCI 2017 (the L1 term).
    """
    pair = _inputs.prepare_pair(
        predictions, targets, max_val=max_val, mask=mask, spatial_dims=spatial_dims
    )
    return mae_from_pair(pair)


@_jit.jit_public(("spatial_dims",), check_all=_CHECK_REQUIRED)
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
    compute it, here as ``-10 * log10(MSE of (predictions - targets) / max_val)``
    (scale invariant). Identical finite images give ``inf`` (with a zero
    gradient); an image holding a NaN or inf among its (unmasked) pixels gets
    NaN, never ``inf``.

    Args:
      predictions: images ``[..., H, W, C]``.
      targets: images of the same shape.
      max_val: the data range (1.0 for [0, 1] data, 255 for uint8).
      mask: optional weights broadcastable to the images (weighted MSE), as in
        :func:`mae`; an image whose mask is empty gives ``inf``.
      spatial_dims: number of spatial axes before the channel axis (1, 2 or 3).

    Returns:
      PSNR per image, shape ``predictions.shape[:-1 - spatial_dims]``; NaN for
      an image holding NaN or inf.

    Raises:
      ValueError: as :func:`mae`.
      TypeError: as :func:`mae`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import psnr
      >>> round(float(psnr(jnp.full((8, 8, 3), 0.1), jnp.zeros((8, 8, 3)), max_val=1.0)), 4)
      20.0

    References:
      Matches ``tf.image.psnr`` and ``skimage.metrics.peak_signal_noise_ratio``.
    """
    pair = _inputs.prepare_pair(
        predictions, targets, max_val=max_val, mask=mask, spatial_dims=spatial_dims
    )
    return psnr_from_pair(pair)
