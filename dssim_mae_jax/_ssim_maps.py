"""The SSIM and contrast-structure maps, and their derivative (one analytic rule).

:func:`ssim_cs_maps` is a ``jax.custom_jvp``: its tangent is written out from
the local moments (``docs/ssim_derivatives.md``) and is linear in the input
tangents, so JAX transposes it for reverse mode. One rule therefore serves
``jvp``, ``jacfwd``, ``linearize``, ``grad``, ``jacrev`` and every higher
order (the coefficients are ordinary JAX expressions of the primal values).
The tangent moments are filtered by :func:`_filters.filter_valid_linear`, a
linear map that carries its own transpose (the full correlation), so reverse
mode filters cotangents with the same loops as the forward pass. A zero input
tangent stays symbolic (one filtered moment fewer when only the predictions
are differentiated). The core is rematerialised (``jax.checkpoint``): a
reverse pass keeps only the inputs and recomputes the moments, as a
hand-written VJP would.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from dssim_mae_jax import _filters, _validation


class Spec(NamedTuple):
    """Static description of one SSIM evaluation (hashable)."""

    taps: tuple[float, ...]
    spatial_dims: int
    padding: str

    @property
    def axes(self) -> tuple[int, ...]:
        return tuple(range(-1 - self.spatial_dims, -1))


def pad(spec: Spec, x: jnp.ndarray, constant: float = 0.0) -> jnp.ndarray:
    """`x` padded for `spec`'s window (unchanged for ``"valid"``)."""
    return _filters.pad_spatial(x, spec.axes, len(spec.taps), spec.padding, constant)


class Centered(NamedTuple):
    """Padded, centred images and the constants taken out of them."""

    xp: jnp.ndarray  # pad(x) - cx
    yp: jnp.ndarray  # pad(y) - cy, formed as xp - dp
    dp: jnp.ndarray  # pad(x - y) - cd
    mp: jnp.ndarray | None  # padded mask
    inv_w: jnp.ndarray | None  # 1 / filtered mask (0 where no support)
    cx: jnp.ndarray  # mean of x
    cy: jnp.ndarray  # cx - cd
    cd: jnp.ndarray  # mean of x - y


class Moments(NamedTuple):
    """Local moments of the centred images x' and d' = x' - y'."""

    mx: jnp.ndarray  # E[x']
    md: jnp.ndarray  # E[d']
    e_sum: jnp.ndarray  # E[x'^2 + y'^2]
    e_diff: jnp.ndarray  # E[d'^2]


class Terms(NamedTuple):
    """The maps and the intermediate terms their derivative needs."""

    s: jnp.ndarray  # SSIM map
    cs: jnp.ndarray  # contrast-structure map
    mx: jnp.ndarray  # E[x'] (centred)
    my: jnp.ndarray  # E[y'] (centred)
    mu_x: jnp.ndarray
    mu_y: jnp.ndarray
    md: jnp.ndarray  # E[d'] (centred)
    dm: jnp.ndarray  # mu_x - mu_y
    dl: jnp.ndarray  # (mu_x - mu_y)^2 = B1 - A1
    vd: jnp.ndarray  # var(x - y) = B2 - A2
    a1: jnp.ndarray
    b1: jnp.ndarray
    a2: jnp.ndarray
    b2: jnp.ndarray
    d: jnp.ndarray  # B1 * B2


def _filter(spec: Spec, arrays):
    return _filters.filter_valid_many(arrays, taps=spec.taps, axes=spec.axes)


def centered_moments(spec: Spec, x, y, mask) -> tuple[Centered, Moments]:
    """The four local moment maps SSIM needs, from padded, centred images.

    Moments: the local means ``mx`` of ``x' = x - cx`` and ``md`` of
    ``d' = (x - y) - cd``, and the local ``E[x'^2 + y'^2]`` and ``E[d'^2]``,
    with ``y' = x' - d'``; ``cx`` and ``cd`` are per-image, per-channel means
    (constants: (co)variances do not depend on them, but float32 no longer
    cancels ``E[x^2] - E[x]^2`` catastrophically). From these,
    ``B1 - A1 = (mu_x - mu_y)^2`` and ``B2 - A2 = var(x - y)`` come from the
    difference image alone, so they vanish exactly for identical images (SSIM
    exactly 1, derivative exactly 0, whatever fusion the compiler chooses).
    One filtering fewer than the textbook five moments.
    """
    axes = spec.axes
    # Constants: the maps do not depend on them (docs/ssim_derivatives.md).
    cx = lax.stop_gradient(jnp.mean(x, axis=axes, keepdims=True))
    cd = lax.stop_gradient(jnp.mean(x - y, axis=axes, keepdims=True))
    xp = pad(spec, x) - _filters.spread_channels(cx, pad(spec, x).shape)
    dp = pad(spec, x - y) - _filters.spread_channels(cd, xp.shape)
    yp = xp - dp
    values = (xp, dp, xp * xp + yp * yp, dp * dp)
    if mask is None:
        return Centered(xp, yp, dp, None, None, cx, cx - cd, cd), Moments(*_filter(spec, values))
    # "same" treats the zero padding as data, so the padded mask is one there.
    mp = pad(spec, mask, constant=1.0)
    w, *sums = _filter(spec, [mp] + [mp * v for v in values])
    # Masks are non-negative, so a filtered mask is exactly 0 only where the
    # window sees no valid pixel: those positions get zero moments (and SSIM 1).
    ok = w > 0
    inv_w = jnp.where(ok, 1.0 / jnp.where(ok, w, 1.0), 0.0)
    moments = Moments(*(v * inv_w for v in sums))
    return Centered(xp, yp, dp, mp, inv_w, cx, cx - cd, cd), moments


def terms(moments: Moments, c: Centered, c1, c2) -> Terms:
    """SSIM and contrast-structure maps plus the terms their derivative needs."""
    mx, md, e_sum, e_diff = moments
    my = mx - md
    mu_x, mu_y = mx + c.cx, my + c.cy
    dm = md + c.cd
    dl = dm * dm
    vd = e_diff - md * md
    # A1 directly (it is tiny for very different means, where B1 - dl would
    # cancel); B1 = A1 + dl is then exactly A1 for identical images.
    a1 = 2.0 * (mu_x * mu_y) + c1
    b1 = a1 + dl
    b2 = (e_sum - mx * mx - my * my) + c2
    a2 = b2 - vd
    d = b1 * b2
    return Terms((a1 * a2) / d, a2 / b2, mx, my, mu_x, mu_y, md, dm, dl, vd, a1, b1, a2, b2, d)


class Coefficients(NamedTuple):
    """Partial derivatives of a map w.r.t. E[x'], E[y'], E[x'^2 + y'^2], E[d'^2]."""

    d_mx: jnp.ndarray
    d_my: jnp.ndarray
    d_sum: jnp.ndarray
    d_diff: jnp.ndarray


def coefficients(t: Terms, *, luminance: bool) -> Coefficients:
    """The partial derivatives of the SSIM map (or, without luminance, of cs).

    ``docs/ssim_derivatives.md`` derives them. Every term carries a factor
    that is exactly zero when x == y (``dl``, ``dm``, ``md``, ``vd``; the
    ``E[d'^2]`` term is multiplied by ``d'`` in the tangent), so identical
    images get an exactly zero derivative.
    """
    r = t.vd / t.b2
    if luminance:
        q = t.a1 / t.d  # dS/dA2
        s_lum = t.a2 / t.d
        d_mx = 2.0 * (s_lum * (t.mu_y * t.dl - t.a1 * t.dm) / t.b1 + q * (t.md - r * t.mx))
        d_my = 2.0 * (s_lum * (t.mu_x * t.dl + t.a1 * t.dm) / t.b1 - q * (t.md + r * t.my))
    else:
        q = 1.0 / t.b2  # dcs/dA2
        d_mx = 2.0 * (q * (t.md - r * t.mx))
        d_my = -2.0 * (q * (t.md + r * t.my))
    return Coefficients(d_mx, d_my, r * q, -q)


MAPS = ("s", "cs")  # the maps the core can return: SSIM and contrast-structure


def _maps(spec: Spec, want: tuple[str, ...], x, y, mask, c1, c2):
    c, m = centered_moments(spec, x, y, mask)
    t = terms(m, c, c1, c2)
    return tuple(t.s if name == "s" else t.cs for name in want)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _maps_rule(spec: Spec, want: tuple[str, ...], x, y, mask, c1, c2):
    return _maps(spec, want, x, y, mask, c1, c2)


def _is_zero(t) -> bool:
    return isinstance(t, SymbolicZero)


def _jvp(spec: Spec, want: tuple[str, ...], primals, tangents):
    """Tangents of the wanted maps: linear in the tangents of x and y.

    The mask and the constants are not differentiated (the callers pass them
    as constants, behind ``stop_gradient``). A zero tangent stays symbolic, so
    the usual case (a gradient with respect to the predictions only) filters
    three tangent moments, not four, in forward mode and in its transpose.
    """
    x, y, mask, c1, c2 = primals
    tx, ty = tangents[:2]
    c, m = centered_moments(spec, x, y, mask)
    t = terms(m, c, c1, c2)
    # Tangents of the padded, centred images (the centring constants are constant);
    # None where the tangent is zero. d = x - y, so d' = x' - y'.
    txp = None if _is_zero(tx) else pad(spec, tx)
    typ = None if _is_zero(ty) else pad(spec, ty)
    if txp is None and typ is None:  # no rule call needs this; kept total
        txp = jnp.zeros_like(c.xp)
    # Tangents of E[x'], E[y'], E[x'^2 + y'^2], E[d'^2] before filtering, by index
    # (absent: zero).
    values: dict[int, jax.Array] = {}
    if txp is not None:
        values[0] = txp
        values[2] = 2.0 * (c.xp * txp)
        tdp = txp if typ is None else txp - typ
    elif typ is not None:
        tdp = -typ
    if typ is not None:
        values[1] = typ
        y_part = 2.0 * (c.yp * typ)
        values[2] = values[2] + y_part if 2 in values else y_part
    values[3] = 2.0 * (c.dp * tdp)
    present = sorted(values)
    parts = [values[i] for i in present]
    if c.mp is not None:
        parts = [c.mp * v for v in parts]
    filtered = _filters.filter_valid_linear(parts, taps=spec.taps, axes=spec.axes)
    if c.inv_w is not None:
        filtered = tuple(v * c.inv_w for v in filtered)
    moments = dict(zip(present, filtered, strict=True))

    def tangent(k: Coefficients):
        return sum(k[i] * v for i, v in moments.items())

    outs = tuple(t.s if name == "s" else t.cs for name in want)
    dots = tuple(tangent(coefficients(t, luminance=name == "s")) for name in want)
    return outs, dots


_maps_rule.defjvp(_jvp, symbolic_zeros=True)

# Rematerialised: reverse mode keeps the inputs and recomputes the moments.
_checkpointed = jax.checkpoint(_maps_rule, static_argnums=(0, 1))


def ssim_cs_maps(spec: Spec, x, y, mask, c1, c2, *, want=MAPS, reduce=None):
    """The wanted maps (SSIM ``"s"``, contrast-structure ``"cs"``), or their reductions.

    `x` and `y` are images divided by their data range (so ``c1 = k1^2``,
    ``c2 = k2^2``), masked-out pixels zeroed; `mask` (or None) is constant.
    Returns a tuple of maps ``[..., *out_spatial, C]`` in the order of `want`;
    with `reduce`, ``reduce(maps, mask)`` of each batch chunk instead (a per-image
    reduction, so no full-size map is materialised). Differentiable in `x`
    and `y` in forward and reverse mode, to any order.
    """
    want = tuple(want)
    if not want or any(name not in MAPS for name in want):
        raise ValueError(f"`want` must name maps among {MAPS}, got {want!r}.")

    def one(a, b, w):
        maps = _checkpointed(spec, want, a, b, w, c1, c2)
        return maps if reduce is None else reduce(maps, w)

    return _filters.over_batch_chunks(one, (x, y, mask), spec.spatial_dims)


def constants(k1, k2, dtype) -> tuple[jax.Array, jax.Array]:
    """C1 and C2 of images divided by their data range: ``k1^2`` and ``k2^2``."""
    _validation.check_stabilisers(k1, k2, dtype)
    return jnp.asarray(float(k1) ** 2, dtype), jnp.asarray(float(k2) ** 2, dtype)


def window_size(window, filter_size) -> tuple[str | tuple[float, ...], int]:
    """(checked window, number of taps): a window given as data sets the size."""
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


def make_spec(
    shape, dtype, *, filter_size, filter_sigma, k1, k2, window, padding, spatial_dims
) -> tuple[Spec, jax.Array, jax.Array]:
    """Checks the SSIM options against the image `shape`: (spec, c1, c2)."""
    window, filter_size = window_size(window, filter_size)
    _validation.check_positive("filter_sigma", filter_sigma)
    _validation.check_choice("padding", padding, _validation.PADDINGS)
    _validation.check_min_size(
        shape, spatial_dims, filter_size, f"the window has filter_size={filter_size} taps"
    )
    c1, c2 = constants(k1, k2, dtype)
    taps = _filters.window_taps(window, filter_size, filter_sigma, dtype)
    return Spec(taps, spatial_dims, padding), c1, c2
