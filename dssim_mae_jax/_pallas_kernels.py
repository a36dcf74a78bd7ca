"""Pallas kernels of the fused SSIM: separable rolling-window filtering per tile.

Layout: each image is a plane ``[rows, W * C]`` (channels last, the last
spatial axis merged with the channels: a free reshape), so a horizontal tap
``j`` reads the column ``j * C`` further on. A program of the grid
``(plane, row tile, column tile)`` owns ``tile_rows`` output rows of
``tile_cols`` merged columns. It walks down its rows once: each step filters
one new input row horizontally (``K`` shifted loads per input map, the moment
products formed on the fly), keeps the last ``K`` filtered rows in registers
(the loop carry), and filters them vertically into one output row. Every
input row is read ``K`` times (from L1/L2, neighbouring columns) and every
intermediate stays on chip; the only HBM traffic is the input planes, the
tile halo (``K - 1`` rows per tile) and the outputs.

* :func:`forward` writes the SSIM map and the four per-pixel partial
  derivatives of the map with respect to the local moments (the terms of the
  analytic gradient in ``docs/pallas.md``).
* :func:`backward` filters the cotangent-weighted partials with the adjoint
  window (reversed taps over zero-padded planes) and combines them with the
  centred images into the gradients with respect to both (padded) images.

The kernels are lowered with Triton on GPUs (``jax.experimental.pallas.triton``)
or run by the Pallas interpreter (``interpret=True``) anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

# Below this filtered-mask weight a position sees no valid pixel at all (as in
# the XLA path, dssim_mae_jax/_ssim.py).
MIN_SUPPORT = 1e-10


class Tiling(NamedTuple):
    """Static kernel configuration (hashable)."""

    taps: tuple[float, ...]
    channels: int
    c1: float
    c2: float
    masked: bool
    tile_rows: int
    tile_cols: int
    num_warps: int
    interpret: bool


def tap_sum(taps: Sequence[float], get: Callable[[int], tuple]) -> tuple:
    """``sum_i taps[i] * get(i)`` elementwise over tuples; symmetric taps share a multiply."""
    k = len(taps)
    out = None
    for i in range(k // 2):
        j = k - 1 - i
        a, b = get(i), get(j)
        if taps[i] == taps[j]:
            term = tuple((u + v) * taps[i] for u, v in zip(a, b, strict=True))
        else:
            term = tuple(u * taps[i] + v * taps[j] for u, v in zip(a, b, strict=True))
        out = term if out is None else tuple(o + t for o, t in zip(out, term, strict=True))
    if k % 2:
        term = tuple(u * taps[k // 2] for u in get(k // 2))
        out = term if out is None else tuple(o + t for o, t in zip(out, term, strict=True))
    return out


def _rolling(taps, tile_rows: int, row0, row_values, emit) -> None:
    """Vertical pass over horizontally filtered rows kept in the loop carry.

    `row_values(r)` filters input row `r` horizontally (a tuple of vectors);
    `emit(i, values)` receives output row `i` of the tile. One loop over the
    ``tile_rows + K - 1`` input rows (the first ``K - 1`` only fill the
    window), so the kernel holds one copy of the row code.
    """
    k = len(taps)
    probe = jax.eval_shape(row_values, row0)
    empty = tuple(jnp.zeros(a.shape, a.dtype) for a in probe)

    def body(t, carry):
        window = (*carry[1:], row_values(row0 + t))

        @pl.when(t >= k - 1)
        def _():
            emit(t - (k - 1), tap_sum(taps, lambda i: window[i]))

        return window

    lax.fori_loop(0, tile_rows + k - 1, body, (empty,) * k)


def ssim_terms(moments, consts, c1: float, c2: float, inv_w=None):
    """SSIM map and its partials w.r.t. (mx, my, E[x'^2 + y'^2], E[d'^2]), per pixel.

    The formulas of ``dssim_mae_jax/_ssim.py`` (``_maps`` and the gradient
    with a unit cotangent): ``B1 - A1 = dl`` and ``B2 - A2 = vd`` come from
    the difference image alone, so identical images give ``dl = vd = 0``:
    the map is exactly 1 (taken from the deficit, whatever the division's
    rounding) and every partial that reaches the gradient is exactly 0.
    """
    mx, md, e_sum, e_diff = moments
    cx, cy, cd = consts
    my = mx - md
    mu_x, mu_y = mx + cx, my + cy
    dm = md + cd
    dl = dm * dm
    vd = e_diff - md * md
    a1 = 2.0 * (mu_x * mu_y) + c1
    b1 = a1 + dl
    b2 = (e_sum - mx * mx - my * my) + c2
    a2 = b2 - vd
    d = b1 * b2
    # 1 - S = (B1 B2 - A1 A2) / D = (A1 vd + dl B2) / D, exactly 0 for x == y.
    deficit = (a1 * vd + dl * b2) / d
    s = jnp.where(deficit <= 0.5, 1.0 - deficit, (a1 * a2) / d)
    r = vd / b2
    q = a1 / d
    s_lum = a2 / d
    p_mx = 2.0 * (s_lum * (mu_y * dl - a1 * dm) / b1 + q * (md - r * mx))
    p_my = 2.0 * (s_lum * (mu_x * dl + a1 * dm) / b1 - q * (md + r * my))
    p_sum = r * q
    p_diff = -q
    partials = (p_mx, p_my, p_sum, p_diff)
    if inv_w is not None:
        partials = tuple(p * inv_w for p in partials)
    return s, partials


def _compiler_params(t: Tiling):
    if t.interpret:
        return {}
    from jax.experimental.pallas import triton as pl_triton

    return {"compiler_params": pl_triton.CompilerParams(num_warps=t.num_warps, num_stages=1)}


def _plane_spec(shape):
    """A whole plane per program (the tile and its halo are read from it)."""
    return pl.BlockSpec((None, *shape[1:]), lambda b, r, s: (b, 0, 0))


def _tile_spec(t: Tiling):
    return pl.BlockSpec((None, t.tile_rows, t.tile_cols), lambda b, r, s: (b, r, s))


def forward(t: Tiling, xp, dp, mp, consts, out_rows: int, out_cols: int):
    """SSIM map and four partial maps, each ``[planes, out_rows, out_cols]``.

    Args:
      t: the tiling.
      xp: centred, padded ``x`` planes ``[planes, rows, cols]`` with at least
        ``out_rows + K - 1`` rows and ``out_cols + (K - 1) * C`` columns.
      dp: centred, padded ``x - y`` planes of the same shape.
      mp: padded mask planes of the same shape, or None.
      consts: ``[planes, 4, out_cols]``: the centring constants ``cx``,
        ``cy``, ``cd`` of each merged column (row 3 unused).
      out_rows: multiple of ``t.tile_rows``.
      out_cols: multiple of ``t.tile_cols``.
    """
    taps, tw, stride = t.taps, t.tile_cols, t.channels

    def kernel(*refs):
        if t.masked:
            xp_ref, dp_ref, mp_ref, c_ref, s_ref, *p_refs = refs
        else:
            xp_ref, dp_ref, c_ref, s_ref, *p_refs = refs
            mp_ref = None
        col0 = pl.program_id(2) * tw
        row0 = pl.program_id(1) * t.tile_rows
        cx, cy, cd = c_ref[0, :], c_ref[1, :], c_ref[2, :]

        def row_values(row):
            def products(j):
                cols = pl.ds(col0 + j * stride, tw)
                xs, ds = xp_ref[row, cols], dp_ref[row, cols]
                ys = xs - ds
                values = (xs, ds, xs * xs + ys * ys, ds * ds)
                if mp_ref is None:
                    return values
                ms = mp_ref[row, cols]
                return (ms, *(ms * v for v in values))

            return tap_sum(taps, products)

        def emit(i, sums):
            inv_w = None
            if t.masked:
                w, *sums = sums
                ok = w > MIN_SUPPORT
                inv_w = jnp.where(ok, 1.0 / jnp.where(ok, w, 1.0), 0.0)
                sums = tuple(v * inv_w for v in sums)
            s, partials = ssim_terms(sums, (cx, cy, cd), t.c1, t.c2, inv_w)
            s_ref[i, :] = s
            for ref, p in zip(p_refs, partials, strict=True):
                ref[i, :] = p

        _rolling(taps, t.tile_rows, row0, row_values, emit)

    planes = xp.shape[0]
    inputs = (xp, dp, mp, consts) if t.masked else (xp, dp, consts)
    in_specs = [_plane_spec(a.shape) for a in inputs[:-1]]
    in_specs.append(pl.BlockSpec((None, 4, tw), lambda b, r, s: (b, 0, s)))
    shape = jax.ShapeDtypeStruct((planes, out_rows, out_cols), xp.dtype)
    return pl.pallas_call(
        kernel,
        grid=(planes, out_rows // t.tile_rows, out_cols // tw),
        in_specs=in_specs,
        out_specs=[_tile_spec(t)] * 5,
        out_shape=[shape] * 5,
        interpret=t.interpret,
        name="ssim_forward",
        **_compiler_params(t),
    )(*inputs)


def backward(t: Tiling, coeffs, xp, dp, mp, out_rows: int, out_cols: int):
    """Gradients w.r.t. the padded images, each ``[planes, out_rows, out_cols]``.

    Args:
      t: the tiling.
      coeffs: four planes (cotangent times each partial map), zero-padded by
        ``K - 1`` rows and ``(K - 1) * C`` columns before the map, with at
        least ``out_rows + K - 1`` rows and ``out_cols + (K - 1) * C`` columns.
      xp: centred, padded ``x`` planes, at least ``out_rows x out_cols``.
      dp: centred, padded ``x - y`` planes, same.
      mp: padded mask planes or None.
      out_rows: multiple of ``t.tile_rows``.
      out_cols: multiple of ``t.tile_cols``.
    """
    # The adjoint of a valid correlation: a full correlation with the reversed taps.
    taps, tw, stride = tuple(t.taps[::-1]), t.tile_cols, t.channels

    def kernel(*refs):
        c_refs, refs = refs[:4], refs[4:]
        if t.masked:
            xp_ref, dp_ref, mp_ref, gx_ref, gy_ref = refs
        else:
            xp_ref, dp_ref, gx_ref, gy_ref = refs
            mp_ref = None
        col0 = pl.program_id(2) * tw
        row0 = pl.program_id(1) * t.tile_rows

        def row_values(row):
            def loads(j):
                cols = pl.ds(col0 + j * stride, tw)
                return tuple(ref[row, cols] for ref in c_refs)

            return tap_sum(taps, loads)

        def emit(i, filtered):
            t_mx, t_my, t_sum, t_diff = filtered
            cols = pl.ds(col0, tw)
            row = row0 + i
            xs, ds = xp_ref[row, cols], dp_ref[row, cols]
            ys = xs - ds
            f_diff = 2.0 * ds * t_diff
            gx = t_mx + 2.0 * xs * t_sum + f_diff
            gy = t_my + 2.0 * ys * t_sum - f_diff
            if mp_ref is not None:
                ms = mp_ref[row, cols]
                gx, gy = ms * gx, ms * gy
            gx_ref[i, :] = gx
            gy_ref[i, :] = gy

        _rolling(taps, t.tile_rows, row0, row_values, emit)

    planes = xp.shape[0]
    inputs = (*coeffs, xp, dp, mp) if t.masked else (*coeffs, xp, dp)
    shape = jax.ShapeDtypeStruct((planes, out_rows, out_cols), xp.dtype)
    return pl.pallas_call(
        kernel,
        grid=(planes, out_rows // t.tile_rows, out_cols // tw),
        in_specs=[_plane_spec(a.shape) for a in inputs],
        out_specs=[_tile_spec(t)] * 2,
        out_shape=[shape] * 2,
        interpret=t.interpret,
        name="ssim_backward",
        **_compiler_params(t),
    )(*inputs)
