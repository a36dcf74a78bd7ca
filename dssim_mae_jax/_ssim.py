"""SSIM, DSSIM and MS-SSIM with an analytic, recompute-based gradient."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from dssim_mae_jax import _filters, _jit, _metrics, _validation

# MS-SSIM scale weights of Wang, Simoncelli & Bovik (2003). They sum to 1.0001;
# kept as published, as the MATLAB reference and tf.image.ssim_multiscale do.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# Below this filtered-mask weight a position sees no valid pixel at all.
_MIN_SUPPORT = 1e-10
# MS-SSIM: the derivative of v**w (w < 1) grows without bound as v -> 0+; it is
# evaluated at max(v, _POW_GRAD_FLOOR) so gradients stay finite for any input.
_POW_GRAD_FLOOR = 1e-4


class _Spec(NamedTuple):
    """Static description of one SSIM evaluation (hashable, for custom_vjp)."""

    taps: tuple[float, ...]
    spatial_dims: int
    padding: str

    @property
    def axes(self) -> tuple[int, ...]:
        return tuple(range(-1 - self.spatial_dims, -1))


def _pad(spec: _Spec, x: jnp.ndarray, constant: float = 0.0) -> jnp.ndarray:
    return _filters.pad_spatial(x, spec.axes, len(spec.taps), spec.padding, constant)


class _Centered(NamedTuple):
    """Padded, centred images and the constants taken out of them."""

    xp: jnp.ndarray  # pad(x) - cx
    yp: jnp.ndarray  # pad(y) - cy, formed as xp - dp
    dp: jnp.ndarray  # pad(x - y) - cd
    mp: jnp.ndarray | None  # padded mask
    inv_w: jnp.ndarray | None  # 1 / filtered mask (0 where no support)
    cx: jnp.ndarray  # mean of x
    cy: jnp.ndarray  # cx - cd
    cd: jnp.ndarray  # mean of x - y


def _moments(spec: _Spec, x, y, mask):
    """The four local moment maps SSIM needs, from padded, centred images.

    Moments: the local means ``mx`` of ``x' = x - cx`` and ``md`` of
    ``d' = (x - y) - cd``, and the local ``E[x'^2 + y'^2]`` and ``E[d'^2]``,
    with ``y' = x' - d'``; ``cx`` and ``cd`` are per-image, per-channel means
    (constants: (co)variances do not depend on them, but float32 no longer
    cancels ``E[x^2] - E[x]^2`` catastrophically). From these,
    ``B1 - A1 = (mu_x - mu_y)^2`` and ``B2 - A2 = var(x - y)`` come from the
    difference image alone, so they vanish exactly for identical images (SSIM
    exactly 1, gradient exactly 0, whatever fusion or FMA contraction the
    compiler chooses) and small dissimilarities keep their precision. One
    filtering fewer than the textbook five moments.
    """
    axes = spec.axes
    cx = lax.stop_gradient(jnp.mean(x, axis=axes, keepdims=True))
    cd = lax.stop_gradient(jnp.mean(x - y, axis=axes, keepdims=True))
    xp = _pad(spec, x)
    dp = _pad(spec, x - y)
    # The same constants, laid out for the filtering method (see _filters.spread_channels).
    xp = xp - _filters.spread_channels(cx, xp.shape)
    dp = dp - _filters.spread_channels(cd, dp.shape)
    yp = xp - dp
    # All maps are filtered in one call: the per-backend method may share work
    # between them (see _filters.filter_valid_many).
    filt = functools.partial(_filters.filter_valid_many, taps=spec.taps, axes=axes)
    if mask is None:
        mp = inv_w = None
        moments = filt((xp, dp, xp * xp + yp * yp, dp * dp))
    else:
        # "same" treats the zero padding as data, so the padded mask is one there;
        # with an all-ones mask the filtered mask is exactly 1 and the result is the
        # unmasked one up to rounding (XLA may fuse the weighted filtering differently).
        mp = _pad(spec, mask, constant=1.0)
        w, *sums = filt([mp] + [mp * v for v in (xp, dp, xp * xp + yp * yp, dp * dp)])
        ok = w > _MIN_SUPPORT
        # Positions that see no valid pixel get zero moments (and SSIM 1).
        inv_w = jnp.where(ok, 1.0 / jnp.where(ok, w, 1.0), 0.0)
        moments = tuple(v * inv_w for v in sums)
    return _Centered(xp, yp, dp, mp, inv_w, cx, cx - cd, cd), moments


def _maps(moments, centered: _Centered, c1, c2):
    """SSIM and contrast-structure maps plus the terms their gradient needs."""
    mx, md, e_sum, e_diff = moments
    my = mx - md
    mu_x, mu_y = mx + centered.cx, my + centered.cy
    dm = md + centered.cd  # mu_x - mu_y
    dl = dm * dm  # B1 - A1
    vd = e_diff - md * md  # var(x - y) = B2 - A2
    # A1 directly (it is tiny for very different means, where B1 - dl would
    # cancel); B1 = A1 + dl is then exactly A1 for identical images.
    a1 = 2.0 * (mu_x * mu_y) + c1
    b1 = a1 + dl
    b2 = (e_sum - mx * mx - my * my) + c2
    a2 = b2 - vd
    d = b1 * b2
    s = (a1 * a2) / d
    cs = a2 / b2
    return s, cs, (mx, my, mu_x, mu_y, md, dm, dl, vd, a1, b1, a2, b2, d)


def _over_chunks(spec: _Spec, fn, arrays):
    """``fn(*arrays)``, the leading batch processed in sequential chunks.

    `arrays` (None allowed) and the outputs of `fn` are ``[..., *spatial, C]``
    with the same leading batch; :func:`_filters.batch_chunks` picks the number
    of chunks from the static shapes (one, i.e. no loop, for small batches and
    on GPU/TPU). Everything is per image, so chunks are independent.
    """
    trailing = spec.spatial_dims + 1
    ref = arrays[0]
    lead = ref.shape[: ref.ndim - trailing]
    n = math.prod(lead)
    count = _filters.batch_chunks(n, math.prod(ref.shape[ref.ndim - trailing :]))
    if count == 1:
        return fn(*arrays)

    def split(a):
        return None if a is None else a.reshape(count, n // count, *a.shape[a.ndim - trailing :])

    out = lax.map(lambda args: fn(*args), tuple(split(a) for a in arrays))
    return jax.tree.map(lambda o: o.reshape(*lead, *o.shape[2:]), out)


def _ssim_cs(spec: _Spec, x, y, mask, c1, c2):
    centered, moments = _moments(spec, x, y, mask)
    s, cs, _ = _maps(moments, centered, c1, c2)
    return s, cs


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ssim_cs_maps(spec: _Spec, x, y, mask, c1, c2):
    """(SSIM map, contrast-structure map), each [..., *out_spatial, C]."""
    return _over_chunks(spec, lambda a, b, m: _ssim_cs(spec, a, b, m, c1, c2), (x, y, mask))


def _ssim_cs_maps_fwd(spec, x, y, mask, c1, c2):
    # (symbolic_zeros: each array argument comes wrapped, its value in `.value`.)
    x, y, mask, c1, c2 = (None if v is None else v.value for v in (x, y, mask, c1, c2))
    # Save only the inputs: the backward pass recomputes the four moment maps,
    # which costs less memory than keeping them and little extra time.
    return _ssim_cs_maps(spec, x, y, mask, c1, c2), (x, y, mask, c1, c2)


def _ssim_cs_grads(spec: _Spec, x, y, mask, gs, gc, c1, c2):
    """Gradients of sum(gs * SSIM map + gc * cs map) w.r.t. x and y.

    A cotangent of None is zero, and its terms are left out (`ssim` uses only
    the SSIM map, MS-SSIM one of the two maps per scale).
    """
    c, moments = _moments(spec, x, y, mask)
    _, _, terms = _maps(moments, c, c1, c2)
    mx, my, mu_x, mu_y, md, dm, dl, vd, a1, b1, a2, b2, d = terms

    # Derivatives of gs * S + gc * cs w.r.t. the local means of x' and y' and
    # the two second moments (DOMAIN.md section 5 rewritten for A1,
    # dl = B1 - A1, B2 and vd = B2 - A2). Every term carries a factor that is
    # exactly zero when x == y (dl, dm, md, vd, dp), so identical images get
    # an exactly zero gradient.
    r = vd / b2
    if gs is None:
        q = gc / b2  # d/dA2
        d_mx = 2.0 * (q * (md - r * mx))
        d_my = -2.0 * (q * (md + r * my))
    else:
        q = gs * (a1 / d) if gc is None else gs * (a1 / d) + gc / b2
        s_lum = gs * (a2 / d)
        d_mx = 2.0 * (s_lum * (mu_y * dl - a1 * dm) / b1 + q * (md - r * mx))
        d_my = 2.0 * (s_lum * (mu_x * dl + a1 * dm) / b1 - q * (md + r * my))
    d_sum = r * q
    d_diff = -q

    if c.inv_w is not None:
        d_mx, d_my, d_sum, d_diff = (v * c.inv_w for v in (d_mx, d_my, d_sum, d_diff))
    filt_t = functools.partial(_filters.filter_valid_transpose_many, taps=spec.taps, axes=spec.axes)
    # Two groups, so that a gradient w.r.t. x alone (training) never filters d_my.
    t_mx, t_sum, t_diff = filt_t((d_mx, d_sum, d_diff))
    (t_my,) = filt_t((d_my,))
    f_diff = 2.0 * c.dp * t_diff
    gxp = t_mx + 2.0 * c.xp * t_sum + f_diff
    gyp = t_my + 2.0 * c.yp * t_sum - f_diff
    if c.mp is not None:
        gxp, gyp = c.mp * gxp, c.mp * gyp
    # The padding is linear; its adjoint folds border contributions back.
    _, pad_vjp = jax.vjp(lambda z: _pad(spec, z), x)
    (gx,) = pad_vjp(gxp)
    (gy,) = pad_vjp(gyp)
    return gx, gy


def _ssim_cs_maps_bwd(spec, residuals, cotangents):
    x, y, mask, c1, c2 = residuals
    # Zero cotangents come as symbolic zeros: their terms are skipped.
    gs, gc = (None if isinstance(v, SymbolicZero) else v for v in cotangents)
    if gs is None and gc is None:
        return None, None, None, None, None
    gx, gy = _over_chunks(
        spec,
        lambda a, b, m, s, c: _ssim_cs_grads(spec, a, b, m, s, c, c1, c2),
        (x, y, mask, gs, gc),
    )
    return gx, gy, None, None, None


_ssim_cs_maps.defvjp(_ssim_cs_maps_fwd, _ssim_cs_maps_bwd, symbolic_zeros=True)


def _constants(k1, k2, dtype):
    """C1 and C2 of images divided by their data range: ``k1^2`` and ``k2^2``."""
    constants = []
    for name, k in (("k1", k1), ("k2", k2)):
        _validation.check_nonnegative(name, k)
        if float(k) > math.sqrt(float(np.finfo(dtype).max)):
            raise ValueError(f"`{name}` ** 2 must be finite in {np.dtype(dtype).name}, got {k}.")
        constants.append(jnp.asarray(float(k) ** 2, dtype))
    return tuple(constants)


def _unit_mean(values, weights, axes, deficits=None):
    """Weighted mean of values <= 1 over `axes`, as (mean, 1 - mean).

    Both the values and their deficits ``1 - values`` are averaged and each
    result is taken from the better-conditioned one: near 1 from the deficits
    (a map of exact ones stays exactly 1 even where XLA divides by multiplying
    with a rounded reciprocal, and small dissimilarities keep their digits),
    below 1/2 from the values (tiny similarities keep their relative
    precision). All-zero weights give (1, 0): nothing observed, nothing lost;
    NaN weights or values give NaN. Weighted sums are divided by the total
    weight, as ``jnp.mean`` divides by the count, so all-ones weights give
    exactly the unweighted mean.
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


def _center_weights(spec: _Spec, mask):
    """Per-position weights of the map: the mask at each window's centre."""
    if mask is None or spec.padding != "valid":
        return mask
    return _filters.crop_to_centers(mask, spec.axes, len(spec.taps))


def ms_ssim_min_size(filter_size: int, num_scales: int) -> int:
    """The smallest spatial size MS-SSIM with `num_scales` scales accepts.

    Each 2x pooling halves a size (rounding up: odd sizes repeat their last
    sample), and the coarsest scale must still hold `filter_size` samples:
    ``ceil(n / 2**(num_scales - 1)) >= filter_size``, i.e.
    ``n >= (filter_size - 1) * 2**(num_scales - 1) + 1`` (161 for the
    default 11 taps and 5 scales, as ``tf.image.ssim_multiscale`` requires).
    """
    return (filter_size - 1) * 2 ** (num_scales - 1) + 1


def _window_size(window, filter_size) -> tuple[str | tuple[float, ...], int]:
    """(checked window, number of taps): a data window sets the size."""
    window = _validation.check_window(window)
    if filter_size is not None:
        _validation.check_positive("filter_size", filter_size, integer=True)
    if isinstance(window, tuple):
        if filter_size is not None and filter_size != len(window):
            raise ValueError(
                f"`filter_size` ({filter_size}) must be None or the number of taps of `window` "
                f"({len(window)}) when `window` is a sequence of taps."
            )
        return window, len(window)
    return window, 11 if filter_size is None else filter_size


class _Prepared(NamedTuple):
    """Validated inputs of one SSIM evaluation, divided by `max_val`."""

    spec: _Spec
    x: jnp.ndarray
    y: jnp.ndarray
    mask: jnp.ndarray | None  # broadcast to the images, constant
    c1: jnp.ndarray
    c2: jnp.ndarray
    bad: jnp.ndarray  # per image: a NaN or inf among the valid pixels


def _inputs(predictions, targets, spatial_dims):
    _validation.check_spatial_dims(spatial_dims)
    return _validation.as_float_pair(predictions, targets, min_rank=spatial_dims + 1)


def _prepare(
    x, y, *, max_val, filter_size, filter_sigma, k1, k2, window, padding, spatial_dims, mask
) -> _Prepared:
    """Checks the options and returns the images ready for :func:`_ssim_cs_maps`.

    `x` and `y` come from :func:`_inputs`. Masked-out pixels are zeroed before
    any arithmetic (whatever they hold, NaN included, reaches neither values
    nor gradients), and both images are divided by `max_val`, so that the
    statistics (with ``C1 = k1^2``, ``C2 = k2^2``) and their gradients do not
    depend on the data range.
    """
    window, filter_size = _window_size(window, filter_size)
    _validation.check_positive("filter_sigma", filter_sigma)
    _validation.check_choice("padding", padding, _validation.PADDINGS)
    _validation.check_min_size(
        x.shape, spatial_dims, filter_size, f"the window has filter_size={filter_size} taps"
    )
    _validation.check_positive("max_val", max_val)
    max_val = jnp.asarray(max_val, x.dtype)
    if max_val.ndim != 0:
        raise ValueError(f"`max_val` must be a scalar, got shape {max_val.shape}.")
    c1, c2 = _constants(k1, k2, x.dtype)
    mask = _validation.broadcast_mask(mask, x.shape, x.dtype)
    if mask is not None:
        # Masks are constant weights: no gradient flows into them.
        mask = lax.stop_gradient(mask)
    x, y = _metrics.zero_masked_out(mask, x, y)
    bad = _metrics.nonfinite_images(x, y, spatial_dims)
    taps = _filters.window_taps(window, filter_size, filter_sigma, x.dtype)
    spec = _Spec(taps, spatial_dims, padding)
    x, y = _metrics.scale_pair(_metrics.reciprocal(max_val), x, y)
    return _Prepared(spec, x, y, mask, c1, c2, bad)


def _ssim_or_dssim(predictions, targets, *, half_deficit, spatial_dims, return_map, **options):
    """:func:`ssim` (or, with `half_deficit`, :func:`dssim`) per image or as a map."""
    _validation.check_bool("return_map", return_map)
    x, y = _inputs(predictions, targets, spatial_dims)
    p = _prepare(x, y, spatial_dims=spatial_dims, **options)
    s_map, _ = _ssim_cs_maps(p.spec, p.x, p.y, p.mask, p.c1, p.c2)
    if return_map:
        value = (1.0 - s_map) / 2.0 if half_deficit else s_map
        return _metrics.nan_where(p.bad, value, spatial_dims + 1)
    mean, deficit = _per_image_mean(p.spec, s_map, p.mask)
    return _metrics.nan_where(p.bad, deficit / 2.0 if half_deficit else mean)


def _per_image_mean(spec: _Spec, s_map, mask):
    """(mean SSIM, mean 1 - SSIM) per image: over positions, then channels."""
    per_channel, per_channel_deficit = _unit_mean(s_map, _center_weights(spec, mask), spec.axes)
    return _unit_mean(per_channel, None, -1, per_channel_deficit)


def _check_max_val(value):
    _validation.check_positive("max_val", value)


# Arguments of the public functions checked on their concrete values before
# the compiled call (see _jit.jit_public).
_CHECKS = {"max_val": _check_max_val, "mask": _validation.check_mask_values}
_SSIM_STATIC = (
    "filter_size",
    "filter_sigma",
    "k1",
    "k2",
    "window",
    "padding",
    "spatial_dims",
    "return_map",
)


@_jit.jit_public(_SSIM_STATIC, checks=_CHECKS)
def ssim(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike,
    filter_size: int | None = None,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    window: str | Sequence[float] = "gaussian",
    padding: str = "valid",
    spatial_dims: int = 2,
    mask: ArrayLike | None = None,
    return_map: bool = False,
) -> jax.Array:
    r"""Structural similarity (SSIM) of each image in a batch.

    Per channel, with local statistics from a normalised separable window G::

      SSIM = (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2))

    with ``C1 = (k1 * max_val)^2`` and ``C2 = (k2 * max_val)^2`` and population
    (co)variances. The map is averaged over positions, then over channels.

    With the defaults this is the SSIM of Wang et al. (2004) exactly as
    ``tf.image.ssim`` and ``dm_pix.ssim`` compute it, and as
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=max_val, channel_axis=-1)``:
    11-tap Gaussian (sigma 1.5), statistics only where the window fits.

    Other semantics are options:

    * ``padding="same"``: zero padding, mean over the full map (3D Gaussian
      Splatting, fused-ssim).
    * ``padding="reflect"``: mirror padding without repeating the edge sample
      (numpy ``"reflect"``; kornia, torchmetrics >= Sept. 2024, monodepth2), full map.
    * ``window="uniform"``: a ``filter_size`` box window (monodepth2 uses a
      3x3 box with reflect padding), or ``window=`` any 1-D sequence of taps.
    * ``spatial_dims=3`` for volumes ``[..., D, H, W, C]`` (the same separable
      window along the third axis), ``spatial_dims=1`` for signals ``[..., L, C]``.

    Both images are divided by ``max_val`` first (then ``C1 = k1^2``,
    ``C2 = k2^2``), so values and gradients do not depend on the data range
    (float32 is accurate from ``max_val=1e-12`` to ``1e12``). Statistics are
    computed in float32 (float64 for float64 inputs) from elementwise
    operations only, so TF32/bf16 matmul defaults cannot degrade them; the
    window taps sum to exactly 1 in that dtype. The gradient is analytic (a
    custom VJP that recomputes the local moments) and finite for every finite
    input; it is exactly zero where ``predictions == targets``. An image with
    a NaN or inf among its (unmasked) pixels gets NaN, never a score. The
    function is compiled once per shape and options, also when called eagerly.

    Args:
      predictions: images ``[..., H, W, C]`` (any float dtype, or integers, which
        are converted to float32; give the matching ``max_val``, e.g. 255).
      targets: images of the same shape.
      max_val: the data range ``L`` (1.0 for [0, 1] data, 255 for uint8). A
        positive scalar; it may be a traced array (treated as a constant: no
        gradient flows into it).
      filter_size: window size in taps along each spatial axis; None means 11
        for a named window and the number of taps for a window given as data.
        Options (``filter_size``, ``k1``, ...) may be Python or NumPy scalars
        or concrete 0-d arrays, not traced values.
      filter_sigma: standard deviation of the Gaussian window (ignored for
        other windows).
      k1: luminance stabiliser constant.
      k2: contrast stabiliser constant.
      window: ``"gaussian"``, ``"uniform"``, or the 1-D taps of a separable
        window as a sequence of finite numbers >= 0 (scaled to sum 1), as
        ``dm_pix.ssim(filter_fn=...)`` or ``pytorch_msssim`` ``win=`` allow.
      padding: ``"valid"``, ``"same"`` or ``"reflect"``.
      spatial_dims: number of spatial axes before the channel axis (1, 2 or 3).
      mask: optional weights broadcastable to the images (``[..., H, W, 1]`` or
        ``[..., H, W, C]``), 1 for valid pixels and 0 for invalid ones. Local
        statistics use only valid pixels (normalised by the filtered mask) and
        the map is averaged with the mask at each window's centre as weight.
        Masked-out pixels are set to 0 before any arithmetic: what they hold
        (NaN and inf included) changes neither the value nor the gradient. An
        image (channel) whose weights are all zero gets SSIM 1. With
        ``padding="same"`` the zero padding counts as valid data, so an
        all-ones mask gives the unmasked result (to float rounding: a few
        ulp, as XLA compiles the weighted statistics differently). The mask is treated as
        constant weights (no gradient flows into it); a concrete mask must be
        finite and >= 0 (a traced NaN weight gives NaN).
      return_map: return the per-channel SSIM map instead of its mean. Its shape
        is ``[..., H - filter_size + 1, W - filter_size + 1, C]`` for
        ``"valid"`` and ``[..., H, W, C]`` for ``"same"`` and ``"reflect"``
        (likewise for 1 or 3 spatial axes). With a mask, positions whose centre
        is masked out are not meaningful; weight them out.

    Returns:
      SSIM per image, shape ``predictions.shape[:-1 - spatial_dims]``, float32
      (float64 for float64 inputs); or the map when ``return_map=True``. NaN
      for an image holding NaN or inf.

    Raises:
      ValueError: mismatched shapes, too few dimensions, empty spatial or
        channel axes, a spatial size smaller than ``filter_size``, an unknown
        ``window``/``padding``, bad window taps, a non-positive
        ``filter_size``/``filter_sigma``/``max_val``, negative ``k1``/``k2``,
        a mask that does not broadcast or holds negative or non-finite weights.
      TypeError: non-numeric inputs, options of the wrong type (a non-int
        ``filter_size`` or ``spatial_dims``, a non-bool ``return_map``) or
        traced values given for options.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import ssim
      >>> x = jnp.linspace(0.0, 1.0, 32 * 32 * 3).reshape(1, 32, 32, 3)
      >>> float(ssim(x, x, max_val=1.0)[0])
      1.0
      >>> ssim(x, 1.0 - x, max_val=1.0).shape
      (1,)
      >>> float(ssim(x, x, max_val=1.0, window=[1, 2, 1])[0])
      1.0

    References:
      Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality
      assessment: from error visibility to structural similarity", IEEE TIP 13(4),
      2004. Default semantics match ``tf.image.ssim`` and ``dm_pix.ssim``.
    """
    return _ssim_or_dssim(
        predictions,
        targets,
        half_deficit=False,
        max_val=max_val,
        filter_size=filter_size,
        filter_sigma=filter_sigma,
        k1=k1,
        k2=k2,
        window=window,
        padding=padding,
        spatial_dims=spatial_dims,
        mask=mask,
        return_map=return_map,
    )


@_jit.jit_public(_SSIM_STATIC, checks=_CHECKS)
def dssim(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike,
    filter_size: int | None = None,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    window: str | Sequence[float] = "gaussian",
    padding: str = "valid",
    spatial_dims: int = 2,
    mask: ArrayLike | None = None,
    return_map: bool = False,
) -> jax.Array:
    """Structural dissimilarity ``(1 - SSIM) / 2``, in [0, 1], per image.

    This is the DSSIM of kornia, monodepth/monodepth2 and keras-contrib. Papers
    that write "DSSIM" for ``1 - SSIM`` (3D Gaussian Splatting, Zhao et al.) use
    twice this value; the losses in this package offer both forms
    (``dssim_form="half"`` or ``"full"``). NaN for an image holding NaN or inf.

    Args:
      predictions: images ``[..., H, W, C]``.
      targets: images of the same shape.
      max_val: the data range. See :func:`ssim` for every option.
      filter_size: see :func:`ssim`.
      filter_sigma: see :func:`ssim`.
      k1: see :func:`ssim`.
      k2: see :func:`ssim`.
      window: see :func:`ssim`.
      padding: see :func:`ssim`.
      spatial_dims: see :func:`ssim`.
      mask: see :func:`ssim`.
      return_map: return the per-pixel ``(1 - SSIM map) / 2`` instead.

    Returns:
      DSSIM per image (or its map), float32 (float64 for float64 inputs).

    Raises:
      ValueError: as :func:`ssim`.
      TypeError: as :func:`ssim`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import dssim
      >>> x = jnp.zeros((16, 16, 1))
      >>> float(dssim(x, x, max_val=1.0))
      0.0

    References:
      Z. Wang et al., IEEE TIP 2004 (SSIM); C. Godard et al., "Digging into
      self-supervised monocular depth estimation", ICCV 2019 (this DSSIM form).
    """
    return _ssim_or_dssim(
        predictions,
        targets,
        half_deficit=True,
        max_val=max_val,
        filter_size=filter_size,
        filter_sigma=filter_sigma,
        k1=k1,
        k2=k2,
        window=window,
        padding=padding,
        spatial_dims=spatial_dims,
        mask=mask,
        return_map=return_map,
    )


@jax.custom_jvp
def _relu_pow(v, w):
    """``max(v, 0) ** w`` with a finite derivative for finite v (0 for v <= 0); NaN stays NaN."""
    clipped = v <= 0
    return jnp.where(clipped, 0.0, jnp.where(clipped, 1.0, v) ** w)


@_relu_pow.defjvp
def _relu_pow_jvp(primals, tangents):
    v, w = primals
    dv, dw = tangents
    out = _relu_pow(v, w)
    clipped = v <= 0
    safe = jnp.where(clipped, 1.0, v)
    floored = jnp.maximum(safe, _POW_GRAD_FLOOR)
    d_v = jnp.where(clipped, 0.0, w * floored ** (w - 1.0))
    d_w = jnp.where(clipped, 0.0, out * jnp.log(safe))
    return out, d_v * dv + d_w * dw


def _pool2(x: jnp.ndarray, axes: tuple[int, ...]) -> jnp.ndarray:
    """2x average pooling along `axes`; odd sizes first repeat their last sample.

    This is tf.image.ssim_multiscale's rule in 2-D (symmetric padding of the
    bottom and right edges by the remainder, then VALID 2x2 pooling), applied
    to every spatial axis (2x2x2 for volumes).
    """
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis % x.ndim] = (0, x.shape[axis] % 2)
    if any(w[1] for w in widths):
        x = jnp.pad(x, widths, mode="symmetric")
    first = axes[0] % x.ndim
    shape = list(x.shape[:first])
    for axis in axes:
        shape += [x.shape[axis] // 2, 2]
    x = x.reshape(*shape, x.shape[-1])
    return jnp.mean(x, axis=tuple(range(first + 1, first + 2 * len(axes), 2)))


def _downsample(spec: _Spec, x, y, mask):
    """The next MS-SSIM scale of both images and of the mask.

    With a mask, the images are pooled as a normalised convolution (the
    pooled ``x * mask`` divided by the pooled mask, 0 where it is 0): masked-out
    pixels do not leak into the coarser scales, and the pooled mask weights the
    statistics there. An all-ones mask pools to exactly ones.
    """
    if mask is None:
        return _pool2(x, spec.axes), _pool2(y, spec.axes), None
    m = _pool2(mask, spec.axes)
    has = m > 0
    safe = jnp.where(has, m, 1.0)
    x = jnp.where(has, _pool2(x * mask, spec.axes) / safe, 0.0)
    y = jnp.where(has, _pool2(y * mask, spec.axes) / safe, 0.0)
    return x, y, m


def _scale_weights(shape, spatial_dims, filter_size, power_factors, fit_scales):
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


@_jit.jit_public(
    (
        "power_factors",
        "filter_size",
        "filter_sigma",
        "k1",
        "k2",
        "window",
        "spatial_dims",
        "fit_scales",
    ),
    checks=_CHECKS,
)
def ms_ssim(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike,
    power_factors: Sequence[float] = MS_SSIM_WEIGHTS,
    filter_size: int | None = None,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    window: str | Sequence[float] = "gaussian",
    spatial_dims: int = 2,
    mask: ArrayLike | None = None,
    fit_scales: bool = False,
) -> jax.Array:
    r"""Multi-scale SSIM of each image in a batch.

    ``MS-SSIM = prod_{j<M} cs_j^{w_j} * ssim_M^{w_M}`` per channel, then the mean
    over channels, where ``cs_j`` is the mean contrast-structure term
    ``(2 cov + C2) / (var_x + var_y + C2)`` at scale ``j`` and ``ssim_M`` the
    mean SSIM (luminance included) at the coarsest scale; scales are separated
    by 2x average pooling along every spatial axis (2x2 for images, 2x2x2 for
    volumes; odd sizes first repeat their last sample). Negative terms count as
    0, as in ``tf.image.ssim_multiscale``; the gradient stays finite there (it
    is 0 for a negative term, and evaluated at ``max(term, 1e-4)`` for a tiny
    positive one, where ``term ** w`` is infinitely steep). A NaN term stays
    NaN: an image holding NaN or inf gets NaN. Statistics are computed on the
    images divided by ``max_val`` (scale invariant), as in :func:`ssim`.

    With the defaults and without a mask this is ``tf.image.ssim_multiscale``
    (which matches the authors' MATLAB code). **With** ``fit_scales=True`` **and
    an image too small for every scale, it is not**: only as many scales are
    used as the image allows and their weights are renormalised to sum to 1.

    Args:
      predictions: images ``[..., H, W, C]`` (``[..., L, C]`` or
        ``[..., D, H, W, C]`` with ``spatial_dims``); every spatial size at
        least ``(filter_size - 1) * 2 ** (len(power_factors) - 1) + 1`` (161
        with the defaults) unless ``fit_scales=True``.
      targets: images of the same shape.
      max_val: the data range (a positive scalar, possibly traced; constant).
      power_factors: the weight of each scale, finest first (finite, >= 0,
        not all 0); its length is the number of scales. Kept as given (the
        published weights sum to 1.0001, as in TF and MATLAB).
      filter_size: window size in taps (None: 11, or the number of taps of a
        window given as data).
      filter_sigma: Gaussian window standard deviation.
      k1: luminance stabiliser constant.
      k2: contrast stabiliser constant.
      window: ``"gaussian"``, ``"uniform"`` or a 1-D sequence of taps, as in
        :func:`ssim`.
      spatial_dims: number of spatial axes before the channel axis (1, 2 or 3).
      mask: optional weights broadcastable to the images (1 valid, 0 invalid).
        Masked-out pixels are set to 0 before any arithmetic (NaN and inf
        included, they reach neither value nor gradient). The mask is pooled
        with the images at every scale (the images as a normalised
        convolution: pooled ``x * mask`` over the pooled mask), and at each
        scale the statistics are weighted as in :func:`ssim`. An all-ones mask
        gives the unmasked result (to float rounding, as in :func:`ssim`); an
        image whose mask is empty gets 1.
      fit_scales: use as many scales as the image allows (the largest ``M <=
        len(power_factors)`` whose minimum size it meets; the coarsest kept
        scale takes the full SSIM) with the first ``M`` weights renormalised to
        sum to 1. Not ``tf.image.ssim_multiscale`` when scales were dropped.
        Without it, a too-small image is an error.

    Returns:
      MS-SSIM per image, shape ``predictions.shape[:-1 - spatial_dims]``; NaN
      for an image holding NaN or inf.

    Raises:
      ValueError: as :func:`ssim`; images below the minimum size (without
        ``fit_scales``), bad ``power_factors``.
      TypeError: as :func:`ssim`, and a non-bool ``fit_scales``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import ms_ssim
      >>> x = jnp.linspace(0.0, 1.0, 161 * 161).reshape(161, 161, 1)
      >>> round(float(ms_ssim(x, x, max_val=1.0)), 4)
      1.0
      >>> small = jnp.linspace(0.0, 1.0, 64 * 64).reshape(64, 64, 1)
      >>> round(float(ms_ssim(small, small**2, max_val=1.0, fit_scales=True)), 4)
      0.8554

    References:
      Z. Wang, E. P. Simoncelli and A. C. Bovik, "Multiscale structural
      similarity for image quality assessment", Asilomar 2003. Matches
      ``tf.image.ssim_multiscale``. Masks: normalised convolution (H. Knutsson
      and C.-F. Westin, CVPR 1993), as discussed in pytorch-msssim issue #50.
    """
    power_factors = _validation.check_power_factors(power_factors)
    _validation.check_bool("fit_scales", fit_scales)
    x, y = _inputs(predictions, targets, spatial_dims)
    window, filter_size = _window_size(window, filter_size)
    weights = _scale_weights(x.shape, spatial_dims, filter_size, power_factors, fit_scales)
    p = _prepare(
        x,
        y,
        max_val=max_val,
        filter_size=filter_size,
        filter_sigma=filter_sigma,
        k1=k1,
        k2=k2,
        window=window,
        padding="valid",
        spatial_dims=spatial_dims,
        mask=mask,
    )
    spec, x, y, mask = p.spec, p.x, p.y, p.mask
    terms = []
    for level in range(len(weights)):
        if level:
            x, y, mask = _downsample(spec, x, y, mask)
        s_map, cs_map = _ssim_cs_maps(spec, x, y, mask, p.c1, p.c2)
        term_map = s_map if level == len(weights) - 1 else cs_map
        terms.append(_unit_mean(term_map, _center_weights(spec, mask), spec.axes)[0])
    stacked = jnp.stack(terms, axis=-1)
    exponents = jnp.asarray(weights, stacked.dtype).reshape((1,) * (stacked.ndim - 1) + (-1,))
    per_channel = jnp.prod(_relu_pow(stacked, exponents), axis=-1)
    return _metrics.nan_where(p.bad, _unit_mean(per_channel, None, -1)[0])
