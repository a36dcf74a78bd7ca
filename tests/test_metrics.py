"""Tests of mae and psnr."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from dssim_mae_jax import mae, psnr


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def test_mae_matches_numpy_per_image_and_normalises(photos):
    clean = np.stack([photos["astronaut"], photos["astronaut"][::-1]]).astype(np.float32)
    noisy = np.clip(clean + 0.1 * (rand(clean.shape, 1) - 0.5), 0, 1)
    want = np.abs(noisy.astype(np.float64) - clean).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(jax.jit(mae)(noisy, clean), want, rtol=1e-5)
    np.testing.assert_allclose(mae(255 * noisy, 255 * clean, max_val=255.0), want, rtol=1e-5)
    assert mae(noisy, clean).shape == (2,)


def test_mae_mask_is_a_weighted_mean():
    x, y = rand((2, 8, 8, 3), 2), rand((2, 8, 8, 3), 3)
    mask = (rand((2, 8, 8, 1), 4) > 0.5).astype(np.float32)
    full = np.broadcast_to(mask, x.shape)
    want = (np.abs(x - y) * full).sum(axis=(1, 2, 3)) / full.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(mae(x, y, mask=mask), want, rtol=1e-5)
    assert float(mae(x, y, mask=np.zeros_like(mask))[0]) == 0.0


def test_mae_gradient_is_zero_at_identity_and_sign_elsewhere():
    x, y = rand((6, 6, 1), 5), rand((6, 6, 1), 6)
    assert float(jnp.abs(jax.grad(lambda a: mae(a, x))(x)).max()) == 0.0
    np.testing.assert_allclose(jax.grad(lambda a: mae(a, y))(x), np.sign(x - y) / x.size)


def test_psnr_matches_skimage(photos):
    clean = photos["coffee"]
    noisy = np.clip(clean + 0.05 * (rand(clean.shape, 7) - 0.5), 0, 1)
    want = peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    assert float(psnr(noisy.astype(np.float32), clean.astype(np.float32), max_val=1.0)) == (
        pytest.approx(want, abs=1e-3)
    )
    as_uint8 = (clean * 255).round().astype(np.uint8)
    noisy_uint8 = (noisy * 255).round().astype(np.uint8)
    want8 = peak_signal_noise_ratio(as_uint8, noisy_uint8, data_range=255)
    assert float(psnr(noisy_uint8, as_uint8, max_val=255)) == pytest.approx(want8, abs=1e-3)


def test_psnr_identical_images_is_inf_with_zero_gradient():
    x = rand((2, 5, 5, 3), 8)
    assert np.all(np.isinf(np.asarray(psnr(x, x, max_val=1.0))))
    g = jax.grad(lambda a: jnp.where(jnp.isinf(psnr(a, x, max_val=1.0)), 0.0, 1.0).sum())(x)
    assert bool(jnp.isfinite(g).all())


def test_spatial_dims_three():
    x, y = rand((2, 4, 5, 6, 1), 9), rand((2, 4, 5, 6, 1), 10)
    assert mae(x, y, spatial_dims=3).shape == (2,)
    assert psnr(x, y, max_val=1.0, spatial_dims=3).shape == (2,)


@pytest.mark.parametrize("fn", [mae, psnr])
def test_errors(fn):
    x = np.zeros((4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="same shape"):
        fn(x, np.zeros((4, 5, 1)), max_val=1.0)
    with pytest.raises(ValueError, match="`max_val` must be a positive"):
        fn(x, x, max_val=0.0)
    with pytest.raises(ValueError, match="`mask` must broadcast"):
        fn(x, x, max_val=1.0, mask=np.ones((3, 4, 1)))
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        fn(np.zeros((4, 4)), np.zeros((4, 4)), max_val=1.0)


# --- Nothing silently wrong -----------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [mae, psnr])
def test_nan_or_inf_pixel_gives_nan_never_a_perfect_score(fn, bad):
    x, y = rand((3, 6, 6, 2), 11), rand((3, 6, 6, 2), 12)
    x[1, 2, 3, 0] = bad
    y[2] = x[2]  # identical images: psnr inf, mae 0
    out = np.asarray(fn(x, y, max_val=1.0))
    assert np.isnan(out[1]) and np.isfinite(out[0])
    assert out[2] == (np.inf if fn is psnr else 0.0)


def test_psnr_of_identical_images_with_nan_is_nan():
    x = rand((6, 6, 1), 13)
    x[0, 0, 0] = np.nan
    assert np.isnan(float(psnr(x, x, max_val=1.0)))


@pytest.mark.parametrize("fn", [mae, psnr])
def test_masked_out_nan_changes_neither_value_nor_gradient(fn):
    x, y = rand((2, 6, 7, 3), 14), rand((2, 6, 7, 3), 15)
    mask = np.ones((2, 6, 7, 1), np.float32)
    mask[:, 1:3, 2:5] = 0.0
    hole = np.broadcast_to(mask == 0, x.shape)
    f = jax.value_and_grad(lambda a, b: fn(a, b, max_val=1.0, mask=mask).sum(), (0, 1))
    want_value, want_grads = f(x, y)
    value, grads = f(np.where(hole, np.nan, x), np.where(hole, np.inf, y))
    assert float(value) == float(want_value)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("fn", [mae, psnr])
def test_nan_mask_is_rejected_when_concrete_and_gives_nan_when_traced(fn):
    x, y = rand((6, 6, 1), 16), rand((6, 6, 1), 17)
    mask = np.ones((6, 6, 1), np.float32)
    mask[0, 0] = np.nan
    with pytest.raises(ValueError, match="`mask` must hold finite weights"):
        fn(x, y, max_val=1.0, mask=mask)
    assert np.isnan(float(jax.jit(lambda m: fn(x, y, max_val=1.0, mask=m))(mask)))


@pytest.mark.parametrize("scale", [1e-12, 1e-6, 1e6, 1e12])
def test_psnr_and_mae_are_scale_invariant_in_float32(scale):
    x, y = rand((6, 7, 3), 18), rand((6, 7, 3), 19)
    want_psnr = 10 * np.log10(1.0 / np.mean((x.astype(np.float64) - y) ** 2))
    want_mae = np.mean(np.abs(x.astype(np.float64) - y))
    xs, ys = np.float32(scale) * x, np.float32(scale) * y
    assert float(psnr(xs, ys, max_val=scale)) == pytest.approx(want_psnr, abs=1e-4)
    assert float(mae(xs, ys, max_val=scale)) == pytest.approx(want_mae, rel=1e-5)
    g = jax.grad(lambda a: mae(a, ys, max_val=scale).sum())(xs)
    np.testing.assert_allclose(
        np.asarray(g, np.float64) * scale, np.sign(x - y) / x.size, rtol=1e-6
    )


@pytest.mark.parametrize("fn", [mae, psnr])
@pytest.mark.parametrize(
    "shape,kwargs,error,match",
    [
        ((4, 4, 0), {}, ValueError, "must not be empty"),
        ((0, 4, 1), {}, ValueError, "must not be empty"),
        ((4, 4, 1), {"spatial_dims": 2.0}, TypeError, "`spatial_dims` must be the int"),
        ((4, 4, 1), {"max_val": np.nan}, ValueError, "`max_val` must be a positive"),
        ((4, 4, 1), {"mask": -np.ones((4, 4, 1))}, ValueError, "weights >= 0"),
    ],
)
def test_every_option_is_validated_at_the_call(fn, shape, kwargs, error, match):
    x = np.zeros(shape, np.float32)
    with pytest.raises(error, match=match):
        fn(x, x, **{"max_val": 1.0, **kwargs})
