"""Forward and reverse mode from one analytic rule, against float64 autodiff of plain jnp.

The references below are written from the textbook definitions (Wang et al.
2004: five local moments; Wang, Simoncelli & Bovik 2003: the pyramid with
tf.image.ssim_multiscale's pooling; Zhao et al. 2017: l of the largest sigma
times every cs) with plain jax.numpy, no custom rules, so JAX differentiates
them itself. The derivation the library's rule follows is in
docs/ssim_derivatives.md.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dssim_mae_jax as dmj
from dssim_mae_jax import _filters


def _taps(size, sigma):
    return jnp.asarray(_filters.gaussian_taps(size, sigma))


def _correlate(v, taps):
    """Valid separable correlation of [H, W] with 1-D taps (plain slices)."""
    k = taps.shape[0]
    h, w = v.shape
    v = sum(taps[i] * v[i : h - k + 1 + i, :] for i in range(k))
    return sum(taps[j] * v[:, j : w - k + 1 + j] for j in range(k))


def _pad(v, k, padding, constant=0.0):
    before, after = (k - 1) // 2, k - 1 - (k - 1) // 2
    if padding == "valid":
        return v
    if padding == "same":
        return jnp.pad(v, ((before, after), (before, after)), constant_values=constant)
    return jnp.pad(v, ((before, after), (before, after)), mode="reflect")


def _ref_maps(x, y, taps, padding="valid", mask=None, c1=1e-4, c2=9e-4):
    """(SSIM map, cs map) of one [H, W] channel from the five moments."""
    k = taps.shape[0]
    m = jnp.ones_like(x) if mask is None else mask
    mp = _pad(m, k, padding, 1.0)
    xp, yp = _pad(x * (m > 0), k, padding), _pad(y * (m > 0), k, padding)
    w = _correlate(mp, taps)

    def f(v):
        return _correlate(mp * v, taps) / w

    mu_x, mu_y = f(xp), f(yp)
    var_x, var_y = f(xp * xp) - mu_x**2, f(yp * yp) - mu_y**2
    cov = f(xp * yp) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    return (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs, cs


def _ref_ssim(x, y, taps, padding="valid", mask=None):
    s, _ = _ref_maps(x, y, taps, padding, mask)
    if mask is None:
        return jnp.mean(s)
    k = taps.shape[0]
    centre = (
        mask
        if padding != "valid"
        else mask[(k - 1) // 2 :, (k - 1) // 2 :][: s.shape[0], : s.shape[1]]
    )
    return jnp.sum(s * centre) / jnp.sum(centre)


def _pool(v):
    h, w = v.shape
    v = jnp.pad(v, ((0, h % 2), (0, w % 2)), mode="symmetric")
    return 0.25 * (v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2])


def _ref_ms_ssim(x, y, taps, weights):
    out = 1.0
    for level, weight in enumerate(weights):
        if level:
            x, y = _pool(x), _pool(y)
        s, cs = _ref_maps(x, y, taps)
        out = out * jnp.mean(s if level == len(weights) - 1 else cs) ** weight
    return out


def _ref_multi_sigma(x, y, size, sigmas):
    out = None
    for sigma in sigmas:
        s, cs = _ref_maps(x, y, _taps(size, sigma))
        factor = s if sigma == max(sigmas) else cs
        out = factor if out is None else out * factor
    return jnp.mean(out)


def _pair(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    return jnp.asarray(x), jnp.asarray(np.clip(x + 0.2 * rng.standard_normal(shape), 0, 1))


def _close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(1.0, float(np.max(np.abs(b)))))


CASES = {
    # name: (ours(x [H, W]) given y, reference(x) given y, shape)
    "ssim_valid": (
        lambda x, y: dmj.ssim(x[..., None], y[..., None], max_val=1.0, filter_size=5),
        lambda x, y: _ref_ssim(x, y, _taps(5, 1.5)),
        (9, 8),
    ),
    "ssim_same_masked": (
        lambda x, y, m: dmj.ssim(
            x[..., None],
            y[..., None],
            max_val=1.0,
            filter_size=5,
            padding="same",
            mask=m[..., None],
        ),
        lambda x, y, m: _ref_ssim(x, y, _taps(5, 1.5), "same", m),
        (8, 8),
    ),
    "ssim_reflect_masked": (
        lambda x, y, m: dmj.ssim(
            x[..., None],
            y[..., None],
            max_val=1.0,
            filter_size=3,
            padding="reflect",
            mask=m[..., None],
        ),
        lambda x, y, m: _ref_ssim(x, y, _taps(3, 1.5), "reflect", m),
        (7, 8),
    ),
    "ssim_valid_masked": (
        lambda x, y, m: dmj.ssim(
            x[..., None], y[..., None], max_val=1.0, filter_size=3, mask=m[..., None]
        ),
        lambda x, y, m: _ref_ssim(x, y, _taps(3, 1.5), "valid", m),
        (8, 7),
    ),
    "dssim": (
        lambda x, y: dmj.dssim(x[..., None], y[..., None], max_val=1.0, filter_size=5),
        lambda x, y: (1.0 - _ref_ssim(x, y, _taps(5, 1.5))) / 2.0,
        (8, 8),
    ),
    "ms_ssim": (
        lambda x, y: dmj.ms_ssim(
            x[..., None], y[..., None], max_val=1.0, filter_size=3, power_factors=(0.3, 0.3, 0.4)
        ),
        lambda x, y: _ref_ms_ssim(x, y, _taps(3, 1.5), (0.3, 0.3, 0.4)),
        (11, 10),
    ),
    "multi_sigma_ssim": (
        lambda x, y: dmj.multi_sigma_ssim(
            x[..., None], y[..., None], max_val=1.0, filter_size=5, sigmas=(0.5, 1.0, 2.0)
        ),
        lambda x, y: _ref_multi_sigma(x, y, 5, (0.5, 1.0, 2.0)),
        (8, 8),
    ),
    "loss_seed_naive": (
        lambda x, y: dmj.make_loss("seed-naive", filter_size=5)(
            x[None, ..., None], y[None, ..., None]
        )[0][0],
        lambda x, y: 0.8 * (1.0 - _ref_ssim(x, y, _taps(5, 1.5))) + 0.2 * jnp.mean(jnp.abs(x - y)),
        (8, 8),
    ),
}


def _functions(name, x, y, mask):
    ours, ref, _ = CASES[name]
    if "masked" in name:
        return (lambda a: ours(a, y, mask)), (lambda a: ref(a, y, mask))
    return (lambda a: ours(a, y)), (lambda a: ref(a, y))


def _setup(name):
    shape = CASES[name][2]
    x, y = _pair(shape, 1)
    mask = jnp.asarray((np.random.default_rng(2).random(shape) > 0.3).astype(np.float64))
    f, ref = _functions(name, x, y, mask)
    tangent = jnp.asarray(np.random.default_rng(3).standard_normal(shape))
    return x, tangent, f, ref


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_reverse_and_second_order_match_float64_plain_jnp(x64, name):
    x, tangent, f, ref = _setup(name)
    _close(f(x), ref(x), 1e-12)
    _close(jax.jvp(f, (x,), (tangent,))[1], jax.jvp(ref, (x,), (tangent,))[1])
    _close(jax.grad(f)(x), jax.grad(ref)(x))
    # Forward over reverse: a Hessian-vector product.
    hvp = jax.jvp(jax.grad(f), (x,), (tangent,))[1]
    _close(hvp, jax.jvp(jax.grad(ref), (x,), (tangent,))[1])


@pytest.mark.parametrize("name", ["ssim_reflect_masked", "multi_sigma_ssim"])
def test_every_transformation(x64, name):
    """linearize, jacfwd, jacrev and grad of grad (reverse over reverse)."""
    x, tangent, f, ref = _setup(name)
    expected_jvp = jax.jvp(ref, (x,), (tangent,))[1]
    expected_grad = jax.grad(ref)(x)
    _, lin = jax.linearize(f, x)
    _close(lin(tangent), expected_jvp)
    _close(jax.jacfwd(f)(x), expected_grad)
    _close(jax.jacrev(f)(x), expected_grad)
    gg = jax.grad(lambda a: jnp.sum(jax.grad(f)(a) * tangent))(x)
    _close(gg, jax.grad(lambda a: jnp.sum(jax.grad(ref)(a) * tangent))(x))


def test_hessian_matches_dm_pix(x64):
    """The full Hessian of the mean SSIM, against dm_pix's plain-jnp SSIM (float64)."""
    import dm_pix

    x, y = _pair((1, 12, 12, 1), 4)
    ours = jax.hessian(lambda a: dmj.ssim(a, y, max_val=1.0)[0])(x)
    peer = jax.hessian(lambda a: dm_pix.ssim(a, y)[0])(x)
    _close(ours, peer)


@pytest.mark.parametrize(
    "pair",
    [
        ("flat", lambda x: (jnp.full_like(x, 0.5), jnp.full_like(x, 0.5))),
        ("zeros", lambda x: (jnp.zeros_like(x), jnp.zeros_like(x))),
        ("anti", lambda x: (x, 1.0 - x)),
        ("zero_vs_image", lambda x: (jnp.zeros_like(x), x)),
    ],
    ids=lambda p: p[0],
)
def test_forward_mode_is_finite_on_adversarial_inputs(pair):
    x = jnp.asarray(np.random.default_rng(5).random((1, 12, 12, 2)), jnp.float32)
    a, b = pair[1](x)
    tangent = jnp.ones_like(a)
    for fn in (
        functools.partial(dmj.ssim, max_val=1.0),
        functools.partial(dmj.multi_sigma_ssim, max_val=1.0, filter_size=11),
    ):
        f = lambda p, fn=fn: fn(p, b)[0]
        assert np.all(np.isfinite(jax.jvp(f, (a,), (tangent,))[1]))
        assert np.all(np.isfinite(jax.grad(f)(a)))
        assert np.all(np.isfinite(jax.jacfwd(f)(a)))


def test_derivatives_are_exactly_zero_at_identical_images():
    x = jnp.asarray(np.random.default_rng(6).random((1, 16, 16, 3)), jnp.float32)
    tangent = jnp.asarray(np.random.default_rng(7).standard_normal(x.shape), jnp.float32)
    for f in (
        lambda p: dmj.ssim(p, x, max_val=1.0)[0],
        lambda p: dmj.ssim(p, x, max_val=1.0, padding="reflect", filter_size=3)[0],
        lambda p: dmj.multi_sigma_ssim(p, x, max_val=1.0, filter_size=11)[0],
    ):
        assert float(jax.jvp(f, (x,), (tangent,))[1]) == 0.0
        assert np.all(np.asarray(jax.grad(f)(x)) == 0.0)
