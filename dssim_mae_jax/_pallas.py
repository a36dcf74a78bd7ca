"""The fused Pallas SSIM: package-internal entry point, differentiable to both images.

:func:`ssim_map` takes images already prepared as the XLA path prepares them
(float32, divided by the data range, masked-out pixels zeroed, the window as
normalised 1-D taps) and returns the SSIM map and its per-image mean. The
work is done by the kernels of ``_pallas_kernels.py``; this module holds the
XLA glue around them (centring, padding, the merged ``[rows, W * C]``
layout, the per-image mean) and the custom VJP whose backward pass is the
second kernel. See ``docs/pallas.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dssim_mae_jax import _filters, _reductions
from dssim_mae_jax import _pallas_kernels as kernels

PADDINGS = ("valid", "same", "reflect")

# Default tile: 32 output rows (the K - 1 halo rows are a third extra work for
# 11 taps) by 128 merged columns, 4 warps. Not tuned on a device yet.
TILE_ROWS = 32
TILE_COLS = 128
NUM_WARPS = 4


class Spec(NamedTuple):
    """Static description of one fused SSIM evaluation (hashable)."""

    taps: tuple[float, ...]
    padding: str
    c1: float
    c2: float
    tile_rows: int
    tile_cols: int
    num_warps: int
    interpret: bool


class FusedSSIM(NamedTuple):
    """What :func:`ssim_map` returns."""

    map: jax.Array  # [..., Ho, Wo, C]
    mean: jax.Array  # [...]: per image, over positions then channels
    deficit: jax.Array  # [...]: 1 - mean, accurate near 1 (for DSSIM)


class _Geometry(NamedTuple):
    """Sizes of one evaluation, in the merged layout (static)."""

    tiling: kernels.Tiling
    rows: int  # padded image rows
    cols: int  # padded image merged columns (W * C)
    out_rows: int  # map rows
    out_cols: int  # map merged columns
    fwd_rows: int  # forward output rows (a multiple of the tile)
    fwd_cols: int
    bwd_rows: int  # backward output rows (a multiple of the tile)
    bwd_cols: int
    in_rows: int  # rows of the input planes (both kernels' needs)
    in_cols: int


def _pow2_at_most(limit: int, n: int) -> int:
    """The smallest power of two >= min(n, limit) (limit a power of two)."""
    return min(limit, 1 << max(0, (n - 1).bit_length()))


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _geometry(spec: Spec, shape, masked: bool) -> _Geometry:
    _, h, w, c = shape
    k = len(spec.taps)
    grow = 0 if spec.padding == "valid" else k - 1
    rows, cols = h + grow, (w + grow) * c
    out_rows, out_cols = rows - k + 1, (w + grow - k + 1) * c
    tr = _pow2_at_most(spec.tile_rows, out_rows)
    tc = _pow2_at_most(spec.tile_cols, out_cols)
    tiling = kernels.Tiling(
        spec.taps, c, spec.c1, spec.c2, masked, tr, tc, spec.num_warps, spec.interpret
    )
    fwd_rows, fwd_cols = _round_up(out_rows, tr), _round_up(out_cols, tc)
    bwd_rows, bwd_cols = _round_up(rows, tr), _round_up(cols, tc)
    in_rows = max(fwd_rows + k - 1, bwd_rows)
    in_cols = max(fwd_cols + (k - 1) * c, bwd_cols)
    return _Geometry(
        tiling, rows, cols, out_rows, out_cols, fwd_rows, fwd_cols, bwd_rows, bwd_cols,
        in_rows, in_cols,
    )  # fmt: skip


def _pad_image(spec: Spec, x, constant: float = 0.0):
    """``[B, H, W, C]`` padded along H and W for the window (as the XLA path pads)."""
    return _filters.pad_spatial(x, (-3, -2), len(spec.taps), spec.padding, constant)


def _to_planes(a, rows: int, cols: int):
    """``[B, H, W, C]`` to ``[B, rows, cols]`` merged planes, zero-extended."""
    b, h, w, c = a.shape
    a = a.reshape(b, h, w * c)
    return jnp.pad(a, ((0, 0), (0, rows - h), (0, cols - w * c)))


class _Residuals(NamedTuple):
    xp: jnp.ndarray
    dp: jnp.ndarray
    mp: jnp.ndarray | None
    partials: tuple[jnp.ndarray, ...]


def _forward(spec: Spec, x, y, mask):
    """(map ``[B, Ho, Wo, C]``, residuals) for images ``[B, H, W, C]``."""
    g = _geometry(spec, x.shape, mask is not None)
    c = x.shape[-1]
    # Per-image, per-channel centring constants, as in the XLA path: variances do
    # not depend on them, but float32 no longer cancels E[x^2] - E[x]^2.
    cx = lax.stop_gradient(jnp.mean(x, axis=(1, 2), keepdims=True))
    cd = lax.stop_gradient(jnp.mean(x - y, axis=(1, 2), keepdims=True))
    xp = _to_planes(_pad_image(spec, x) - cx, g.in_rows, g.in_cols)
    dp = _to_planes(_pad_image(spec, x - y) - cd, g.in_rows, g.in_cols)
    mp = None
    if mask is not None:
        # "same" treats the zero padding as data: the padded mask is one there.
        mp = _to_planes(_pad_image(spec, mask, constant=1.0), g.in_rows, g.in_cols)
    per_column = jnp.concatenate([cx, cx - cd, cd, jnp.zeros_like(cx)], axis=1)  # [B, 4, 1, C]
    reps = g.fwd_cols // c + 1
    consts = jnp.tile(per_column[:, :, 0, :], (1, 1, reps))[:, :, : g.fwd_cols]
    s, *partials = kernels.forward(g.tiling, xp, dp, mp, consts, g.fwd_rows, g.fwd_cols)
    b = x.shape[0]
    s = s[:, : g.out_rows, : g.out_cols].reshape(b, g.out_rows, g.out_cols // c, c)
    partials = tuple(p[:, : g.out_rows, : g.out_cols] for p in partials)
    return s, _Residuals(xp, dp, mp, partials)


def _backward(spec: Spec, shape, res: _Residuals, gs):
    """Gradients w.r.t. x and y ``[B, H, W, C]`` of ``sum(gs * map)``."""
    g = _geometry(spec, shape, res.mp is not None)
    b, h, w, c = shape
    k = len(spec.taps)
    gs = gs.reshape(b, g.out_rows, g.out_cols)
    rows, cols = g.bwd_rows + k - 1, g.bwd_cols + (k - 1) * c
    widths = (
        (0, 0),
        (k - 1, rows - g.out_rows - (k - 1)),
        ((k - 1) * c, cols - g.out_cols - (k - 1) * c),
    )
    coeffs = tuple(jnp.pad(gs * p, widths) for p in res.partials)
    gx, gy = kernels.backward(g.tiling, coeffs, res.xp, res.dp, res.mp, g.bwd_rows, g.bwd_cols)
    grow = 0 if spec.padding == "valid" else k - 1
    hp, wp = h + grow, w + grow

    def unpad(a):
        a = a[:, :hp, : wp * c].reshape(b, hp, wp, c)
        # The padding is linear; its adjoint folds border contributions back.
        _, pad_vjp = jax.vjp(lambda z: _pad_image(spec, z), jnp.zeros(shape, a.dtype))
        return pad_vjp(a)[0]

    return unpad(gx), unpad(gy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_map(spec: Spec, x, y, mask):
    return _forward(spec, x, y, mask)[0]


def _fused_map_fwd(spec, x, y, mask):
    s, res = _forward(spec, x, y, mask)
    return s, (res, x.shape)


def _fused_map_bwd(spec, saved, gs):
    res, shape = saved
    gx, gy = _backward(spec, shape, res, gs)
    return gx, gy, None


_fused_map.defvjp(_fused_map_fwd, _fused_map_bwd)


def _check(x, y, mask, taps, padding, spatial_dims) -> None:
    if spatial_dims != 2:
        raise ValueError(
            f"The Pallas SSIM supports `spatial_dims=2` only, got {spatial_dims!r}; "
            "use implementation='xla' for signals and volumes."
        )
    if padding not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}, got {padding!r}.")
    for name, a in (("x", x), ("y", y)) + ((("mask", mask),) if mask is not None else ()):
        if jnp.result_type(a) != jnp.float32:
            raise TypeError(
                f"The Pallas SSIM takes float32 `{name}` (statistics are float32), got "
                f"{jnp.result_type(a)}; use implementation='xla' for float64."
            )
        if a.shape != x.shape:
            raise ValueError(f"`{name}` must have the shape of `x` {x.shape}, got {a.shape}.")
    if x.ndim < 3:
        raise ValueError(f"`x` must be [..., H, W, C], got shape {x.shape}.")
    k = len(taps)
    if k < 1 or (padding == "valid" and min(x.shape[-3:-1]) < k):
        raise ValueError(
            f"The spatial size of `x` must be at least the window ({k} taps), got {x.shape}."
        )
    if padding == "reflect" and min(x.shape[-3:-1]) <= (k - 1) - (k - 1) // 2:
        raise ValueError(f"`padding='reflect'` needs more than {k // 2} pixels, got {x.shape}.")


def _static_float(name: str, value) -> float:
    try:
        return float(np.asarray(value))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        raise TypeError(
            f"`{name}` must be a concrete number for the Pallas SSIM, got a traced value."
        ) from None


def default_interpret() -> bool:
    """Interpret the kernels unless JAX's default backend is a GPU (Triton)."""
    return jax.default_backend() != "gpu"


def ssim_map(
    x: jnp.ndarray,
    y: jnp.ndarray,
    mask: jnp.ndarray | None,
    *,
    taps: Sequence[float],
    padding: str,
    c1: float,
    c2: float,
    spatial_dims: int = 2,
    interpret: bool | None = None,
    tile_rows: int = TILE_ROWS,
    tile_cols: int = TILE_COLS,
    num_warps: int = NUM_WARPS,
) -> FusedSSIM:
    """The SSIM map and its per-image mean, by the fused Pallas kernels.

    The inputs are prepared as for the XLA path: float32 images divided by
    the data range (so ``C1 = k1^2``, ``C2 = k2^2``), masked-out pixels set to
    0, the separable window as 1-D taps summing to 1. The map and the mean
    follow the XLA path's formulas (the same centring, moments and mean
    rule), so they agree to float32 rounding. Differentiable with respect to
    `x` and `y` (a custom VJP whose backward pass is a second kernel); the
    mask is a constant weight. NaN handling of whole images (a NaN among the
    pixels makes the image's value NaN) is the caller's, as for the XLA path.

    Args:
      x: images ``[..., H, W, C]``, float32.
      y: images of the same shape.
      mask: weights of the same shape (1 valid, 0 invalid) or None.
      taps: the 1-D window, applied along H and W.
      padding: ``"valid"``, ``"same"`` (zeros; the mask is 1 there) or ``"reflect"``.
      c1: the luminance constant ``k1^2`` (a concrete number).
      c2: the contrast constant ``k2^2`` (a concrete number).
      spatial_dims: must be 2.
      interpret: run the kernels in the Pallas interpreter (None: unless the
        default backend is a GPU).
      tile_rows: output rows per program (rounded to a power of two).
      tile_cols: merged output columns (``W * C``) per program, a power of two.
      num_warps: Triton warps per program.

    Returns:
      ``FusedSSIM(map, mean, deficit)``: the map ``[..., Ho, Wo, C]``
      (``Ho = H - K + 1`` for ``"valid"``, ``H`` otherwise), the per-image
      mean over positions (weighted by the mask at each window centre) and
      then channels, ``[...]``, and ``1 - mean`` computed from the deficits
      (accurate near 1, for DSSIM), by the XLA path's rule.

    Raises:
      ValueError: ``spatial_dims != 2``, an unknown padding, mismatched
        shapes, images smaller than the window.
      TypeError: non-float32 arrays, traced constants.
    """
    taps = tuple(float(v) for v in taps)
    _check(x, y, mask, taps, padding, spatial_dims)
    for name, v in (("tile_rows", tile_rows), ("tile_cols", tile_cols)):
        if not isinstance(v, int) or v < 1 or v & (v - 1):
            raise ValueError(f"`{name}` must be a power of two, got {v!r}.")
    spec = Spec(
        taps,
        padding,
        _static_float("c1", c1),
        _static_float("c2", c2),
        tile_rows,
        tile_cols,
        int(num_warps),
        default_interpret() if interpret is None else bool(interpret),
    )
    lead, image = x.shape[:-3], x.shape[-3:]
    n = math.prod(lead)
    flat = [None if a is None else a.reshape(n, *image) for a in (x, y, mask)]
    if mask is not None:
        flat[2] = lax.stop_gradient(flat[2])
    s = _fused_map(spec, *flat)
    weights = flat[2]
    if weights is not None and padding == "valid":
        weights = _filters.crop_to_centers(weights, (-3, -2), len(taps))
    per_channel, per_channel_deficit = _reductions.unit_mean(s, weights, (1, 2))
    mean, deficit = _reductions.unit_mean(per_channel, None, -1, per_channel_deficit)
    return FusedSSIM(s.reshape(*lead, *s.shape[1:]), mean.reshape(lead), deficit.reshape(lead))
