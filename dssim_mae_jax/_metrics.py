"""Pixel-wise metrics: mean absolute error and PSNR, per image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from dssim_mae_jax import _jit, _validation


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
    """Mean over `axes` weighted by `weights` (None: plain); all-zero weights give `empty`.

    NaN weights (possible only for traced masks: concrete ones are checked)
    give NaN, never `empty`.
    """
    if weights is None:
        return jnp.mean(values, axis=axes)
    total = jnp.sum(weights, axis=axes)
    nothing = total == 0
    mean = jnp.sum(values * weights, axis=axes) / jnp.where(nothing, 1.0, total)
    return jnp.where(nothing, empty, mean)


def zero_masked_out(mask, *arrays):
    """`arrays` with every masked-out pixel (weight not > 0) set to 0.

    Done before any arithmetic, so that whatever a masked-out pixel holds (NaN
    and inf included) reaches neither values nor gradients.
    """
    if mask is None:
        return arrays
    keep = mask > 0
    return tuple(jnp.where(keep, a, 0.0) for a in arrays)


def nonfinite_images(x, y, spatial_dims: int):
    """Per image, True where `x` or `y` holds a NaN or inf (after masking out)."""
    bad = ~(jnp.isfinite(x) & jnp.isfinite(y))
    return jnp.any(bad, axis=image_axes(spatial_dims))


def nan_where(bad, value, trailing: int = 0):
    """`value` with NaN for the images flagged `bad` (``trailing`` axes after the batch)."""
    return jnp.where(bad.reshape(bad.shape + (1,) * trailing), jnp.nan, value)


def reciprocal(max_val):
    """``1 / max_val`` as a constant (no gradient flows into the data range)."""
    return lax.stop_gradient(1.0 / max_val)


def scaled_difference(inv, x, y):
    """``(x - y) * inv``: the difference first, so that ``x == y`` gives exactly 0.

    Where the difference of finite inputs overflows (``3e38 - (-3e38)`` in
    float32), each input is scaled first instead.
    """
    d = x - y
    return jnp.where(jnp.isfinite(d), d * inv, x * inv - y * inv)


def scale_pair(inv, x, y):
    """``(x * inv, y * inv)``, with ``y * inv`` formed as ``x * inv - (x - y) * inv``.

    Where ``x == y`` the two are bitwise equal whatever XLA does with each
    product (an FMA contraction, or folding the product for a constant
    target), so identical images keep SSIM exactly 1 and a zero gradient.
    Both are materialised behind an optimisation barrier, so that XLA does not
    recompute them inside every consumer (measured: without it, MS-SSIM
    fwd+bwd was about 20 % slower on CPU). A difference beyond the float range
    (finite inputs near 3e38 in float32) gives NaN, never a score.
    """
    xs = x * inv
    return lax.optimization_barrier((xs, xs - (x - y) * inv))


def _pixels(predictions, targets, max_val, mask, spatial_dims, *, allow_none):
    """Shared preamble of `mae`/`psnr`: (x - y divided by max_val, mask, bad)."""
    _validation.check_spatial_dims(spatial_dims)
    x, y = _validation.as_float_pair(predictions, targets, min_rank=spatial_dims + 1)
    _validation.check_positive("max_val", max_val, allow_none=allow_none)
    if max_val is not None:
        max_val = jnp.asarray(max_val, x.dtype)
        if max_val.ndim != 0:
            raise ValueError(f"`max_val` must be a scalar, got shape {max_val.shape}.")
    mask = _validation.broadcast_mask(mask, x.shape, x.dtype)
    if mask is not None:
        mask = lax.stop_gradient(mask)
    x, y = zero_masked_out(mask, x, y)
    bad = nonfinite_images(x, y, spatial_dims)
    # The difference first (x == y gives exactly 0), then the scale.
    diff = x - y if max_val is None else scaled_difference(reciprocal(max_val), x, y)
    return diff, mask, bad


def _check_max_val(value):
    _validation.check_positive("max_val", value)


def _check_optional_max_val(value):
    _validation.check_positive("max_val", value, allow_none=True)


@_jit.jit_public(
    ("spatial_dims",),
    checks={"max_val": _check_optional_max_val, "mask": _validation.check_mask_values},
)
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
    diff, mask, bad = _pixels(predictions, targets, max_val, mask, spatial_dims, allow_none=True)
    # An image with an empty mask has no error to report: 0, with a zero gradient.
    value = weighted_mean(_abs(diff), mask, image_axes(spatial_dims), 0.0)
    return nan_where(bad, value)


@_jit.jit_public(
    ("spatial_dims",), checks={"max_val": _check_max_val, "mask": _validation.check_mask_values}
)
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
    diff, mask, bad = _pixels(predictions, targets, max_val, mask, spatial_dims, allow_none=False)
    mse = weighted_mean(jnp.square(diff), mask, image_axes(spatial_dims), 0.0)
    zero = mse == 0
    # log of a zero MSE would make the gradient NaN; report inf with zero gradient.
    value = 10.0 * jnp.log10(1.0 / jnp.where(zero, 1.0, mse))
    return nan_where(bad, jnp.where(zero, jnp.inf, value))
