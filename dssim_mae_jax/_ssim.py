"""The public SSIM, DSSIM and MS-SSIM functions (wrappers around the cores).

The maths and its derivative live in :mod:`dssim_mae_jax._ssim_maps`, input
preparation in :mod:`dssim_mae_jax._inputs`, the pyramid in
:mod:`dssim_mae_jax._pyramid`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
from jax.typing import ArrayLike

from dssim_mae_jax import _inputs, _jit, _pyramid, _reductions, _ssim_maps, _validation
from dssim_mae_jax._pyramid import MS_SSIM_WEIGHTS, ms_ssim_min_size

__all__ = ("MS_SSIM_WEIGHTS", "dssim", "ms_ssim", "ms_ssim_min_size", "ssim")

# The values of the `implementation` option (None: the default, "xla" on every backend
# until a device measurement shows the Pallas kernels faster; see docs/pallas.md).
IMPLEMENTATIONS = ("xla", "pallas")
# Why MS-SSIM (pyramid or multi-sigma) refuses implementation="pallas".
PALLAS_HAS_NO_CS = (
    "MS-SSIM (the fused kernels compute the SSIM map, not the contrast-structure maps "
    "MS-SSIM multiplies); use implementation='xla' or None"
)

# The checks that need concrete values, run before the compiled call (see _jit).
CHECK_CONCRETE = functools.partial(_inputs.check_concrete, max_val_required=True)
_SSIM_STATIC = (
    "filter_size",
    "filter_sigma",
    "k1",
    "k2",
    "window",
    "padding",
    "spatial_dims",
    "return_map",
    "implementation",
)


def resolve_implementation(implementation, *, pallas: str | None = None) -> str:
    """`implementation` checked, None mapped to ``"xla"`` (the default everywhere for now).

    With `pallas` (why the caller cannot use the kernels), ``"pallas"`` is
    refused with that reason.
    """
    if implementation is None:
        return "xla"
    _validation.check_choice("implementation", implementation, (None, *IMPLEMENTATIONS))
    if implementation == "pallas" and pallas is not None:
        raise ValueError(f"`implementation='pallas'` is not supported by {pallas}.")
    return implementation


def _fused(pair: _inputs.Pair, spec: _ssim_maps.Spec, k1, k2):
    """The fused Pallas kernels on a prepared pair: ``FusedSSIM(map, mean, deficit)``."""
    # Imported here: `import dssim_mae_jax` does not load Pallas.
    from dssim_mae_jax import _pallas

    return _pallas.ssim_map(
        pair.x,
        pair.y,
        pair.mask,
        taps=spec.taps,
        padding=spec.padding,
        c1=float(k1) ** 2,
        c2=float(k2) ** 2,
        spatial_dims=pair.spatial_dims,
    )


def ssim_map(
    pair: _inputs.Pair, *, implementation: str | None = "xla", **options
) -> tuple[jax.Array, _ssim_maps.Spec]:
    """The SSIM map of a prepared pair and the spec it used (options as :func:`ssim`)."""
    s_map, _, _, spec = ssim_statistics(
        pair, with_map=True, implementation=implementation, **options
    )
    assert s_map is not None  # with_map=True
    return s_map, spec


def ssim_statistics(
    pair: _inputs.Pair, *, with_map: bool, implementation: str | None = "xla", **options
) -> tuple[jax.Array | None, jax.Array, jax.Array, _ssim_maps.Spec]:
    """(map or None, per-image mean S, 1 - S, spec) of a prepared pair (options as :func:`ssim`).

    Not NaN-flagged: the caller applies ``pair.bad``. Without `with_map` the
    means are taken chunk by chunk and no full-size map is formed (the map is
    None); with it the means come from the returned map.
    """
    spec, c1, c2 = _ssim_maps.make_spec(
        pair.x.shape, pair.x.dtype, spatial_dims=pair.spatial_dims, **options
    )
    if resolve_implementation(implementation) == "pallas":
        fused = _fused(pair, spec, options["k1"], options["k2"])
        return fused.map, fused.mean, fused.deficit, spec

    def means(maps, mask):
        centre = _reductions.center_weights(mask, spec.axes, len(spec.taps), spec.padding)
        return _reductions.map_mean(maps[0], centre, pair.spatial_dims)

    if not with_map:
        mean, deficit = _ssim_maps.ssim_cs_maps(
            spec, pair.x, pair.y, pair.mask, c1, c2, want=("s",), reduce=means
        )
        return None, mean, deficit, spec
    (s_map,) = _ssim_maps.ssim_cs_maps(spec, pair.x, pair.y, pair.mask, c1, c2, want=("s",))
    mean, deficit = means((s_map,), pair.mask)
    return s_map, mean, deficit, spec


def _ssim_or_dssim(
    predictions, targets, *, half_deficit, max_val, mask, spatial_dims, return_map, **options
):
    """:func:`ssim` (or, with `half_deficit`, :func:`dssim`) per image or as a map."""
    _validation.check_bool("return_map", return_map)
    resolve_implementation(options["implementation"])  # before any work

    def per_chunk(pair):
        s_map, mean, deficit, _ = ssim_statistics(pair, with_map=return_map, **options)
        if return_map:
            value = (1.0 - s_map) / 2.0 if half_deficit else s_map
            return _reductions.nan_where(pair.bad, value, spatial_dims + 1)
        return _reductions.nan_where(pair.bad, deficit / 2.0 if half_deficit else mean)

    return _inputs.per_image(
        per_chunk, predictions, targets, max_val=max_val, mask=mask, spatial_dims=spatial_dims
    )


@_jit.jit_public(_SSIM_STATIC, check_all=CHECK_CONCRETE)
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
    implementation: str | None = None,
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
    window taps sum to exactly 1 in that dtype. Derivatives are analytic
    (one rule for forward and reverse mode that recomputes the local
    moments, ``docs/ssim_derivatives.md``) and finite for every finite
    input; the gradient is exactly zero where ``predictions == targets``.
    An image with a NaN or inf among its (unmasked) pixels gets NaN, never a score. The
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
      implementation: ``None`` (the default), ``"xla"`` or ``"pallas"``, as in
        ``jax.nn.dot_product_attention``. ``"xla"`` is this function as
        described; ``"pallas"`` computes the same map, value and gradient with
        the fused Pallas kernels (``docs/pallas.md``): compiled with Triton on
        a GPU, run in the Pallas interpreter on other backends (slow: for
        checking). The kernels take 2-D float32 work only (``spatial_dims=2``;
        bfloat16/float16 and integer images are converted to float32 first;
        float64 is refused) and support reverse-mode differentiation only
        (``jax.grad``/``jax.vjp``; ``jax.jvp`` raises a ``TypeError``). ``None``
        chooses per backend and is ``"xla"`` on every backend until a device
        measurement shows the kernels faster there.

    Returns:
      SSIM per image, shape ``predictions.shape[:-1 - spatial_dims]``, float32
      (float64 for float64 inputs); or the map when ``return_map=True``. NaN
      for an image holding NaN or inf.

    Raises:
      ValueError: mismatched shapes, too few dimensions, empty spatial or
        channel axes, a spatial size smaller than ``filter_size``, an unknown
        ``window``/``padding``, bad window taps, a non-positive
        ``filter_size``/``filter_sigma``/``max_val``, negative ``k1``/``k2``,
        a mask that does not broadcast or holds negative or non-finite weights,
        an unknown ``implementation``, ``implementation="pallas"`` with
        ``spatial_dims`` other than 2.
      TypeError: non-numeric inputs, options of the wrong type (a non-int
        ``filter_size`` or ``spatial_dims``, a non-bool ``return_map``),
        traced values given for options, float64 images with
        ``implementation="pallas"``.

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
        implementation=implementation,
    )


@_jit.jit_public(_SSIM_STATIC, check_all=CHECK_CONCRETE)
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
    implementation: str | None = None,
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
      implementation: ``None`` (``"xla"``), ``"xla"`` or ``"pallas"`` (the
        fused kernels); see :func:`ssim`.

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
        implementation=implementation,
    )


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
        "implementation",
    ),
    check_all=CHECK_CONCRETE,
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
    implementation: str | None = None,
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
      implementation: ``None`` or ``"xla"`` (the same, the only one here).
        ``"pallas"`` raises a ``ValueError``: the fused kernels compute the
        SSIM map, not the contrast-structure maps every scale but the last
        needs. Accepted for the same signature as :func:`ssim`.

    Returns:
      MS-SSIM per image, shape ``predictions.shape[:-1 - spatial_dims]``; NaN
      for an image holding NaN or inf.

    Raises:
      ValueError: as :func:`ssim`; images below the minimum size (without
        ``fit_scales``), bad ``power_factors``, ``implementation="pallas"``.
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
    resolve_implementation(implementation, pallas=PALLAS_HAS_NO_CS)
    power_factors = _validation.check_power_factors(power_factors)
    _validation.check_bool("fit_scales", fit_scales)
    per_chunk = functools.partial(
        ms_ssim_from_pair,
        power_factors=power_factors,
        filter_size=filter_size,
        filter_sigma=filter_sigma,
        k1=k1,
        k2=k2,
        window=window,
        fit_scales=fit_scales,
    )
    return _inputs.per_image(
        per_chunk, predictions, targets, max_val=max_val, mask=mask, spatial_dims=spatial_dims
    )


def ms_ssim_from_pair(
    pair: _inputs.Pair, *, power_factors, filter_size, filter_sigma, k1, k2, window, fit_scales
) -> jax.Array:
    """:func:`ms_ssim` of a prepared pair (the core the losses call)."""
    power_factors = _validation.check_power_factors(power_factors)
    window, filter_size = _ssim_maps.window_size(window, filter_size)
    weights = _pyramid.scale_weights(
        pair.x.shape, pair.spatial_dims, filter_size, power_factors, fit_scales
    )
    spec, c1, c2 = _ssim_maps.make_spec(
        pair.x.shape,
        pair.x.dtype,
        filter_size=filter_size,
        filter_sigma=filter_sigma,
        k1=k1,
        k2=k2,
        window=window,
        padding="valid",
        spatial_dims=pair.spatial_dims,
    )
    return _pyramid.ms_ssim_value(pair, spec, c1, c2, weights)
