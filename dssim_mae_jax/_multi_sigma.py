"""Full-resolution multi-sigma MS-SSIM (Zhao, Gallo, Frosio and Kautz, 2017).

Zhao et al. do not build an image pyramid: every "scale" is a Gaussian window
of another standard deviation over the same full-resolution pixels. At each
position the value is ``l_{sigma_max} * prod_sigma cs_sigma``: luminance from
the window of the largest sigma, contrast-structure from every window, no
exponents.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from dssim_mae_jax import _filters, _ssim, _validation

# The standard deviations of the released loss layers (NVlabs/PL4NN, src/loss.py).
ZHAO_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)
# The window size: Zhao et al.'s 31x31 training patch (see `multi_sigma_ssim`).
ZHAO_FILTER_SIZE = 31


def check_sigmas(sigmas) -> tuple[float, ...]:
    """`sigmas` as a tuple of floats; raises unless a non-empty sequence of positive numbers."""
    if (
        not isinstance(sigmas, tuple | list)
        or not sigmas
        or not all(
            isinstance(s, numbers.Real) and not isinstance(s, bool) and 0 < s < np.inf
            for s in sigmas
        )
    ):
        raise ValueError(
            f"`sigmas` must be a non-empty sequence of positive finite numbers, got {sigmas!r}."
        )
    return tuple(float(s) for s in sigmas)


def _specs(sigmas, filter_size, spatial_dims, padding):
    """One SSIM spec per sigma (the same taps count and padding)."""
    return tuple(
        _ssim._Spec(_filters.gaussian_taps(filter_size, s), spatial_dims, padding) for s in sigmas
    )


def _product_map(specs, largest: int, x, y, mask, c1, c2):
    """``l_largest * prod_s cs_s``, each factor from the SSIM core and its analytic VJP.

    Written as ``SSIM_largest * prod_{s != largest} cs_s`` (SSIM = l * cs), so
    no factor is ever divided by another (cs may be 0). Only the map each
    sigma contributes is differentiated (the other one gets a symbolic zero
    cotangent, so its gradient terms are never computed).
    """
    out = None
    for i, spec in enumerate(specs):
        s_map, cs_map = _ssim._ssim_cs_maps(spec, x, y, mask, c1, c2)
        factor = s_map if i == largest else cs_map
        out = factor if out is None else out * factor
    return out


def _prepare(
    predictions, targets, *, max_val, sigmas, filter_size, k1, k2, padding, spatial_dims, mask
):
    """Checks every option; returns (specs, index of the largest sigma, x, y, mask, c1, c2)."""
    _validation.check_spatial_dims(spatial_dims)
    x, y = _validation.as_float_pair(predictions, targets, min_rank=spatial_dims + 1)
    sigmas = check_sigmas(sigmas)
    _validation.check_positive("filter_size", filter_size, integer=True)
    _validation.check_choice("padding", padding, _validation.PADDINGS)
    _validation.check_min_size(
        x.shape, spatial_dims, filter_size, f"the windows have filter_size={filter_size} taps"
    )
    _validation.check_positive("max_val", max_val)
    _validation.check_nonnegative("k1", k1)
    _validation.check_nonnegative("k2", k2)
    max_val = lax.stop_gradient(jnp.asarray(max_val, x.dtype))
    if max_val.ndim != 0:
        raise ValueError(f"`max_val` must be a scalar, got shape {max_val.shape}.")
    mask = _validation.broadcast_mask(mask, x.shape, x.dtype)
    if mask is not None:
        # Masked-out pixels never reach any arithmetic (a NaN times 0 is NaN):
        # they are replaced by zeros first; `where` sends them no gradient.
        mask = lax.stop_gradient(mask)
        valid = mask > 0
        x, y = jnp.where(valid, x, 0.0), jnp.where(valid, y, 0.0)
    # Statistics of the images divided by the data range, with C1 = k1^2 and
    # C2 = k2^2: the value does not depend on the units of the data.
    x, y = x / max_val, y / max_val
    specs = _specs(sigmas, filter_size, spatial_dims, padding)
    largest = int(np.argmax(sigmas))
    c1, c2 = jnp.asarray(k1 * k1, x.dtype), jnp.asarray(k2 * k2, x.dtype)
    return specs, largest, x, y, mask, c1, c2


def multi_sigma_ssim(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike,
    sigmas: tuple[float, ...] = ZHAO_SIGMAS,
    filter_size: int = ZHAO_FILTER_SIZE,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: str = "valid",
    spatial_dims: int = 2,
    mask: ArrayLike | None = None,
    return_map: bool = False,
) -> jax.Array:
    r"""Full-resolution multi-sigma MS-SSIM of each image (Zhao et al., as released).

    Per channel and position, with normalised separable Gaussian windows
    ``G_sigma`` of ``filter_size`` taps per axis, all over the same
    full-resolution pixels::

      MS-SSIM = l_{sigma_max} * prod_{sigma in sigmas} cs_sigma
      l  = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
      cs = (2 cov_xy + C2) / (var_x + var_y + C2)

    with ``C1 = k1^2`` and ``C2 = k2^2`` on the images divided by ``max_val``
    (so the value does not depend on the data's units) and population
    statistics. There are no exponents and no clipping: ``|cs| <= 1`` and
    ``|l| <= 1``, so the value lies in [-1, 1]; it is negative where an odd
    number of factors is negative (anti-correlated structure), and a product
    of negative factors can be positive. The map is averaged over positions,
    then over channels, exactly as :func:`ssim` does.

    Zhao, Gallo, Frosio and Kautz evaluate this at the centre of 31x31
    training patches, each window spanning the whole patch (NVlabs/PL4NN,
    ``src/loss.py``, classes ``MSSSIM`` and ``MSSSIML1``). With
    ``filter_size`` equal to an odd patch size and ``padding="valid"``, a
    patch has one position and this is exactly their per-patch value (their
    layer takes the luminance of the last sigma of its list, which is the
    largest for theirs). On larger images each position gets that value for
    the patch centred there: the sliding-window form the PyTorch ports use
    (kornia's ``MS_SSIMLoss``: 33 taps, i.e. ``4 * sigma_max + 1``, zero
    padding; ``filter_size=33, padding="same"`` here).

    The default ``filter_size=31`` is the authors' patch size, so every map
    value is the released layer's value on the 31x31 patch around it (the
    sigma-8 window is then cut at 1.9 sigma, as theirs is).

    The gradient is analytic (the custom VJP of :func:`ssim`'s core for
    every factor) and finite for every finite input; it is exactly zero, and
    the value exactly 1, where ``predictions == targets``.

    Args:
      predictions: images ``[..., H, W, C]`` (``spatial_dims`` axes before
        the channels; integers are converted to float32).
      targets: images of the same shape.
      max_val: the data range (1.0 for [0, 1] data, 255 for uint8); a positive
        scalar, possibly traced (no gradient flows into it).
      sigmas: the standard deviations of the Gaussian windows, in pixels.
        Luminance uses the largest.
      filter_size: taps per axis of every window (31: one Zhao patch).
      k1: luminance stabiliser constant.
      k2: contrast stabiliser constant.
      padding: ``"valid"`` (statistics only where the window fits),
        ``"same"`` (zero padding, full map) or ``"reflect"``.
      spatial_dims: spatial axes before the channel axis (1, 2 or 3).
      mask: optional weights broadcastable to the images, 1 valid and 0
        invalid. Local statistics use only valid pixels and the map is
        averaged with the mask at each window's centre, as in :func:`ssim`.
        Masked-out pixels are replaced by zeros before any arithmetic, so
        whatever they hold (NaN and inf included) changes neither the value
        nor the gradient, which is zero there. An all-ones mask gives exactly
        the unmasked result; an image (channel) with no valid pixel gets 1.
      return_map: return the per-channel map instead of its mean (shape as
        for :func:`ssim` with this ``filter_size`` and ``padding``).

    Returns:
      MS-SSIM per image, shape ``predictions.shape[:-1 - spatial_dims]``,
      float32 (float64 for float64 inputs); or the map. NaN or inf in a valid
      pixel gives NaN.

    Raises:
      ValueError: mismatched shapes, too few dimensions, a spatial size
        below ``filter_size``, empty or non-positive ``sigmas``, an unknown
        ``padding``, a non-positive ``filter_size`` or ``max_val``, a mask
        that does not broadcast.
      TypeError: non-numeric inputs or options of the wrong type.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import multi_sigma_ssim
      >>> x = jnp.linspace(0.0, 1.0, 2 * 31 * 31 * 3).reshape(2, 31, 31, 3)
      >>> multi_sigma_ssim(x, x, max_val=1.0).tolist()
      [1.0, 1.0]
      >>> multi_sigma_ssim(x, 0.5 * x, max_val=1.0, filter_size=11, return_map=True).shape
      (2, 21, 21, 3)

    References:
      H. Zhao, O. Gallo, I. Frosio and J. Kautz, "Loss functions for image
      restoration with neural networks", IEEE TCI 3(1), 2017; their released
      layers NVlabs/PL4NN ``src/loss.py`` (``MSSSIM``). kornia
      ``kornia.losses.MS_SSIMLoss`` (the sliding-window form).
    """
    specs, largest, x, y, mask, c1, c2 = _prepare(
        predictions,
        targets,
        max_val=max_val,
        sigmas=sigmas,
        filter_size=filter_size,
        k1=k1,
        k2=k2,
        padding=padding,
        spatial_dims=spatial_dims,
        mask=mask,
    )
    value_map = _product_map(specs, largest, x, y, mask, c1, c2)
    if return_map:
        return value_map
    return _ssim._per_image_mean(specs[largest], value_map, mask)[0]
