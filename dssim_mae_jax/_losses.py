"""DSSIM+MAE losses: one pure evaluation of both terms, combined with weights."""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dssim_mae_jax import _filters, _jit, _ssim, _validation
from dssim_mae_jax._metrics import (
    absolute_difference,
    image_axes,
    mae,
    nan_where,
    nonfinite_images,
    psnr,
    weighted_mean,
    zero_masked_out,
)
from dssim_mae_jax._multi_sigma import multi_sigma_ssim
from dssim_mae_jax._presets import PRESETS, LossConfig, check_fields
from dssim_mae_jax._ssim import ms_ssim, ssim

WEIGHT_KEYS = ("ssim", "mae")


# ---------------------------------------------------------------------------- helpers
def _structural(cfg: LossConfig, deficit):
    """D from the deficit 1 - S (per image or a map), in the config's form, clipped if asked."""
    d = deficit / 2.0 if cfg.dssim_form == "half" else deficit
    if cfg.clip:
        d = jnp.clip(d, 0.0, 1.0 if cfg.dssim_form == "half" else 2.0)
    return d


def _crop_to_map(cfg: LossConfig, v):
    """The window-centre pixels of `v` (``padding="valid"`` maps are smaller)."""
    if cfg.padding != "valid":
        return v
    return _filters.crop_to_centers(v, range(-1 - cfg.spatial_dims, -1), cfg.filter_size)


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


def _mae_term(cfg: LossConfig, x, y, mask):
    """M per image: plain (masked) MAE or the coarsest-Gaussian-weighted one (Zhao et al.)."""
    scale = cfg.max_val if cfg.normalize_mae else None
    if cfg.mae_weighting == "mean":
        return mae(x, y, max_val=scale, mask=mask, spatial_dims=cfg.spatial_dims)
    size, sigma = _coarsest_window(cfg)
    spatial = tuple(x.shape[-1 - cfg.spatial_dims : -1])
    _validation.check_min_size(
        x.shape, cfg.spatial_dims, size, f"the Gaussian MAE weighting spans {size} pixels"
    )
    w = jnp.asarray(_gaussian_mae_weights(spatial, size, sigma), x.dtype)
    w = jnp.broadcast_to(w[..., None], x.shape)
    if mask is not None:
        w = w * mask
    value = weighted_mean(absolute_difference(x, y), w, image_axes(cfg.spatial_dims), 0.0)
    if scale is not None:
        value = value / jnp.asarray(scale, value.dtype)
    return value


def _options(cfg: LossConfig, *names: str) -> dict:
    """The config's values of the given fields, as keyword arguments."""
    return {name: getattr(cfg, name) for name in names}


# Options of `ssim`, `ms_ssim` and `multi_sigma_ssim` alike.
_SHARED = ("max_val", "filter_size", "k1", "k2", "spatial_dims")


def _structure_map(cfg: LossConfig, x, y, mask):
    """The SSIM (or multi-sigma MS-SSIM) map of a map-based structure."""
    options = _options(cfg, "padding", *_SHARED)
    if cfg.structure == "multi_sigma":
        return multi_sigma_ssim(x, y, sigmas=cfg.sigmas, mask=mask, return_map=True, **options)
    return ssim(
        x,
        y,
        filter_sigma=cfg.filter_sigma,
        window=cfg.window,
        mask=mask,
        return_map=True,
        **options,
    )


def _map_mean(cfg: LossConfig, value_map, centre):
    """(S, 1 - S) per image from the map: the reduction `ssim` uses (positions, then channels)."""
    per_channel, deficit = _ssim._unit_mean(value_map, centre, range(-1 - cfg.spatial_dims, -1))
    return _ssim._unit_mean(per_channel, None, -1, deficit)


def evaluate_terms(cfg: LossConfig, predictions: ArrayLike, targets: ArrayLike, mask=None):
    """Both terms of the loss (per image), their maps when needed, and the metrics.

    One structural evaluation feeds everything. Returns a dict with per-image
    ``"ssim"`` (S: SSIM, MS-SSIM or multi-sigma MS-SSIM, per ``structure``),
    ``"dssim"`` (D as the loss uses it), ``"mae"`` (M as the loss uses it) and
    ``"psnr"``, plus ``"ms_ssim"`` for MS-SSIM structures and ``"dssim_map"``
    and ``"mae_map"`` for per-pixel or map configs. Masked-out pixels are
    replaced by zeros before any arithmetic: whatever they hold (NaN, inf)
    changes no value and no gradient. NaN or inf in a valid pixel gives NaN.
    """
    x, y = _validation.as_float_pair(predictions, targets, min_rank=cfg.spatial_dims + 1)
    mask = _validation.broadcast_mask(mask, x.shape, x.dtype)
    if mask is not None:
        if cfg.structure == "ms_ssim":
            raise ValueError(
                "`mask` is not supported with structure='ms_ssim' (MS-SSIM pools the whole "
                "image over scales); use structure='ssim' or 'multi_sigma' for masked losses."
            )
    x, y = zero_masked_out(mask, x, y)
    out = {}
    if cfg.structure == "ms_ssim":
        options = _options(cfg, "power_factors", "filter_sigma", "window", *_SHARED)
        out["ssim"] = ms_ssim(x, y, **options)
        deficit = 1.0 - out["ssim"]
    else:
        s_map = _structure_map(cfg, x, y, mask)
        centre = None if mask is None else _crop_to_map(cfg, mask)
        out["ssim"], deficit = _map_mean(cfg, s_map, centre)
    if cfg.structure != "ssim":
        out["ms_ssim"] = out["ssim"]
    if cfg.per_pixel or cfg.return_map:
        out["dssim_map"] = _structural(cfg, 1.0 - s_map)
        e_map = absolute_difference(_crop_to_map(cfg, x), _crop_to_map(cfg, y))
        if cfg.normalize_mae:
            e_map = e_map / jnp.asarray(cfg.max_val, e_map.dtype)
        out["mae_map"] = e_map
    if cfg.per_pixel:
        axes = image_axes(cfg.spatial_dims)
        out["dssim"] = weighted_mean(out["dssim_map"], centre, axes, 0.0)
        out["mae"] = weighted_mean(out["mae_map"], centre, axes, 0.0)
    else:
        out["dssim"] = _structural(cfg, deficit)
        out["mae"] = _mae_term(cfg, x, y, mask)
    out["psnr"] = psnr(x, y, max_val=cfg.max_val, mask=mask, spatial_dims=cfg.spatial_dims)
    # An image with NaN or inf in a valid pixel cannot be scored: every per-image value is
    # NaN, whatever each term would make of it (a clipped MS-SSIM factor, an inf MAE).
    bad = nonfinite_images(x, y, cfg.spatial_dims)
    for key in ("ssim", "ms_ssim", "dssim", "mae", "psnr"):
        if key in out:
            out[key] = nan_where(bad, out[key])
    return out


def check_weights(weights) -> None:
    """Raises unless `weights` is None or a dict of scalar weights (>= 0 where concrete)."""
    if weights is None:
        return
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"`weights` must be a dict {{'ssim': w_structural, 'mae': w_absolute}}, "
            f"got {type(weights).__name__}."
        )
    unknown = sorted(set(weights) - set(WEIGHT_KEYS))
    if unknown:
        raise ValueError(
            f"`weights` has unknown keys {unknown}; valid keys are {list(WEIGHT_KEYS)}."
        )
    for key, value in weights.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            _validation.check_nonnegative(f"weights['{key}']", value)
        elif jnp.ndim(value) != 0:
            raise ValueError(f"`weights['{key}']` must be a scalar, got shape {jnp.shape(value)}.")


def resolve_weights(cfg: LossConfig, weights, dtype):
    """(w_structural, w_absolute) from the config, replaced by `weights` entries."""
    check_weights(weights)
    w = {"ssim": cfg.w_structural, "mae": cfg.w_absolute}
    w.update(weights or {})
    return jnp.asarray(w["ssim"], dtype), jnp.asarray(w["mae"], dtype)


def reduce(cfg: LossConfig, loss):
    if cfg.reduction == "mean":
        return jnp.mean(loss)
    if cfg.reduction == "sum":
        return jnp.sum(loss)
    return loss


def _combine(cfg: LossConfig, terms, weights):
    """(loss, aux): per-image (or map) loss and the per-image values to log."""
    w_s, w_a = resolve_weights(cfg, weights, terms["dssim"].dtype)
    per_image = w_s * terms["dssim"] + w_a * terms["mae"]
    aux = {k: v for k, v in terms.items() if not k.endswith("_map")}
    aux["loss"] = per_image
    if cfg.return_map:
        return w_s * terms["dssim_map"] + w_a * terms["mae_map"], aux
    return per_image, aux


@functools.partial(jax.jit, static_argnames=("cfg",))
def _compiled(cfg: LossConfig, predictions, targets, mask, weights):
    terms = evaluate_terms(cfg, predictions, targets, mask)
    loss, aux = _combine(cfg, terms, weights)
    return reduce(cfg, loss), aux


def checked_arrays(predictions, targets, mask, weights):
    """The checks that need concrete values, run before a compiled call; the arrays."""
    predictions = _jit.normalize_dynamic("predictions", predictions)
    targets = _jit.normalize_dynamic("targets", targets)
    mask = _jit.normalize_dynamic("mask", mask)
    _validation.check_mask_values(mask)
    check_weights(weights)
    return predictions, targets, mask


def _call(cfg: LossConfig, predictions, targets, mask, weights):
    """(loss, aux), compiled once per config, shapes and weights' structure (eager calls too)."""
    predictions, targets, mask = checked_arrays(predictions, targets, mask, weights)
    return _compiled(cfg, predictions, targets, mask, weights)


def as_config(preset_or_config, overrides: Mapping) -> LossConfig:
    """A LossConfig from a preset name, a LossConfig or a dict, with overrides applied."""
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
    check_fields(overrides, "overrides")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


# ---------------------------------------------------------------------------- public
def dssim_mae_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val: float,
    alpha: float | ArrayLike = 0.84,
    structure: str = "ssim",
    dssim_form: str = "half",
    normalize_mae: bool = True,
    mask: ArrayLike | None = None,
    reduction: str = "none",
    return_map: bool = False,
    **ssim_options,
) -> jax.Array:
    r"""The mixed loss ``alpha * D + (1 - alpha) * M`` of each image.

    ``D`` is ``(1 - S) / 2`` (``dssim_form="half"``, the DSSIM of kornia and
    monodepth2) or ``1 - S`` (``"full"``, the "DSSIM" of Gaussian Splatting and
    Zhao et al.), with ``S`` the SSIM (``structure="ssim"``), the pyramid
    MS-SSIM of Wang et al. (``"ms_ssim"``) or the full-resolution multi-sigma
    MS-SSIM of Zhao et al. (``"multi_sigma"``, :func:`multi_sigma_ssim`) of the
    image. ``M`` is the mean absolute error, divided by ``max_val`` when
    ``normalize_mae`` so both terms lie on [0, 1]-like scales whatever the data
    range.

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
        ``per_pixel``, ``mae_weighting``.

    Returns:
      The loss per image (shape ``predictions.shape[:-1 - spatial_dims]``), its
      reduction, or the loss map.

    Raises:
      ValueError: ``alpha`` outside [0, 1], an unknown ``structure``,
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
    for name in ("w_structural", "w_absolute"):
        if name in ssim_options:
            raise ValueError(f"`{name}` is not an option here; the weights come from `alpha`.")
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
    elif hasattr(alpha, "shape") and hasattr(alpha, "dtype"):
        if alpha.ndim != 0:
            raise ValueError(f"`alpha` must be a scalar, got shape {alpha.shape}.")
    else:
        raise TypeError(f"`alpha` must be a number in [0, 1], got {alpha!r}.")
    # The weights come from `alpha`, passed as data: one compilation for every alpha.
    cfg = LossConfig(
        w_structural=0.5,
        w_absolute=0.5,
        structure=structure,
        dssim_form=dssim_form,
        max_val=max_val,
        normalize_mae=normalize_mae,
        reduction=reduction,
        return_map=return_map,
        **ssim_options,
    )
    return _call(cfg, predictions, targets, mask, {"ssim": alpha, "mae": 1.0 - alpha})[0]


def make_loss(preset_or_config: str | LossConfig | Mapping, **overrides) -> Callable:
    """A pure DSSIM+MAE loss function from a named recipe or a config.

    The returned ``loss_fn(predictions, targets, *, mask=None, weights=None)``
    returns ``(loss, aux)``:

    * ``loss``: ``w_s * D + w_a * M`` per image (or its reduction, or the map;
      see :class:`LossConfig`), with ``D`` in the config's ``dssim_form``;
    * ``aux``: per-image values to log, computed from the same single SSIM
      evaluation: ``"ssim"`` (S of the structural term: SSIM, or MS-SSIM for
      ``structure="ms_ssim"`` and ``"multi_sigma"``, which also get the key
      ``"ms_ssim"``),
      ``"dssim"`` (``D`` exactly as the loss uses it: the config's form,
      clipped if configured), ``"mae"`` (``M`` as the loss uses it: normalised
      and/or Gaussian-weighted), ``"psnr"`` (dB, ``max_val`` as data range) and
      ``"loss"``. Always ``aux["loss"] == w_s * aux["dssim"] + w_a * aux["mae"]``.

    ``weights={"ssim": w_s, "mae": w_a}`` replaces the config's weights for one
    call (either key may be left out). The values may be traced scalars, so a
    schedule can change them every step of a jitted function without
    recompiling. A zero weight still computes its term (it is logged) and its
    gradient contribution is exactly zero (both terms have finite gradients).

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
      ([0.0, 0.0], ['dssim', 'loss', 'mae', 'psnr', 'ssim'])
      >>> loss, _ = loss_fn(x, 0.5 * x, weights={"ssim": 0.0, "mae": 1.0})
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
        return _call(cfg, predictions, targets, mask, weights)

    loss_fn.config = cfg
    return loss_fn
