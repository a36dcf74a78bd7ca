"""DSSIM+MAE losses: one preparation, one structural evaluation, both terms weighted."""

from __future__ import annotations

import dataclasses
import functools
import numbers
import warnings
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dssim_mae_jax import _filters, _inputs, _jit, _reductions, _validation
from dssim_mae_jax._metrics import absolute_difference, mae_from_pair, psnr_from_pair
from dssim_mae_jax._multi_sigma import multi_sigma_map
from dssim_mae_jax._presets import PRESETS, LossConfig, check_fields, renamed_fields
from dssim_mae_jax._ssim import ms_ssim_from_pair, ssim_map, ssim_statistics

WEIGHT_KEYS = ("structural", "mae", "mean")
# Old spellings of the weight keys, still accepted with a DeprecationWarning.
_OLD_WEIGHT_KEYS = {"ssim": "structural"}
# The key under which aux holds S, named for the function that computes it.
SIMILARITY_KEYS = {"ssim": "ssim", "ms_ssim": "ms_ssim", "multi_sigma": "multi_sigma_ssim"}


# ---------------------------------------------------------------------------- helpers
def _structural(cfg: LossConfig, deficit):
    """D from the deficit 1 - S (per image or a map), in the config's form, clipped if asked."""
    d = deficit / 2.0 if cfg.dssim_form == "half" else deficit
    if cfg.clip:
        d = jnp.clip(d, 0.0, 1.0 if cfg.dssim_form == "half" else 2.0)
    return d


def _crop_to_map(cfg: LossConfig, v):
    """The window-centre pixels of `v` (``padding="valid"`` maps are smaller)."""
    return _reductions.center_weights(
        v, tuple(range(-1 - cfg.spatial_dims, -1)), cfg.filter_size, cfg.padding
    )


@functools.cache
def _gaussian_mae_weights(shape: tuple[int, ...], size: int, sigma: float) -> np.ndarray:
    """Per-pixel weights equal to 'filter |e| with the window (valid), then average'.

    Along one axis of length N with K taps g, the mean over the N - K + 1 valid
    positions of ``sum_k g[k] e[i + k]`` weighs pixel i by
    ``w[i] = sum_j g[i - j] / (N - K + 1)``, the box of valid positions
    convolved with g. The N-D weights are the outer product; they sum to 1.
    """
    g = np.asarray(_filters.gaussian_taps(size, sigma))
    out = np.ones((), np.float64)
    for n in shape:
        valid = n - size + 1
        w = np.convolve(np.full(valid, 1.0 / valid), g)
        out = np.multiply.outer(out, w)
    return out


def _coarsest_window(cfg: LossConfig) -> tuple[int, float]:
    """(taps, sigma) of the coarsest window of the structural term, at full resolution."""
    if cfg.structure == "multi_sigma":
        return cfg.filter_size, max(cfg.sigmas)
    # The pyramid: the window of scale M is the finest one dilated 2**(M-1) times.
    factor = 2 ** (cfg.levels - 1)
    return (cfg.filter_size - 1) * factor + 1, cfg.filter_sigma * factor


def _in_data_units(cfg: LossConfig, pair: _inputs.Pair, value):
    """A difference measured in units of max_val, in the data's units unless normalize_mae."""
    return value if cfg.normalize_mae else value * pair.max_val


def _mae_term(cfg: LossConfig, pair: _inputs.Pair):
    """M per image: plain (masked) MAE or the coarsest-Gaussian-weighted one (Zhao et al.)."""
    if cfg.mae_weighting == "mean":
        return _in_data_units(cfg, pair, mae_from_pair(pair))
    x = pair.x
    size, sigma = _coarsest_window(cfg)
    spatial = tuple(x.shape[-1 - cfg.spatial_dims : -1])
    _validation.check_min_size(
        x.shape, cfg.spatial_dims, size, f"the Gaussian MAE weighting spans {size} pixels"
    )
    w = jnp.asarray(_gaussian_mae_weights(spatial, size, sigma), x.dtype)
    w = jnp.broadcast_to(w[..., None], x.shape)
    if pair.mask is not None:
        w = w * pair.mask
    return _in_data_units(cfg, pair, mae_from_pair(pair, weights=w))


def _mean_term(cfg: LossConfig, pair: _inputs.Pair):
    """R per image: the smooth L1 distance of the (masked) per-channel means, see LossConfig.

    ``sqrt(d^2 + e^2) - e`` is computed as ``d^2 / (sqrt(d^2 + e^2) + e)``, equal in exact
    arithmetic and free of the cancellation of the first form when ``|d| << e``.
    """
    e = (cfg.max_val / 255.0 if cfg.mean_eps is None else cfg.mean_eps) / cfg.max_val
    spatial = tuple(range(-1 - cfg.spatial_dims, -1))
    # The difference of the means is the mean of the difference: exactly 0 where x == y.
    d = _reductions.weighted_mean(pair.diff, pair.mask, spatial, 0.0)
    e = jnp.asarray(e, d.dtype)
    r = jnp.mean(d * d / (jnp.sqrt(d * d + e * e) + e), axis=-1)
    return _in_data_units(cfg, pair, r)


def _window_options(cfg: LossConfig) -> dict:
    """The window options a map-based structure shares."""
    return dict(filter_size=cfg.filter_size, k1=cfg.k1, k2=cfg.k2, padding=cfg.padding)


def _ssim_options(cfg: LossConfig) -> dict:
    """The options of the SSIM core for ``structure="ssim"``."""
    return dict(
        _window_options(cfg),
        filter_sigma=cfg.filter_sigma,
        window=cfg.window,
        implementation=cfg.implementation,
    )


def _structure_map(cfg: LossConfig, pair: _inputs.Pair):
    """The SSIM (or multi-sigma MS-SSIM) map of a map-based structure, and its spec."""
    if cfg.structure == "multi_sigma":
        return multi_sigma_map(pair, sigmas=cfg.sigmas, **_window_options(cfg))
    return ssim_map(pair, **_ssim_options(cfg))


def evaluate_terms(cfg: LossConfig, pair: _inputs.Pair) -> dict:
    """Both terms of the loss (per image), their maps when needed, and the metrics.

    One structural evaluation of one prepared pair feeds everything. Returns
    a dict with per-image ``"structural"`` (D as the loss uses it), ``"mae"``
    (M as the loss uses it), ``"psnr"`` and S under its function's name
    (:data:`SIMILARITY_KEYS`), plus ``"structural_map"`` and ``"mae_map"`` for
    per-pixel or map configs, and ``"mean"`` (R, the mean term, computed whatever its
    weight). NaN for the pair's `bad` images.
    """
    if pair.mask is not None and cfg.structure == "ms_ssim":
        raise ValueError(
            "`mask` is not supported with structure='ms_ssim' (MS-SSIM pools the whole "
            "image over scales); use structure='ssim' or 'multi_sigma' for masked losses."
        )
    out = {}
    name = SIMILARITY_KEYS[cfg.structure]
    if cfg.structure == "ms_ssim":
        out[name] = ms_ssim_from_pair(
            pair,
            power_factors=cfg.power_factors,
            filter_size=cfg.filter_size,
            filter_sigma=cfg.filter_sigma,
            k1=cfg.k1,
            k2=cfg.k2,
            window=cfg.window,
            fit_scales=False,
        )
        deficit = 1.0 - out[name]
    elif cfg.structure == "ssim" and not (cfg.per_pixel or cfg.return_map):
        # The means only: taken chunk by chunk, no full-size map.
        _, out[name], deficit, _ = ssim_statistics(pair, with_map=False, **_ssim_options(cfg))
    else:
        s_map, spec = _structure_map(cfg, pair)
        centre = _reductions.center_weights(pair.mask, spec.axes, len(spec.taps), spec.padding)
        out[name], deficit = _reductions.map_mean(s_map, centre, cfg.spatial_dims)
    if cfg.per_pixel or cfg.return_map:
        out["structural_map"] = _structural(cfg, 1.0 - s_map)
        e_map = absolute_difference(_crop_to_map(cfg, pair.diff), 0.0)
        out["mae_map"] = _in_data_units(cfg, pair, e_map)
    if cfg.per_pixel:
        axes = tuple(range(-1 - cfg.spatial_dims, 0))
        out["structural"] = _reductions.weighted_mean(out["structural_map"], centre, axes, 0.0)
        out["mae"] = _reductions.weighted_mean(out["mae_map"], centre, axes, 0.0)
    else:
        out["structural"] = _structural(cfg, deficit)
        out["mae"] = _mae_term(cfg, pair)
    out["mean"] = _mean_term(cfg, pair)
    out["psnr"] = psnr_from_pair(pair)
    # An image that cannot be scored gets NaN in every per-image value, whatever each
    # term would make of it (a clipped MS-SSIM factor, an inf MAE).
    for key in (name, "structural", "mae", "mean", "psnr"):
        out[key] = _reductions.nan_where(pair.bad, out[key])
    return out


def normalize_weights(weights):
    """`weights` with old key spellings renamed (DeprecationWarning), checked.

    Raises unless `weights` is None or a dict of scalar weights with keys in
    :data:`WEIGHT_KEYS`, >= 0 and finite where concrete (Python, NumPy or
    JAX scalars alike). Traced weights are checked in the computation
    (impossible values give NaN).
    """
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise TypeError(
            "`weights` must be a dict {'structural': structural_weight, 'mae': mae_weight}, "
            f"got {type(weights).__name__}."
        )
    out = {}
    for key, value in weights.items():
        if key in _OLD_WEIGHT_KEYS:
            new = _OLD_WEIGHT_KEYS[key]
            warnings.warn(
                f"The weights key {key!r} is deprecated; use {new!r}.",
                DeprecationWarning,
                stacklevel=4,
            )
            if new in weights:
                raise ValueError(f"`weights` has both {key!r} and {new!r}; give {new!r} only.")
            key = new
        out[key] = value
    unknown = sorted(set(out) - set(WEIGHT_KEYS))
    if unknown:
        raise ValueError(
            f"`weights` has unknown keys {unknown}; valid keys are {list(WEIGHT_KEYS)}."
        )
    for key, value in out.items():
        value = _validation.concrete_scalar(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            _validation.check_nonnegative(f"weights['{key}']", value)
        elif isinstance(value, bool) or (
            not hasattr(value, "dtype") and not isinstance(value, numbers.Real)
        ):
            raise TypeError(f"`weights['{key}']` must be a number, got {value!r}.")
        elif jnp.ndim(value) != 0:
            raise ValueError(f"`weights['{key}']` must be a scalar, got shape {jnp.shape(value)}.")
    return out


def resolve_weights(cfg: LossConfig, weights, dtype):
    """(structural_weight, mae_weight, invalid) from the config and `weights` entries.

    `invalid` is True where a traced weight is negative or not finite (the
    loss is then NaN, never a plausible number).
    """
    w = {"structural": cfg.structural_weight, "mae": cfg.mae_weight}
    w.update(weights or {})
    w_s, w_m = jnp.asarray(w["structural"], dtype), jnp.asarray(w["mae"], dtype)
    invalid = ~(jnp.isfinite(w_s) & jnp.isfinite(w_m) & (w_s >= 0) & (w_m >= 0))
    return w_s, w_m, invalid


def resolve_mean_weight(cfg: LossConfig, weights, dtype):
    """(mean_weight, invalid) from the config and `weights`; invalid as in resolve_weights."""
    w_r = jnp.asarray((weights or {}).get("mean", cfg.mean_weight), dtype)
    return w_r, ~(jnp.isfinite(w_r) & (w_r >= 0))


def reduce(cfg: LossConfig, loss):
    if cfg.reduction == "mean":
        return jnp.mean(loss)
    if cfg.reduction == "sum":
        return jnp.sum(loss)
    return loss


def _aux(terms) -> dict:
    return {k: v for k, v in terms.items() if not k.endswith("_map")}


def check_loss_call(arguments: dict) -> None:
    """The concrete checks of a loss call (before the compiled call)."""
    config = arguments["config"]
    _inputs.check_concrete(dict(arguments, max_val=config.max_val))


@_jit.jit_public(("config",), check_all=check_loss_call)
def _loss(predictions, targets, *, config: LossConfig, mask, weights):
    """(loss, aux) of one call of a :func:`make_loss` function."""

    def per_chunk(pair):
        terms = evaluate_terms(config, pair)
        return terms, pair.bad

    terms, bad = _inputs.per_image(
        per_chunk,
        predictions,
        targets,
        max_val=config.max_val,
        mask=mask,
        spatial_dims=config.spatial_dims,
    )
    w_s, w_m, invalid = resolve_weights(config, weights, terms["structural"].dtype)
    w_r, invalid_r = resolve_mean_weight(config, weights, terms["structural"].dtype)
    invalid = invalid | invalid_r
    per_image = w_s * terms["structural"] + w_m * terms["mae"] + w_r * terms["mean"]
    per_image = jnp.where(invalid, jnp.nan, per_image)
    aux = _aux(terms)
    aux["loss"] = per_image
    if config.return_map:
        trailing = config.spatial_dims + 1
        # R is one number per image: added to every pixel, the map's mean stays the loss.
        mean = jnp.expand_dims(terms["mean"], tuple(range(-trailing, 0)))
        loss = w_s * terms["structural_map"] + w_m * terms["mae_map"] + w_r * mean
        loss = _reductions.nan_where(bad | invalid, loss, trailing)
        return loss, aux
    return reduce(config, per_image), aux


def call_loss(cfg: LossConfig, predictions, targets, mask, weights):
    """(loss, aux), compiled once per config, shapes and weights' structure (eager calls too)."""
    return _loss(predictions, targets, config=cfg, mask=mask, weights=normalize_weights(weights))


def as_config(preset_or_config, overrides: Mapping) -> LossConfig:
    """A LossConfig from a preset name, a LossConfig or a dict, with overrides applied.

    ``alpha`` among the overrides sets ``structural_weight=alpha`` and
    ``mae_weight=1 - alpha``, as :func:`dssim_mae_loss` does.
    """
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(
                f"Unknown loss preset {preset_or_config!r}; valid presets are {sorted(PRESETS)}."
            )
        cfg = PRESETS[preset_or_config]
    elif isinstance(preset_or_config, LossConfig):
        cfg = preset_or_config
    elif isinstance(preset_or_config, Mapping):
        check_fields(preset_or_config, "loss config fields")
        cfg = LossConfig(**preset_or_config)
    else:
        raise TypeError(
            "`preset_or_config` must be a preset name, a LossConfig or a dict of LossConfig "
            f"fields, got {type(preset_or_config).__name__}."
        )
    overrides = dict(overrides)
    if "alpha" in overrides:
        alpha = check_alpha(overrides.pop("alpha"), concrete=True)
        if {"structural_weight", "mae_weight"} & set(overrides):
            raise ValueError("Give `alpha` or the two weights, not both.")
        overrides.update(structural_weight=alpha, mae_weight=1.0 - alpha)
    check_fields(overrides, "overrides")
    overrides = renamed_fields(overrides)
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def check_alpha(alpha, *, concrete: bool = False):
    """`alpha` in [0, 1] where concrete (any scalar type alike); traced 0-d arrays pass.

    With `concrete`, a traced value is refused (a config needs a number).
    """
    value = _validation.concrete_scalar(alpha)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not (np.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"`alpha` must be in [0, 1], got {value}.")
        return float(value)
    if hasattr(value, "shape") and hasattr(value, "dtype") and not concrete:
        if value.ndim != 0:
            raise ValueError(f"`alpha` must be a scalar, got shape {value.shape}.")
        return value
    raise TypeError(f"`alpha` must be a number in [0, 1], got {alpha!r}.")


# ---------------------------------------------------------------------------- public
def dssim_mae_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float,
    alpha: float | ArrayLike = 0.84,
    mean_weight: float | ArrayLike = 0.0,
    structure: str = "ssim",
    dssim_form: str = "half",
    normalize_mae: bool = True,
    mask: ArrayLike | None = None,
    reduction: str = "none",
    return_map: bool = False,
    **ssim_options,
) -> jax.Array:
    r"""The mixed loss ``alpha * D + (1 - alpha) * M (+ mean_weight * R)`` of each image.

    ``D`` is ``(1 - S) / 2`` (``dssim_form="half"``, the DSSIM of kornia and
    monodepth2) or ``1 - S`` (``"full"``, the "DSSIM" of Gaussian Splatting and
    Zhao et al.), with ``S`` the SSIM (``structure="ssim"``), the pyramid
    MS-SSIM of Wang et al. (``"ms_ssim"``) or the full-resolution multi-sigma
    MS-SSIM of Zhao et al. (``"multi_sigma"``, :func:`multi_sigma_ssim`) of the
    image. ``M`` is the mean absolute error, divided by ``max_val`` when
    ``normalize_mae`` so both terms lie on [0, 1]-like scales whatever the data
    range. ``R``, off by default, is the mean term of :class:`LossConfig`: the
    smooth L1 distance of the per-channel means, which removes the colour cast
    a structural term leaves (``mean_eps`` sets its smoothing).

    With ``mae_weighting="gaussian"`` (an option below), ``M`` follows Zhao et
    al.: ``|x - y|`` is filtered (valid correlation) with the Gaussian of the
    coarsest scale and averaged over positions and channels, i.e.
    ``M = sum_p w(p) mean_c |x - y|(p, c)`` with ``w`` that filter's footprint.
    For ``"multi_sigma"`` that window is the one of the largest sigma
    (``filter_size`` taps): on a patch of ``filter_size`` pixels this is the
    authors' ``sum G_8 * |x - y|`` (NVlabs/PL4NN ``MSSSIML1``). For the pyramid
    it is the window of the M-th scale seen at full resolution,
    ``(filter_size - 1) * 2**(M - 1) + 1`` taps and standard deviation
    ``filter_sigma * 2**(M - 1)`` (161 taps, sigma 24 with the defaults).

    Masked-out pixels are replaced by zeros before any arithmetic, so what
    they hold (NaN, inf) never reaches the loss or its gradient. NaN or inf in
    a valid pixel makes the loss NaN: a loss never reads better than perfect
    for input it cannot score.

    For named recipes, logging both terms and schedules, use
    :func:`make_loss`; this function is the direct form.

    Args:
      predictions: images ``[..., H, W, C]``.
      targets: images of the same shape.
      max_val: the data range (1.0 for [0, 1] data, 255 for 8-bit data).
      alpha: weight of ``D`` in [0, 1]; ``M`` gets ``1 - alpha``. May be a
        traced scalar.
      mean_weight: weight of the mean term ``R`` (>= 0). May be a traced scalar.
      structure: ``"ssim"``, ``"ms_ssim"`` or ``"multi_sigma"``.
      dssim_form: ``"half"`` or ``"full"``.
      normalize_mae: divide the MAE by ``max_val``.
      mask: optional weights broadcastable to the images (1 valid, 0 not);
        not with ``structure="ms_ssim"``. An image with an empty mask has loss 0.
      reduction: ``"none"`` (per image), ``"mean"`` or ``"sum"``.
      return_map: return the per-pixel map ``alpha * D_map + (1 - alpha) *
        |x - y| / max_val`` on the SSIM map's grid (the window centres for
        ``padding="valid"``) instead of per-image values.
      **ssim_options: other :class:`LossConfig` fields: ``filter_size``,
        ``filter_sigma``, ``k1``, ``k2``, ``window``, ``padding``,
        ``spatial_dims``, ``power_factors``, ``sigmas``, ``clip``,
        ``per_pixel``, ``mae_weighting``, ``mean_eps``, ``implementation`` (``"pallas"``:
        the fused SSIM kernels, see :func:`ssim`).

    Returns:
      The loss per image (shape ``predictions.shape[:-1 - spatial_dims]``), its
      reduction, or the loss map.

    Raises:
      ValueError: ``alpha`` outside [0, 1], a negative ``mean_weight``, an unknown ``structure``,
        ``dssim_form``, ``reduction`` or option name, or any error of
        :func:`ssim` / :func:`mae`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import dssim_mae_loss
      >>> x = jnp.linspace(0.0, 1.0, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)
      >>> dssim_mae_loss(x, x, max_val=1.0).tolist()
      [0.0, 0.0]
      >>> loss = dssim_mae_loss(x, 0.5 * x, max_val=1.0, alpha=0.8, dssim_form="full")
      >>> loss.shape
      (2,)

    References:
      H. Zhao, O. Gallo, I. Frosio and J. Kautz, "Loss functions for image
      restoration with neural networks", IEEE TCI 3(1), 2017.
    """
    check_fields(ssim_options, "option")
    for name in ("structural_weight", "mae_weight", "w_structural", "w_absolute"):
        if name in ssim_options:
            raise ValueError(f"`{name}` is not an option here; the weights come from `alpha`.")
    alpha = check_alpha(alpha)
    value = _validation.concrete_scalar(mean_weight)
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):  # a traced weight: NaN if < 0
        _validation.check_nonnegative("mean_weight", value)
    # The weights come from `alpha`, passed as data: one compilation for every alpha.
    cfg = LossConfig(
        structural_weight=0.5,
        mae_weight=0.5,
        structure=structure,
        dssim_form=dssim_form,
        max_val=max_val,
        normalize_mae=normalize_mae,
        reduction=reduction,
        return_map=return_map,
        **ssim_options,
    )
    # A traced alpha outside [0, 1] makes one weight negative: the loss is then NaN.
    weights = {"structural": alpha, "mae": 1.0 - alpha, "mean": mean_weight}
    return call_loss(cfg, predictions, targets, mask, weights)[0]


def make_loss(preset_or_config: str | LossConfig | Mapping, **overrides) -> Callable:
    """A pure DSSIM+MAE loss function from a named recipe or a config.

    The returned ``loss_fn(predictions, targets, *, mask=None, weights=None)``
    returns ``(loss, aux)``:

    * ``loss``: ``w_s * D + w_a * M + w_r * R`` per image (or its reduction,
      or the map; see :class:`LossConfig`), with ``D`` in the config's
      ``dssim_form``;
    * ``aux``: per-image values to log, computed from the same single SSIM
      evaluation: S under its function's name (``"ssim"``, ``"ms_ssim"`` or
      ``"multi_sigma_ssim"``), ``"structural"`` (``D`` exactly as the loss
      uses it: the config's form, clipped if configured), ``"mae"`` (``M`` as
      the loss uses it: normalised and/or Gaussian-weighted), ``"mean"`` (the
      mean term ``R``), ``"psnr"`` (dB, ``max_val`` as data range) and
      ``"loss"``. Always ``aux["loss"] == w_s * aux["structural"] + w_a *
      aux["mae"] + w_r * aux["mean"]``.

    ``weights={"structural": w_s, "mae": w_a, "mean": w_r}`` replaces the
    config's weights for one call (any key may be left out). The values may be traced scalars, so a
    schedule can change them every step of a jitted function without
    recompiling. A zero weight still computes its term (it is logged) and its
    gradient contribution is exactly zero (every term has finite gradients).

    The function carries its config as ``loss_fn.config``.

    Args:
      preset_or_config: a name in :data:`PRESETS`, a :class:`LossConfig`, or a
        dict of ``LossConfig`` fields.
      **overrides: ``LossConfig`` fields replacing the preset's, e.g.
        ``max_val=255.0`` or ``reduction="mean"``.

    Returns:
      ``loss_fn(predictions, targets, *, mask=None, weights=None) -> (loss, aux)``.

    Raises:
      ValueError: an unknown preset (the message lists the valid ones), an
        unknown field (the message lists the valid ones), an invalid value.
      TypeError: ``preset_or_config`` of the wrong type.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dssim_mae_jax import make_loss
      >>> loss_fn = make_loss("seed-naive")
      >>> x = jnp.linspace(0.0, 1.0, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)
      >>> loss, aux = jax.jit(loss_fn)(x, x)
      >>> loss.tolist(), sorted(aux)
      ([0.0, 0.0], ['loss', 'mae', 'mean', 'psnr', 'ssim', 'structural'])
      >>> loss, _ = loss_fn(x, 0.5 * x, weights={"structural": 0.0, "mae": 1.0})
      >>> bool(jnp.allclose(loss, jnp.mean(0.5 * x, axis=(1, 2, 3))))
      True

    References:
      Each preset's source is listed in :data:`PRESETS` and ``docs/losses.md``.
    """
    cfg = as_config(preset_or_config, overrides)

    def loss_fn(
        predictions: ArrayLike,
        targets: ArrayLike,
        *,
        mask: ArrayLike | None = None,
        weights: Mapping[str, float | ArrayLike] | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return call_loss(cfg, predictions, targets, mask, weights)

    loss_fn.config = cfg
    return loss_fn
