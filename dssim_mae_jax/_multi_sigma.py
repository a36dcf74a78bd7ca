"""Full-resolution multi-sigma MS-SSIM (Zhao, Gallo, Frosio and Kautz, 2017).

Zhao et al. do not build an image pyramid: every "scale" is a Gaussian window
of another standard deviation over the same full-resolution pixels. At each
position the value is ``l_{sigma_max} * prod_sigma cs_sigma``: luminance from
the window of the largest sigma, contrast-structure from every window, no
exponents.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from dssim_mae_jax import _filters, _jit, _ssim, _validation

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


class _Window(NamedTuple):
    """One sigma's window: its taps, and how far inside the full window they start."""

    spec: _ssim._Spec  # "valid" statistics with the kept taps
    offset: int  # taps dropped at each end of the full `filter_size` window


def _windows(sigmas, filter_size, spatial_dims, dtype) -> tuple[_Window, ...]:
    """The windows of every sigma, each cut to the taps that can change a result.

    Taps are normalised over the full ``filter_size`` window; the end taps below
    ``eps**2`` of the centre tap (``eps`` of the compute dtype) are left out, as
    a pair. Their total weight is below ``1e-13`` for float32 (below ``1e-36``
    for float64), far under the rounding of any statistic, and they are most
    of a small sigma's window (sigma 0.5 keeps 7 of 31 taps in float32), so
    leaving them out saves filtering without changing a value.
    """
    floor = float(np.finfo(dtype).eps) ** 2
    out = []
    for sigma in sigmas:
        taps = _filters.gaussian_taps(filter_size, sigma)
        offset = 0
        while filter_size - 2 * offset > 2 and max(taps[offset], taps[-1 - offset]) < floor * max(
            taps
        ):
            offset += 1
        kept = taps[offset : filter_size - offset]
        out.append(_Window(_ssim._Spec(kept, spatial_dims, "valid"), offset))
    return tuple(out)


def _crop(v, axes, offset):
    """`v` without `offset` samples at both ends of every axis in `axes`."""
    if v is None or offset == 0:
        return v
    for axis in axes:
        v = lax.slice_in_dim(v, offset, v.shape[axis] - offset, axis=axis % v.ndim)
    return v


def _product_map(windows, largest: int, x, y, mask, c1, c2):
    """``l_largest * prod_s cs_s`` from padded images, each factor from the SSIM core.

    Each sigma's statistics are the valid ones of its kept taps on the images
    cropped by its offset: the same positions as the full window's. Written as
    ``SSIM_largest * prod_{s != largest} cs_s`` (SSIM = l * cs), so no factor is
    ever divided by another (cs may be 0). The analytic VJP of each factor
    recomputes its statistics; only the map a sigma contributes is
    differentiated (the other gets a symbolic zero cotangent, so its gradient
    terms are never computed).
    """
    out = None
    for i, (spec, offset) in enumerate(windows):
        crop = functools.partial(_crop, axes=spec.axes, offset=offset)
        s_map, cs_map = _ssim._ssim_cs_maps(spec, crop(x), crop(y), crop(mask), c1, c2)
        factor = s_map if i == largest else cs_map
        out = factor if out is None else out * factor
    return out


def _prepare(
    predictions, targets, *, max_val, sigmas, filter_size, k1, k2, padding, spatial_dims, mask
):
    """Checks every option; returns what `_product_map` and the mean need.

    That is (windows, index of the largest sigma, its full-window spec, padded x
    and y, padded mask, mask, c1, c2).
    """
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
    # Padded once for every sigma; the statistics are then "valid" ones. As in
    # `ssim`, "same" treats the zero padding as data (mask 1 there).
    axes = tuple(range(-1 - spatial_dims, -1))
    x, y = (_filters.pad_spatial(v, axes, filter_size, padding) for v in (x, y))
    padded_mask = (
        None if mask is None else _filters.pad_spatial(mask, axes, filter_size, padding, 1.0)
    )
    windows = _windows(sigmas, filter_size, spatial_dims, x.dtype)
    full = _ssim._Spec(_filters.gaussian_taps(filter_size, max(sigmas)), spatial_dims, padding)
    c1, c2 = jnp.asarray(k1 * k1, x.dtype), jnp.asarray(k2 * k2, x.dtype)
    return windows, int(np.argmax(sigmas)), full, x, y, padded_mask, mask, c1, c2


def _check_max_val(value) -> None:
    _validation.check_positive("max_val", value)


def check_mask_values(mask) -> None:
    """Concrete masks: weights >= 0 (traced ones are unknown until the call)."""
    if mask is None or isinstance(mask, bool):
        return
    try:
        values = np.asarray(mask)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if values.dtype != np.bool_ and np.issubdtype(values.dtype, np.number) and np.any(values < 0):
        raise ValueError("`mask` must hold weights >= 0 (1 valid, 0 invalid), got negative values.")


@_jit.jit_public(
    ("sigmas", "filter_size", "k1", "k2", "padding", "spatial_dims", "return_map"),
    checks={"max_val": _check_max_val, "mask": check_mask_values},
)
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
    the value exactly 1, where ``predictions == targets``. The function is
    compiled once per input shape and option values, also when called
    eagerly (the options are static; the images, ``max_val`` and ``mask`` may
    be traced).

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
      pixel gives NaN (for the whole image, and its whole map).

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
    windows, largest, full, x, y, padded_mask, mask, c1, c2 = _prepare(
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
    value_map = _product_map(windows, largest, x, y, padded_mask, c1, c2)
    # NaN or inf in a valid pixel: the image cannot be scored (explicitly, whatever
    # the arithmetic would make of it). Masked-out pixels are zeros by now.
    bad = ~jnp.all(jnp.isfinite(x) & jnp.isfinite(y), axis=tuple(range(-1 - spatial_dims, 0)))
    if return_map:
        return jnp.where(bad.reshape(bad.shape + (1,) * (spatial_dims + 1)), jnp.nan, value_map)
    return jnp.where(bad, jnp.nan, _ssim._per_image_mean(full, value_map, mask)[0])
