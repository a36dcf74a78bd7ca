"""SSIM, DSSIM and MS-SSIM with an analytic, recompute-based gradient."""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from dssim_mae_jax import _filters, _validation

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
        # with an all-ones mask the result is then exactly the unmasked one.
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


def _constants(max_val, k1, k2, dtype):
    _validation.check_positive("max_val", max_val)
    _validation.check_nonnegative("k1", k1)
    _validation.check_nonnegative("k2", k2)
    # The data range is a constant of the metric: no gradient flows into it.
    max_val = lax.stop_gradient(jnp.asarray(max_val, dtype))
    if max_val.ndim != 0:
        raise ValueError(f"`max_val` must be a scalar, got shape {max_val.shape}.")
    return (k1 * max_val) ** 2, (k2 * max_val) ** 2


def _unit_mean(values, weights, axes, deficits=None):
    """Weighted mean of values <= 1 over `axes`, as (mean, 1 - mean).

    Both the values and their deficits ``1 - values`` are averaged and each
    result is taken from the better-conditioned one: near 1 from the deficits
    (a map of exact ones stays exactly 1 even where XLA divides by multiplying
    with a rounded reciprocal, and small dissimilarities keep their digits),
    below 1/2 from the values (tiny similarities keep their relative
    precision). All-zero weights give (1, 0): nothing observed, nothing lost.
    """
    if deficits is None:
        deficits = 1.0 - values
    if weights is None:
        mean, deficit = jnp.mean(values, axis=axes), jnp.mean(deficits, axis=axes)
    else:
        total = jnp.sum(weights, axis=axes)
        has = total > 0
        inv = jnp.where(has, 1.0 / jnp.where(has, total, 1.0), 0.0)
        mean = jnp.where(has, jnp.sum(values * weights, axis=axes) * inv, 1.0)
        deficit = jnp.sum(deficits * weights, axis=axes) * inv
    small = mean < 0.5
    return jnp.where(small, mean, 1.0 - deficit), jnp.where(small, 1.0 - mean, deficit)


def _center_weights(spec: _Spec, mask):
    """Per-position weights of the map: the mask at each window's centre."""
    if mask is None or spec.padding != "valid":
        return mask
    return _filters.crop_to_centers(mask, spec.axes, len(spec.taps))


def ssim(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    window: str = "gaussian",
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
      3x3 box with reflect padding).
    * ``spatial_dims=3`` for volumes ``[..., D, H, W, C]`` (the same separable
      window along the third axis), ``spatial_dims=1`` for signals ``[..., L, C]``.

    Statistics are computed in float32 (float64 for float64 inputs) from
    elementwise operations only, so TF32/bf16 matmul defaults cannot degrade
    them. The gradient is analytic (a custom VJP that recomputes the local
    moments) and finite for every finite input; it is exactly zero where
    ``predictions == targets``.

    Args:
      predictions: images ``[..., H, W, C]`` (any float dtype, or integers, which
        are converted to float32; give the matching ``max_val``, e.g. 255).
      targets: images of the same shape.
      max_val: the data range ``L`` (1.0 for [0, 1] data, 255 for uint8). A
        positive scalar; it may be a traced array (treated as a constant: no
        gradient flows into it).
      filter_size: window size in taps along each spatial axis.
      filter_sigma: standard deviation of the Gaussian window (ignored for
        ``window="uniform"``).
      k1: luminance stabiliser constant.
      k2: contrast stabiliser constant.
      window: ``"gaussian"`` or ``"uniform"``.
      padding: ``"valid"``, ``"same"`` or ``"reflect"``.
      spatial_dims: number of spatial axes before the channel axis (1, 2 or 3).
      mask: optional weights broadcastable to the images (``[..., H, W, 1]`` or
        ``[..., H, W, C]``), 1 for valid pixels and 0 for invalid ones. Local
        statistics use only valid pixels (normalised by the filtered mask) and
        the map is averaged with the mask at each window's centre as weight. An
        image (channel) whose weights are all zero gets SSIM 1. With
        ``padding="same"`` the zero padding counts as valid data, so an
        all-ones mask gives exactly the unmasked result. The mask is treated as
        constant weights (no gradient flows into it).
      return_map: return the per-channel SSIM map instead of its mean. Its shape
        is ``[..., H - filter_size + 1, W - filter_size + 1, C]`` for
        ``"valid"`` and ``[..., H, W, C]`` for ``"same"`` and ``"reflect"``
        (likewise for 1 or 3 spatial axes). With a mask, positions whose centre
        is masked out are not meaningful; weight them out.

    Returns:
      SSIM per image, shape ``predictions.shape[:-1 - spatial_dims]``, float32
      (float64 for float64 inputs); or the map when ``return_map=True``.

    Raises:
      ValueError: mismatched shapes, too few dimensions, a spatial size smaller
        than ``filter_size``, an unknown ``window``/``padding``, a non-positive
        ``filter_size``/``filter_sigma``/``max_val``, a mask that does not
        broadcast.
      TypeError: non-numeric inputs or options of the wrong type.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import ssim
      >>> x = jnp.linspace(0.0, 1.0, 32 * 32 * 3).reshape(1, 32, 32, 3)
      >>> float(ssim(x, x, max_val=1.0)[0])
      1.0
      >>> ssim(x, 1.0 - x, max_val=1.0).shape
      (1,)

    References:
      Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality
      assessment: from error visibility to structural similarity", IEEE TIP 13(4),
      2004. Default semantics match ``tf.image.ssim`` and ``dm_pix.ssim``.
    """
    spec, s_map, mask = _ssim_map(predictions, targets, **_options(locals()))
    if return_map:
        return s_map
    return _per_image_mean(spec, s_map, mask)[0]


_OPTION_NAMES = (
    "max_val",
    "filter_size",
    "filter_sigma",
    "k1",
    "k2",
    "window",
    "padding",
    "spatial_dims",
    "mask",
)


def _options(namespace: dict) -> dict:
    return {name: namespace[name] for name in _OPTION_NAMES}


def _ssim_map(predictions, targets, *, spatial_dims, **options):
    """Validates the inputs and returns (spec, SSIM map, broadcast mask)."""
    _validation.check_spatial_dims(spatial_dims)
    x, y = _validation.as_float_pair(predictions, targets, min_rank=spatial_dims + 1)
    spec, mask, c1, c2 = _prepare(x, spatial_dims=spatial_dims, **options)
    s_map, _ = _ssim_cs_maps(spec, x, y, mask, c1, c2)
    return spec, s_map, mask


def _per_image_mean(spec: _Spec, s_map, mask):
    """(mean SSIM, mean 1 - SSIM) per image: over positions, then channels."""
    per_channel, per_channel_deficit = _unit_mean(s_map, _center_weights(spec, mask), spec.axes)
    return _unit_mean(per_channel, None, -1, per_channel_deficit)


def _prepare(x, *, max_val, filter_size, filter_sigma, k1, k2, window, padding, spatial_dims, mask):
    _validation.check_positive("filter_size", filter_size, integer=True)
    _validation.check_positive("filter_sigma", filter_sigma)
    _validation.check_choice("window", window, _validation.WINDOWS)
    _validation.check_choice("padding", padding, _validation.PADDINGS)
    _validation.check_min_size(
        x.shape, spatial_dims, filter_size, f"the window has filter_size={filter_size} taps"
    )
    c1, c2 = _constants(max_val, k1, k2, x.dtype)
    mask = _validation.broadcast_mask(mask, x.shape, x.dtype)
    if mask is not None:
        # Masks are constant weights: no gradient flows into them.
        mask = lax.stop_gradient(mask)
    spec = _Spec(_filters.window_taps(window, filter_size, filter_sigma), spatial_dims, padding)
    return spec, mask, c1, c2


def dssim(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    window: str = "gaussian",
    padding: str = "valid",
    spatial_dims: int = 2,
    mask: ArrayLike | None = None,
    return_map: bool = False,
) -> jax.Array:
    """Structural dissimilarity ``(1 - SSIM) / 2``, in [0, 1], per image.

    This is the DSSIM of kornia, monodepth/monodepth2 and keras-contrib. Papers
    that write "DSSIM" for ``1 - SSIM`` (3D Gaussian Splatting, Zhao et al.) use
    twice this value; the losses in this package offer both forms
    (``dssim_form="half"`` or ``"full"``).

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
    spec, s_map, mask = _ssim_map(predictions, targets, **_options(locals()))
    if return_map:
        return (1.0 - s_map) / 2.0
    return _per_image_mean(spec, s_map, mask)[1] / 2.0


@jax.custom_jvp
def _relu_pow(v, w):
    """``max(v, 0) ** w`` with a finite derivative everywhere (0 for v <= 0)."""
    positive = v > 0
    return jnp.where(positive, jnp.where(positive, v, 1.0) ** w, 0.0)


@_relu_pow.defjvp
def _relu_pow_jvp(primals, tangents):
    v, w = primals
    dv, dw = tangents
    out = _relu_pow(v, w)
    positive = v > 0
    floored = jnp.maximum(v, _POW_GRAD_FLOOR)
    d_v = jnp.where(positive, w * floored ** (w - 1.0), 0.0)
    d_w = jnp.where(positive, out * jnp.log(jnp.where(positive, v, 1.0)), 0.0)
    return out, d_v * dv + d_w * dw


def _downsample2x(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 average pooling; odd sizes first repeat the last row/column.

    This is tf.image.ssim_multiscale's rule (symmetric padding of the bottom and
    right edges by the remainder, then VALID 2x2 pooling).
    """
    h, w = x.shape[-3], x.shape[-2]
    if h % 2 or w % 2:
        widths = [(0, 0)] * (x.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)]
        x = jnp.pad(x, widths, mode="symmetric")
        h, w = x.shape[-3], x.shape[-2]
    x = x.reshape(*x.shape[:-3], h // 2, 2, w // 2, 2, x.shape[-1])
    return jnp.mean(x, axis=(-4, -2))


def ms_ssim(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float | ArrayLike,
    power_factors: tuple[float, ...] = MS_SSIM_WEIGHTS,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    r"""Multi-scale SSIM of each image in a batch.

    ``MS-SSIM = prod_{j<M} cs_j^{w_j} * ssim_M^{w_M}`` per channel, then the mean
    over channels, where ``cs_j`` is the mean contrast-structure term
    ``(2 cov + C2) / (var_x + var_y + C2)`` at scale ``j`` and ``ssim_M`` the
    mean SSIM at the coarsest scale; scales are separated by 2x2 average pooling
    (odd sizes first repeat the last row/column). Negative terms count as 0, as
    in ``tf.image.ssim_multiscale``; the gradient stays finite there (it is 0
    for a negative term, and evaluated at ``max(term, 1e-4)`` for a tiny
    positive one, where ``term ** w`` is infinitely steep).

    Args:
      predictions: images ``[..., H, W, C]``; H and W at least
        ``(filter_size - 1) * 2 ** (len(power_factors) - 1) + 1`` (161 with the
        defaults).
      targets: images of the same shape.
      max_val: the data range.
      power_factors: the weight of each scale, finest first; its length is the
        number of scales.
      filter_size: Gaussian window size in taps.
      filter_sigma: Gaussian window standard deviation.
      k1: luminance stabiliser constant.
      k2: contrast stabiliser constant.

    Returns:
      MS-SSIM per image, shape ``predictions.shape[:-3]``.

    Raises:
      ValueError: as :func:`ssim`, and for images below the minimum size.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import ms_ssim
      >>> x = jnp.linspace(0.0, 1.0, 161 * 161).reshape(161, 161, 1)
      >>> round(float(ms_ssim(x, x, max_val=1.0)), 4)
      1.0

    References:
      Z. Wang, E. P. Simoncelli and A. C. Bovik, "Multiscale structural
      similarity for image quality assessment", Asilomar 2003. Matches
      ``tf.image.ssim_multiscale`` (which matches the authors' MATLAB code).
    """
    x, y = _validation.as_float_pair(predictions, targets, min_rank=3)
    if (
        not isinstance(power_factors, tuple | list)
        or not power_factors
        or not all(isinstance(w, numbers.Real) and 0 <= w < np.inf for w in power_factors)
    ):
        raise ValueError(
            "`power_factors` must be a non-empty sequence of finite numbers >= 0, "
            f"got {power_factors!r}."
        )
    levels = len(power_factors)
    _validation.check_positive("filter_size", filter_size, integer=True)
    min_size = (filter_size - 1) * 2 ** (levels - 1) + 1
    _validation.check_min_size(
        x.shape,
        2,
        min_size,
        f"MS-SSIM with {levels} scales and filter_size={filter_size} needs "
        f"(filter_size - 1) * 2**(scales - 1) + 1 = {min_size}",
    )
    spec, _, c1, c2 = _prepare(
        x,
        max_val=max_val,
        filter_size=filter_size,
        filter_sigma=filter_sigma,
        k1=k1,
        k2=k2,
        window="gaussian",
        padding="valid",
        spatial_dims=2,
        mask=None,
    )
    terms = []
    for level in range(levels):
        if level:
            x, y = _downsample2x(x), _downsample2x(y)
        s_map, cs_map = _ssim_cs_maps(spec, x, y, None, c1, c2)
        term_map = s_map if level == levels - 1 else cs_map
        terms.append(_unit_mean(term_map, None, spec.axes)[0])
    stacked = jnp.stack(terms, axis=-1)
    weights = jnp.asarray(power_factors, stacked.dtype).reshape((1,) * (stacked.ndim - 1) + (-1,))
    per_channel = jnp.prod(_relu_pow(stacked, weights), axis=-1)
    return _unit_mean(per_channel, None, -1)[0]
