"""multi_sigma_ssim against float64 ports of Zhao et al.'s released layer.

The per-patch reference (`reference.zhao_patch_msssim`) follows the semantics of
NVlabs/PL4NN `src/loss.py`, class `MSSSIM` (forward), written independently in
numpy; the sliding-window reference (`reference.multi_sigma_maps`) applies that
formula at every position with scipy correlations.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from jax.test_util import check_grads

import dssim_mae_jax as dmj
from dssim_mae_jax import _multi_sigma


def _patches(photo_cases, size=31, count=6):
    """(distorted, reference) batches of `size` x `size` patches cut from real photos."""
    xs, ys = [], []
    for i, (_, distorted, image) in enumerate(photo_cases):
        if image.shape[-1] != 3:
            continue
        r, c = 17 * (i % 5) + 10, 23 * (i % 4) + 5
        xs.append(distorted[r : r + size, c : c + size])
        ys.append(image[r : r + size, c : c + size])
    step = max(1, len(xs) // count)
    return np.stack(xs[::step][:count]), np.stack(ys[::step][:count])


def _crop(image, shape):
    return image[tuple(slice(0, n) for n in shape)]


def test_patch_value_is_the_released_layer_value(photo_cases):
    x, y = _patches(photo_cases)
    expected = np.stack(
        [reference.zhao_patch_msssim(a, b).mean() for a, b in zip(x, y, strict=True)]
    )
    got = dmj.multi_sigma_ssim(jnp.asarray(x, jnp.float32), y.astype(np.float32), max_val=1.0)
    assert got.dtype == jnp.float32 and got.shape == (len(x),)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=2e-6)
    # The photos are not all near 1: the comparison covers a real range.
    assert expected.min() < 0.6 and expected.max() > 0.9


def test_patch_value_float64(photo_cases, x64):
    x, y = _patches(photo_cases)
    expected = np.stack(
        [reference.zhao_patch_msssim(a, b).mean() for a, b in zip(x, y, strict=True)]
    )
    got = dmj.multi_sigma_ssim(x, y, max_val=1.0)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
@pytest.mark.parametrize("size", [11, 31])
def test_sliding_map_matches_reference(photos, padding, size, x64):
    image = _crop(photos["astronaut"], (40, 36, 3))
    distorted = np.clip(image + 0.1 * np.sin(np.arange(36) / 3.0)[:, None], 0, 1)
    got = dmj.multi_sigma_ssim(distorted, image, max_val=1.0, filter_size=size, padding=padding)
    expected = reference.multi_sigma_ssim(distorted, image, size=size, padding=padding)
    np.testing.assert_allclose(float(got), expected, rtol=0, atol=1e-10)
    value_map = dmj.multi_sigma_ssim(
        distorted, image, max_val=1.0, filter_size=size, padding=padding, return_map=True
    )
    ref_map, _ = reference.multi_sigma_maps(distorted, image, size=size, padding=padding)
    assert value_map.shape == ref_map.shape
    np.testing.assert_allclose(np.asarray(value_map), ref_map, rtol=0, atol=1e-10)


@pytest.mark.parametrize("spatial_dims", [1, 3])
def test_other_spatial_dims_match_reference(spatial_dims, x64):
    rng = np.random.default_rng(3)
    shape = (40, 2) if spatial_dims == 1 else (12, 13, 14, 2)
    y = rng.uniform(size=shape)
    x = np.clip(y + rng.normal(0, 0.1, shape), 0, 1)
    kwargs = dict(filter_size=9, sigmas=(0.5, 1.0, 2.0), spatial_dims=spatial_dims)
    got = dmj.multi_sigma_ssim(x, y, max_val=1.0, **kwargs)
    expected = reference.multi_sigma_ssim(
        x, y, size=9, sigmas=(0.5, 1.0, 2.0), spatial_dims=spatial_dims
    )
    np.testing.assert_allclose(float(got), expected, rtol=0, atol=1e-12)


def test_luminance_uses_the_largest_sigma_wherever_it_is_listed(x64):
    rng = np.random.default_rng(0)
    y = rng.uniform(size=(2, 21, 21, 1))
    x = 0.7 * y + 0.1
    a = dmj.multi_sigma_ssim(x, y, max_val=1.0, filter_size=21, sigmas=(4.0, 0.5, 2.0))
    b = dmj.multi_sigma_ssim(x, y, max_val=1.0, filter_size=21, sigmas=(0.5, 2.0, 4.0))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14)
    expected = [
        reference.zhao_patch_msssim(u, v, sigmas=(0.5, 2.0, 4.0)).mean()
        for u, v in zip(x, y, strict=True)
    ]
    np.testing.assert_allclose(np.asarray(a), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding, size", [("valid", 31), ("same", 15), ("reflect", 15)])
def test_identity_is_exactly_one_with_exactly_zero_gradient(photos, padding, size):
    image = jnp.asarray(_crop(photos["coffee"], (40, 37, 3))[None], jnp.float32)
    opts = dict(max_val=1.0, padding=padding, filter_size=size)

    def f(a):
        return jnp.sum(dmj.multi_sigma_ssim(a, image, **opts))

    value, grad = jax.value_and_grad(f)(image)
    assert float(value) == 1.0
    assert not np.any(np.asarray(grad))
    mask = jnp.ones((*image.shape[:-1], 1)).at[:, 5:20, 3:9].set(0.0)
    value, grad = jax.value_and_grad(
        lambda a: jnp.sum(dmj.multi_sigma_ssim(a, image, mask=mask, **opts))
    )(image)
    assert float(value) == 1.0
    assert not np.any(np.asarray(grad))


def test_symmetric_and_bounded(photo_cases):
    x, y = _patches(photo_cases, size=33)
    a = dmj.multi_sigma_ssim(x, y, max_val=1.0)
    b = dmj.multi_sigma_ssim(y, x, max_val=1.0)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    value_map = dmj.multi_sigma_ssim(x, 1.0 - y, max_val=1.0, return_map=True)
    assert np.all(np.abs(np.asarray(value_map)) <= 1.0)


def test_anti_correlated_structure_gives_negative_values(x64):
    # An odd number of negative cs factors makes the product negative (no clipping).
    ramp = np.linspace(0.2, 0.8, 31 * 31).reshape(31, 31, 1)
    value = float(dmj.multi_sigma_ssim(ramp, 1.0 - ramp, max_val=1.0, sigmas=(4.0,)))
    expected = reference.zhao_patch_msssim(ramp, 1.0 - ramp, sigmas=(4.0,)).mean()
    assert value < 0
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_check_grads_float64(x64):
    rng = np.random.default_rng(1)
    y = rng.uniform(size=(2, 12, 11, 2))
    x = np.clip(y + rng.normal(0, 0.2, y.shape), 0, 1)
    mask = (rng.uniform(size=(2, 12, 11, 1)) > 0.3).astype(np.float64)
    for kwargs in (
        dict(padding="valid", mask=mask),
        dict(padding="same", mask=mask),
        dict(padding="reflect"),
    ):

        def f(a, b, kwargs=kwargs):
            return dmj.multi_sigma_ssim(
                a, b, max_val=1.0, filter_size=7, sigmas=(0.5, 1.0, 3.0), **kwargs
            )

        check_grads(f, (x, y), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_gradients_finite_on_adversarial_inputs():
    shape = (1, 33, 33, 3)
    zeros, ones = jnp.zeros(shape), jnp.ones(shape)
    ramp = jnp.linspace(0.0, 1.0, 33 * 33 * 3).reshape(shape)
    for a, b in ((zeros, ones), (ramp, 1.0 - ramp), (zeros, ramp), (ones, ones * 0.999)):
        grad = jax.grad(lambda p, b=b: jnp.sum(dmj.multi_sigma_ssim(p, b, max_val=1.0)))(a)
        assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_all_ones_mask_gives_the_unmasked_result(photo_cases, padding):
    x, y = _patches(photo_cases, size=35)
    plain = dmj.multi_sigma_ssim(x, y, max_val=1.0, padding=padding)
    masked = dmj.multi_sigma_ssim(x, y, max_val=1.0, padding=padding, mask=np.ones(x.shape))
    # Not bitwise: XLA compiles the weighted statistics differently (measured: <= 2 ulp).
    np.testing.assert_allclose(np.asarray(masked), np.asarray(plain), rtol=0, atol=2e-7)


def test_masked_matches_reference(photos, x64):
    image = _crop(photos["chelsea"], (38, 41, 3))
    distorted = np.clip(image + 0.05 * np.cos(np.arange(41) / 2.0)[:, None], 0, 1)
    mask = np.ones((38, 41, 1))
    mask[10:25, 5:30] = 0.0
    for padding in ("valid", "same"):
        got = dmj.multi_sigma_ssim(
            distorted, image, max_val=1.0, filter_size=15, padding=padding, mask=mask
        )
        expected = reference.multi_sigma_ssim(distorted, image, size=15, padding=padding, mask=mask)
        np.testing.assert_allclose(float(got), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30])
def test_masked_out_content_never_matters(photo_cases, bad):
    x, y = _patches(photo_cases, size=33, count=2)
    mask = np.ones((*x.shape[:-1], 1), np.float32)
    mask[:, 4:12, 6:20] = 0.0
    hole = np.broadcast_to(mask == 0, x.shape)

    def value_and_grads(a, b):
        def f(a, b):
            return jnp.sum(dmj.multi_sigma_ssim(a, b, max_val=1.0, mask=mask))

        return jax.value_and_grad(f, argnums=(0, 1))(a, b)

    clean = value_and_grads(x, y)
    x_bad, y_bad = np.where(hole, bad, x), np.where(hole, -bad, y)
    dirty = value_and_grads(x_bad, y_bad)
    assert np.isfinite(float(clean[0]))
    np.testing.assert_array_equal(np.asarray(dirty[0]), np.asarray(clean[0]))
    for g_clean, g_dirty in zip(clean[1], dirty[1], strict=True):
        np.testing.assert_array_equal(np.asarray(g_dirty), np.asarray(g_clean))
        assert not np.any(np.asarray(g_clean)[hole])


def test_nan_or_inf_in_a_valid_pixel_gives_nan():
    x = np.full((2, 31, 31, 1), 0.5, np.float32)
    y = x.copy()
    x[0, 3, 3, 0] = np.nan
    x[1, 3, 3, 0] = np.inf
    assert np.all(np.isnan(np.asarray(dmj.multi_sigma_ssim(x, y, max_val=1.0))))
    value_map = dmj.multi_sigma_ssim(x, y, max_val=1.0, filter_size=11, return_map=True)
    assert np.all(np.isnan(np.asarray(value_map)))


def test_scale_invariance():
    rng = np.random.default_rng(2)
    y = rng.uniform(size=(2, 31, 31, 3)).astype(np.float32)
    x = np.clip(y + rng.normal(0, 0.1, y.shape), 0, 1).astype(np.float32)
    unit = dmj.multi_sigma_ssim(x, y, max_val=1.0)
    eight_bit = dmj.multi_sigma_ssim(255.0 * x, 255.0 * y, max_val=255.0)
    np.testing.assert_allclose(np.asarray(eight_bit), np.asarray(unit), rtol=0, atol=1e-6)


def test_jit_vmap_and_batch_shapes():
    rng = np.random.default_rng(4)
    y = rng.uniform(size=(2, 3, 32, 31, 1)).astype(np.float32)
    x = np.clip(y + 0.1, 0, 1)
    eager = dmj.multi_sigma_ssim(x, y, max_val=1.0)
    jitted = jax.jit(lambda a, b: dmj.multi_sigma_ssim(a, b, max_val=1.0))(x, y)
    mapped = jax.vmap(lambda a, b: dmj.multi_sigma_ssim(a, b, max_val=1.0))(x, y)
    assert eager.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(eager), rtol=0, atol=1e-6)
    traced_max = jax.jit(lambda a, b, m: dmj.multi_sigma_ssim(a, b, max_val=m))(x, y, 1.0)
    np.testing.assert_allclose(np.asarray(traced_max), np.asarray(eager), rtol=0, atol=1e-6)


def test_return_map_shapes():
    x = np.zeros((2, 40, 33, 3), np.float32)
    for padding, shape in (("valid", (2, 10, 3, 3)), ("same", x.shape), ("reflect", x.shape)):
        out = dmj.multi_sigma_ssim(x, x, max_val=1.0, padding=padding, return_map=True)
        assert out.shape == shape


def test_integer_and_half_inputs_give_float32():
    x = np.full((31, 31, 3), 100, np.uint8)
    assert dmj.multi_sigma_ssim(x, x, max_val=255).dtype == jnp.float32
    h = jnp.full((31, 31, 3), 0.5, jnp.bfloat16)
    assert dmj.multi_sigma_ssim(h, h, max_val=1.0).dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sigmas=()), ValueError, "sigmas"),
        (dict(sigmas=(1.0, -2.0)), ValueError, "sigmas"),
        (dict(sigmas="1"), ValueError, "sigmas"),
        (dict(sigmas=(1.0, True)), ValueError, "sigmas"),
        (dict(filter_size=41), ValueError, "filter_size=41"),
        (dict(filter_size=0), ValueError, "filter_size"),
        (dict(filter_size=3.0), TypeError, "filter_size"),
        (dict(padding="wrap"), ValueError, "padding"),
        (dict(max_val=-1.0), ValueError, "max_val"),
        (dict(k1=-0.1), ValueError, "k1"),
        (dict(spatial_dims=4), ValueError, "spatial_dims"),
        (dict(mask=np.ones((2, 31, 1))), ValueError, "mask"),
        (dict(mask=np.full((33, 33, 1), -1.0)), ValueError, ">= 0"),
        (dict(mask=np.full((33, 33, 1), np.nan)), ValueError, "finite"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, error, match):
    x = np.zeros((1, 33, 33, 3), np.float32)
    options = dict(max_val=1.0) | kwargs
    with pytest.raises(error, match=match):
        dmj.multi_sigma_ssim(x, x, **options)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        dmj.multi_sigma_ssim(np.zeros((33, 33, 3)), np.zeros((33, 34, 3)), max_val=1.0)


def test_check_sigmas_returns_floats():
    assert _multi_sigma.check_sigmas([1, 2.5]) == (1.0, 2.5)
