"""Every separable filtering method agrees with a float64 reference and with the others."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dssim_mae_jax import _filters, ms_ssim, ssim

METHODS = _filters.METHODS
TAPS = {
    "gaussian11": _filters.gaussian_taps(11, 1.5),
    "uniform3": _filters.uniform_taps(3),
    "asymmetric4": (0.1, 0.2, 0.3, 0.4),
}
# Shapes [..., *spatial, C] with their number of spatial axes.
SHAPES = {
    1: (2, 23, 3),
    2: (2, 17, 19, 3),
    3: (1, 9, 10, 8, 2),
}


def _reference_valid(x: np.ndarray, taps, n_spatial: int) -> np.ndarray:
    """Valid separable correlation in float64, one axis at a time."""
    k = len(taps)
    for axis in range(x.ndim - 1 - n_spatial, x.ndim - 1):
        n = x.shape[axis] - k + 1
        x = sum(
            t * np.take(x, np.arange(i, i + n), axis=axis) for i, t in enumerate(np.asarray(taps))
        )
    return x


def _axes(n_spatial: int) -> tuple[int, ...]:
    return tuple(range(-1 - n_spatial, -1))


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 2.0, shape), rng.uniform(-1.0, 2.0, shape)


CASES = [
    (1, "gaussian11"),
    (1, "asymmetric4"),
    (2, "gaussian11"),
    (2, "uniform3"),
    (2, "asymmetric4"),
    (3, "uniform3"),
    (3, "asymmetric4"),
]


@pytest.mark.parametrize(("n_spatial", "taps_name"), CASES)
def test_valid_matches_float64_reference(n_spatial, taps_name):
    taps = TAPS[taps_name]
    a, b = _pair(SHAPES[n_spatial])
    expected = [_reference_valid(v, taps, n_spatial) for v in (a, b, a * b)]
    inputs = [jnp.asarray(v, jnp.float32) for v in (a, b, a * b)]
    for method in METHODS:
        f = jax.jit(
            lambda *v, m=method: _filters.filter_valid_many(v, taps, _axes(n_spatial), method=m)
        )
        for g, e in zip(f(*inputs), expected, strict=True):
            assert g.shape == e.shape and g.dtype == jnp.float32, method
            # Inputs are rounded to float32 first; sums of ~|2| values: a few ulps.
            np.testing.assert_allclose(np.asarray(g), e, rtol=0, atol=2e-6, err_msg=method)


@pytest.mark.parametrize("n_spatial", [1, 2, 3])
def test_float64_mode_is_exact(x64, n_spatial):
    taps = TAPS["gaussian11"] if n_spatial < 3 else TAPS["uniform3"]
    a, b = _pair(SHAPES[n_spatial], seed=1)
    for method in METHODS:
        got = _filters.filter_valid_many(
            (jnp.asarray(a), jnp.asarray(b)), taps, _axes(n_spatial), method=method
        )
        for g, v in zip(got, (a, b), strict=True):
            assert g.dtype == jnp.float64, method
            np.testing.assert_allclose(
                np.asarray(g),
                _reference_valid(v, taps, n_spatial),
                rtol=0,
                atol=1e-13,
                err_msg=method,
            )


@pytest.mark.parametrize(("n_spatial", "taps_name"), [c for c in CASES if c[1] != "uniform3"])
def test_transpose_is_the_adjoint(x64, n_spatial, taps_name):
    """filter_valid_transpose_many is the VJP of filter_valid_many (float64, exact)."""
    taps = TAPS[taps_name]
    shape = SHAPES[n_spatial]
    a, b = (jnp.asarray(v) for v in _pair(shape, seed=2))
    axes = _axes(n_spatial)
    forward = lambda p, q: _filters.filter_valid_many((p, q), taps, axes, method="slices")
    outs = forward(a, b)
    rng = np.random.default_rng(3)
    cot = tuple(jnp.asarray(rng.normal(size=o.shape)) for o in outs)
    expected = jax.jit(lambda p, q, c: jax.vjp(forward, p, q)[1](c))(a, b, cot)
    for method in METHODS:
        got = jax.jit(
            lambda c, m=method: _filters.filter_valid_transpose_many(c, taps, axes, method=m)
        )(cot)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape, method
            np.testing.assert_allclose(
                np.asarray(g), np.asarray(e), rtol=0, atol=1e-12, err_msg=method
            )


@pytest.mark.parametrize("method", METHODS)
def test_transpose_float32_agrees_with_slices(method):
    taps = TAPS["gaussian11"]
    rng = np.random.default_rng(4)
    cot = [jnp.asarray(rng.normal(size=(2, 9, 7, 3)), jnp.float32) for _ in range(4)]
    f = jax.jit(lambda *c: _filters.filter_valid_transpose_many(c, taps, (-3, -2), method=method))
    ref = [_filters.filter_valid_transpose(c, taps, (-3, -2)) for c in cot]
    for g, e in zip(f(*cot), ref, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=0, atol=2e-6)


def test_single_array_and_non_channel_axes():
    """One map, and axes that are not right before the last axis (plain slices)."""
    taps = TAPS["gaussian11"]
    a, _ = _pair((12, 13, 2, 3))
    (got,) = _filters.filter_valid_many(
        (jnp.asarray(a, jnp.float32),), taps, (0, 1), method="stacked"
    )
    k = len(taps)
    ref = np.zeros((2, 3, 2, 3))
    for i in range(2):
        for j in range(3):
            ref[i, j] = np.einsum(
                "a,b,abcd->cd", np.asarray(taps), np.asarray(taps), a[i : i + k, j : j + k]
            )
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=2e-6)


def test_method_choice_and_override():
    assert _filters.default_method("cpu") == "stacked"
    assert _filters.default_method("gpu") == "slices"
    assert _filters.default_method("tpu") == "slices"
    assert _filters.resolve_method("matmul") == "matmul"
    with _filters.method_override("conv"):
        assert _filters.resolve_method() == "conv"
    assert _filters.resolve_method() == _filters.default_method()
    with pytest.raises(ValueError, match="method"):
        _filters.resolve_method("fft")
    with pytest.raises(ValueError, match="method"), _filters.method_override("fft"):
        pass


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_ssim_value_and_gradient_agree_across_methods(padding):
    """SSIM and its custom-VJP gradient are the same whichever method filters."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.uniform(size=(2, 24, 21, 3)), jnp.float32)
    y = jnp.asarray(np.clip(np.asarray(x) + rng.normal(0, 0.1, x.shape), 0, 1), jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(2, 24, 21, 1)) > 0.2, jnp.float32)
    results = {}
    for method in METHODS:
        with _filters.method_override(method):
            f = jax.jit(
                jax.value_and_grad(
                    lambda a, b, m: ssim(a, b, max_val=1.0, padding=padding, mask=m).sum()
                )
            )
            results[method] = f(x, y, mask)
    value, grad = results["slices"]
    for method, (v, g) in results.items():
        np.testing.assert_allclose(float(v), float(value), rtol=0, atol=2e-6, err_msg=method)
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(grad), rtol=0, atol=2e-6, err_msg=method
        )


@pytest.mark.parametrize("method", METHODS)
def test_ssim_check_grads_float64(x64, method):
    """The analytic VJP matches numerical differences on every filtering path."""
    from jax.test_util import check_grads

    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.uniform(size=(1, 13, 12, 2)))
    y = jnp.asarray(rng.uniform(size=(1, 13, 12, 2)))
    mask = jnp.asarray(rng.uniform(size=(1, 13, 12, 1)) > 0.3, jnp.float64)
    with _filters.method_override(method):
        f = jax.jit(lambda a, b: ssim(a, b, max_val=1.0, padding="same", mask=mask).sum())
        check_grads(f, (x, y), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_batch_chunks_policy():
    # Only the CPU "stacked" method chunks; counts divide the batch.
    assert _filters.batch_chunks(16, 256 * 256 * 3, method="slices") == 1
    assert _filters.batch_chunks(16, 256 * 256 * 3, method="stacked") == 8
    assert _filters.batch_chunks(2, 32 * 32 * 3, method="stacked") == 1
    with _filters.chunk_override(10):
        assert _filters.batch_chunks(12, 4, method="slices") == 6  # 2 images per chunk
        assert _filters.batch_chunks(7, 4) == 7  # prime: single images
        assert _filters.batch_chunks(12, 5) == 6
        assert _filters.batch_chunks(1, 100) == 1
    with pytest.raises(ValueError, match="elements"), _filters.chunk_override(0):
        pass


def _value_and_grads(f, *args):
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(*args)


def _assert_same(got, want, atol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("spatial_dims", "padding", "masked"),
    [
        (2, "valid", False),
        (2, "same", True),
        (2, "reflect", True),
        (1, "valid", True),
        (3, "same", False),
    ],
)
def test_chunked_batch_matches_unchunked(spatial_dims, padding, masked):
    """Processing the batch in chunks changes nothing (values, maps, both gradients)."""
    rng = np.random.default_rng(7)
    shape = {1: (2, 3, 30, 2), 2: (6, 19, 17, 3), 3: (4, 12, 11, 10, 2)}[spatial_dims]
    x = jnp.asarray(rng.uniform(size=shape), jnp.float32)
    y = jnp.asarray(np.clip(np.asarray(x) + rng.normal(0, 0.2, shape), 0, 1), jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(*shape[:-1], 1)) > 0.3, jnp.float32) if masked else None
    opts = dict(max_val=1.0, padding=padding, spatial_dims=spatial_dims, mask=mask, filter_size=7)

    def run():
        value = _value_and_grads(lambda a, b: ssim(a, b, **opts).sum(), x, y)
        maps = jax.jit(lambda a, b: ssim(a, b, return_map=True, **opts))(x, y)
        return value, maps

    want = run()
    for elements in (1, 2 * math.prod(shape[-1 - spatial_dims :])):  # single images, pairs
        with _filters.chunk_override(elements):
            jaxpr = jax.make_jaxpr(jax.grad(lambda a, b: ssim(a, b, **opts).sum()))(x, y)
            assert "scan" in str(jaxpr)  # the chunked path is the one tested
            # Float32 rounding only: XLA fuses the chunked loop body differently, and a
            # masked window holding few valid pixels amplifies it (up to 1.4e-6 seen).
            _assert_same(run(), want, atol=2e-6)
    assert "scan" not in str(jax.make_jaxpr(lambda a, b: ssim(a, b, **opts))(x, y))


def test_chunked_float64_vmap_identity_and_ms_ssim(x64):
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.uniform(size=(2, 3, 12, 11, 2)))
    y = jnp.asarray(rng.uniform(size=(2, 3, 12, 11, 2)))
    xs = jnp.asarray(rng.uniform(size=(4, 161, 163, 1)))
    ys = jnp.asarray(np.clip(np.asarray(xs) + rng.normal(0, 0.1, xs.shape), 0, 1))

    def f(a, b):
        return ssim(a, b, max_val=1.0, filter_size=5).sum()

    def g(a, b):
        return jax.vmap(lambda p, t: ssim(p, t, max_val=1.0, filter_size=5))(a, b).sum()

    def h(a, b):
        return ms_ssim(a, b, max_val=1.0).sum()

    want = [_value_and_grads(fn, *args) for fn, args in ((f, (x, y)), (g, (x, y)), (h, (xs, ys)))]
    with _filters.chunk_override(1):
        got = [
            _value_and_grads(fn, *args) for fn, args in ((f, (x, y)), (g, (x, y)), (h, (xs, ys)))
        ]
        (value, (gx, gy)) = _value_and_grads(f, x, x)
        from jax.test_util import check_grads

        check_grads(jax.jit(f), (x[:1], y[:1]), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
    _assert_same(got, want, atol=1e-12)
    assert float(value) == x.shape[0] * x.shape[1]  # SSIM(x, x) = 1 exactly, per image
    assert not np.any(np.asarray(gx)) and not np.any(np.asarray(gy))


# --- Window taps that sum to exactly 1 ---------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "window,size,sigma",
    [
        ("uniform", 7, 1.5),
        ("uniform", 3, 1.5),
        ("gaussian", 11, 1.5),
        ("gaussian", 7, 0.8),
        ([1.0, 2.0, 3.0, 2.0, 1.0], 5, 1.5),
        ((0.1, 0.7, 0.3), 3, 1.5),
    ],
)
def test_window_taps_sum_to_exactly_one_in_the_compute_dtype(dtype, window, size, sigma):
    import math

    taps = _filters.window_taps(window, size, sigma, dtype)
    as_dtype = np.asarray(taps, dtype)
    np.testing.assert_array_equal(as_dtype.astype(np.float64), taps)  # representable
    assert math.fsum(taps) == 1.0  # exactly, in real arithmetic
    # ... and so in any summation order in the dtype (partial sums are exact too).
    assert float(np.cumsum(as_dtype)[-1]) == 1.0 and float(np.cumsum(as_dtype[::-1])[-1]) == 1.0
    ideal = window if not isinstance(window, str) else _reference_taps(window, size, sigma)
    ideal = np.asarray(ideal, np.float64) / np.sum(ideal)
    np.testing.assert_allclose(taps, ideal, atol=float(np.finfo(dtype).eps))


def _reference_taps(window, size, sigma):
    d = np.arange(size) - (size - 1) / 2.0
    return np.exp(-(d**2) / (2 * sigma**2)) if window == "gaussian" else np.ones(size)


def test_box_window_filters_constants_exactly():
    taps = _filters.window_taps("uniform", 7, 1.5, np.float32)
    x = jnp.full((1, 20, 20, 1), 0.3, jnp.float32)
    ones = _filters.filter_valid(jnp.ones((1, 20, 20, 1), jnp.float32), taps, (1, 2))
    np.testing.assert_array_equal(ones, 1.0)
    assert _filters.filter_valid(x, taps, (1, 2)).shape == (1, 14, 14, 1)
