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
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from dssim_mae_jax import _filters, _inputs, _jit, _reductions, _ssim, _ssim_maps, _validation

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

    spec: _ssim_maps.Spec  # "valid" statistics with the kept taps
    offset: int  # taps dropped at each end of the full `filter_size` window


def _windows(sigmas, filter_size, spatial_dims, dtype) -> tuple[_Window, ...]:
    """The windows of every sigma, each cut to the taps that can change a result.

    The taps of each are those of :func:`ssim`'s Gaussian window
    (:func:`_filters.window_taps`: ``filter_size`` taps summing to exactly 1
    in the compute dtype, taps below ``2**-(p + 2)`` set to 0). The zero taps
    at both ends are then left out, as pairs: they change no value, and they
    are most of a small sigma's window (sigma 0.5 keeps 5 of 31 taps in
    float32), so leaving them out saves filtering.
    """
    out = []
    for sigma in sigmas:
        taps = _filters.window_taps("gaussian", filter_size, sigma, dtype)
        offset = 0
        while filter_size - 2 * offset > 2 and taps[offset] == taps[-1 - offset] == 0.0:
            offset += 1
        kept = taps[offset : filter_size - offset]
        out.append(_Window(_ssim_maps.Spec(kept, spatial_dims, "valid"), offset))
    return tuple(out)


def _crop(v, axes, offset):
    """`v` without `offset` samples at both ends of every axis in `axes`."""
    if v is None or offset == 0:
        return v
    for axis in axes:
        v = lax.slice_in_dim(v, offset, v.shape[axis] - offset, axis=axis % v.ndim)
    return v


def multi_sigma_map(pair: _inputs.Pair, *, sigmas, filter_size, k1, k2, padding):
    """``l_largest * prod_s cs_s`` of a prepared pair, and the largest sigma's spec.

    The options are checked as :func:`ssim` checks them (with the window of
    the largest sigma). The images are padded once for every sigma, whose
    statistics are then "valid" ones; as in `ssim`, "same" treats the zero
    padding as data (mask 1 there). Each sigma's statistics are the valid
    ones of its kept taps on the images cropped by its offset: the same
    positions as the full window's. Written as ``SSIM_largest * prod_{s !=
    largest} cs_s`` (SSIM = l * cs), so no factor is ever divided by another
    (cs may be 0).
    """
    sigmas = check_sigmas(sigmas)
    spec, c1, c2 = _ssim_maps.make_spec(
        pair.x.shape,
        pair.x.dtype,
        filter_size=filter_size,
        filter_sigma=max(sigmas),
        k1=k1,
        k2=k2,
        window="gaussian",
        padding=padding,
        spatial_dims=pair.spatial_dims,
    )
    windows = _windows(sigmas, len(spec.taps), pair.spatial_dims, pair.x.dtype)
    largest = int(np.argmax(sigmas))
    x, y = _ssim_maps.pad(spec, pair.x), _ssim_maps.pad(spec, pair.y)
    mask = None if pair.mask is None else _ssim_maps.pad(spec, pair.mask, constant=1.0)
    out = None
    for i, (window_spec, offset) in enumerate(windows):
        crop = functools.partial(_crop, axes=window_spec.axes, offset=offset)
        want = ("s",) if i == largest else ("cs",)
        (factor,) = _ssim_maps.ssim_cs_maps(
            window_spec, crop(x), crop(y), crop(mask), c1, c2, want=want
        )
        out = factor if out is None else out * factor
    return out, spec


@_jit.jit_public(
    (
        "sigmas",
        "filter_size",
        "k1",
        "k2",
        "padding",
        "spatial_dims",
        "return_map",
        "implementation",
    ),
    check_all=_ssim.CHECK_CONCRETE,
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
    implementation: str | None = None,
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

    Derivatives are analytic (the rule of :func:`ssim`'s core for every
    factor, forward and reverse mode, ``docs/ssim_derivatives.md``) and
    finite for every finite input; the gradient is exactly zero, and the
    value exactly 1, where ``predictions == targets``. The function is
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
        nor the gradient, which is zero there. An all-ones mask gives the
        unmasked result to float rounding (as in :func:`ssim`); an image
        (channel) with no valid pixel gets 1.
        A concrete mask must be finite and >= 0 (a traced NaN weight gives NaN).
      return_map: return the per-channel map instead of its mean (shape as
        for :func:`ssim` with this ``filter_size`` and ``padding``).
      implementation: ``None`` or ``"xla"`` (the same, the only one here).
        ``"pallas"`` raises a ``ValueError``: the fused kernels compute the
        SSIM map, not the contrast-structure maps this product needs.

    Returns:
      MS-SSIM per image, shape ``predictions.shape[:-1 - spatial_dims]``,
      float32 (float64 for float64 inputs); or the map. NaN or inf in a valid
      pixel gives NaN (for the whole image, and its whole map).

    Raises:
      ValueError: mismatched shapes, too few dimensions, a spatial size
        below ``filter_size``, empty or non-positive ``sigmas``, an unknown
        ``padding``, a non-positive ``filter_size`` or ``max_val``, negative
        ``k1``/``k2``, a mask that does not broadcast or holds negative or
        non-finite weights, an unknown ``implementation`` or ``"pallas"``.
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
    _validation.check_bool("return_map", return_map)
    _ssim.resolve_implementation(implementation, pallas=_ssim.PALLAS_HAS_NO_CS)

    def per_chunk(pair):
        value_map, spec = multi_sigma_map(
            pair, sigmas=sigmas, filter_size=filter_size, k1=k1, k2=k2, padding=padding
        )
        # NaN or inf in a valid pixel: the image cannot be scored (explicitly, whatever
        # the arithmetic would make of it).
        if return_map:
            return _reductions.nan_where(pair.bad, value_map, spatial_dims + 1)
        centre = _reductions.center_weights(pair.mask, spec.axes, len(spec.taps), spec.padding)
        mean = _reductions.map_mean(value_map, centre, spatial_dims)[0]
        return _reductions.nan_where(pair.bad, mean)

    return _inputs.per_image(
        per_chunk, predictions, targets, max_val=max_val, mask=mask, spatial_dims=spatial_dims
    )
