"""Tests of ms_ssim: TF and float64 references, odd sizes, properties, gradients, errors."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from jax.test_util import check_grads

from dssim_mae_jax import MS_SSIM_WEIGHTS, ms_ssim

TF_REFERENCES = json.loads(
    (pathlib.Path(__file__).parent / "data" / "tf_references.json").read_text()
)
ms_ssim_jit = jax.jit(ms_ssim, static_argnames=("power_factors", "filter_size", "filter_sigma"))


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def test_weights_are_the_published_ones():
    assert MS_SSIM_WEIGHTS == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def test_matches_tensorflow_on_photographs(photo_cases):
    """tf.image.ssim_multiscale 2.21 (frozen in tests/data), incl. odd sizes (chelsea)."""
    refs = TF_REFERENCES["cases"]
    for name, distorted, clean in photo_cases:
        ours = float(
            ms_ssim_jit(distorted.astype(np.float32), clean.astype(np.float32), max_val=1.0)
        )
        assert abs(ours - refs[name]["ms_ssim"]) < 1e-4, name


def test_float64_matches_reference(x64, photos):
    """Odd and even sizes against an independent numpy implementation of TF's rules."""
    f64 = jax.jit(lambda a, b: ms_ssim(a, b, max_val=1.0))
    for name in ("chelsea", "coffee"):
        clean = photos[name]
        noisy = np.clip(clean + 0.1 * (rand(clean.shape, 1) - 0.5), 0, 1)
        ours = f64(noisy, clean)
        assert ours.dtype == jnp.float64
        assert abs(float(ours) - reference.ms_ssim(noisy, clean)) < 1e-9, name


def test_fewer_scales_and_odd_sizes_match_reference(x64):
    weights = (0.2, 0.3, 0.5)
    x = rand((2, 45, 47, 2), 2)
    y = 0.6 * x + 0.4 * rand((2, 45, 47, 2), 3)
    got = ms_ssim_jit(x, y, max_val=1.0, power_factors=weights)
    want = [reference.ms_ssim(x[i], y[i], weights=weights) for i in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_identity_is_exactly_one_and_batch_dims_are_kept(photos):
    x = np.stack([photos["astronaut"][:170, :165]] * 2)[None].astype(np.float32)
    out = ms_ssim_jit(x, x, max_val=1.0)
    assert out.shape == (1, 2)
    assert np.all(np.asarray(out) == 1.0)


def test_vmap_matches_batch_and_uint8_matches_unit_range(photos):
    clean = (photos["camera"][:170, :170] * 255).round().astype(np.uint8)
    noisy = np.clip(clean.astype(int) + (rand(clean.shape, 4) * 30 - 15).astype(int), 0, 255)
    batch_x = np.stack([noisy.astype(np.uint8), clean])
    batch_y = np.stack([clean, clean])
    batched = ms_ssim_jit(batch_x, batch_y, max_val=255)
    vmapped = jax.jit(jax.vmap(lambda a, b: ms_ssim(a, b, max_val=255)))(batch_x, batch_y)
    np.testing.assert_allclose(batched, vmapped, atol=1e-6)
    unit = ms_ssim_jit(batch_x / 255.0, batch_y / 255.0, max_val=1.0)
    np.testing.assert_allclose(batched, unit, atol=1e-6)


def test_negative_contrast_terms_give_zero_like_tensorflow(photos):
    clean = photos["astronaut"].astype(np.float32)
    # Inverted images have negative contrast-structure terms: TF clips them to 0.
    assert float(ms_ssim_jit(1.0 - clean, clean, max_val=1.0)) == 0.0


def test_check_grads_float64(x64):
    x = rand((1, 19, 21, 1), 5)  # odd sizes: the padding before pooling is differentiated too
    y = 0.7 * x + 0.3 * rand((1, 19, 21, 1), 6)
    f = jax.jit(
        lambda a, b: ms_ssim(a, b, max_val=1.0, power_factors=(0.3, 0.3, 0.4), filter_size=5)
    )
    check_grads(f, (x, y), order=1, modes=["rev"])


def test_gradients_finite_on_adversarial_inputs():
    base = rand((41, 43, 3), 7, np.float32)
    pairs = [
        (base, base),
        (base, 1.0 - base),  # negative contrast terms at every scale
        (base, np.zeros_like(base)),
        (np.zeros_like(base), np.zeros_like(base)),
        (np.full_like(base, 0.2), np.full_like(base, 0.9)),
        (base, base + 1e-3 * rand(base.shape, 8, np.float32)),
    ]
    a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    weights = (0.25, 0.25, 0.5)
    grad = jax.jit(
        jax.grad(lambda p, t: ms_ssim(p, t, max_val=1.0, power_factors=weights).sum(), (0, 1))
    )
    for g in grad(a, b):
        assert bool(jnp.isfinite(g).all())
    g_identity = grad(a[:1], a[:1])[0]
    assert float(jnp.abs(g_identity).max()) == 0.0


@pytest.mark.parametrize(
    "shape,kwargs,match",
    [
        ((160, 200, 1), {}, "at least 161"),
        ((200, 150, 3), {}, "at least 161"),
        ((20, 40, 1), {"power_factors": (0.5, 0.5)}, "at least 21"),
        ((200, 200, 1), {"power_factors": ()}, "power_factors"),
        ((200, 200, 1), {"power_factors": (-0.3, 0.3, 0.4)}, "power_factors"),
        ((200, 200, 1), {"max_val": -1.0}, "max_val"),
        ((200, 200, 1), {"filter_size": 0}, "filter_size"),
    ],
)
def test_bad_input_raises(shape, kwargs, match):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=match):
        ms_ssim(x, x, **{"max_val": 1.0, **kwargs})


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        ms_ssim(np.zeros((170, 170, 1)), np.zeros((170, 171, 1)), max_val=1.0)


# --- Fitted scales ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64, 1), (100, 80, 3)])
def test_fit_scales_matches_float64_reference(shape):
    x = rand((2, *shape), 11)
    y = np.clip(x + 0.2 * (rand((2, *shape), 12) - 0.5), 0, 1)
    got = ms_ssim(x.astype(np.float32), y.astype(np.float32), max_val=1.0, fit_scales=True)
    want = [reference.ms_ssim_nd(x[i], y[i], fit_scales=True) for i in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fit_scales_keeps_the_scales_that_fit_and_renormalises_their_weights(x64):
    x, y = rand((100, 80, 1), 13), rand((100, 80, 1), 14)
    # 80 -> 40 -> 20 -> 10: three scales hold 11 taps ((11 - 1) * 2**2 + 1 = 41 <= 80 < 81).
    kept = np.asarray(MS_SSIM_WEIGHTS[:3]) / sum(MS_SSIM_WEIGHTS[:3])
    want = reference.ms_ssim_nd(x, y, weights=tuple(kept))
    assert float(ms_ssim(x, y, max_val=1.0, fit_scales=True)) == pytest.approx(want, abs=1e-12)
    assert reference.fitted_scales((100, 80), 11, 5) == 3


def test_fit_scales_is_tensorflow_when_every_scale_fits(photos):
    x = photos["astronaut"][:170, :165].astype(np.float32)
    y = np.clip(x + 0.1, 0, 1)
    np.testing.assert_array_equal(
        ms_ssim(x, y, max_val=1.0, fit_scales=True), ms_ssim(x, y, max_val=1.0)
    )


def test_too_small_for_one_scale_raises_even_with_fit_scales():
    x = np.zeros((10, 30, 1), np.float32)
    with pytest.raises(ValueError, match="at least 11"):
        ms_ssim(x, x, max_val=1.0, fit_scales=True)


def test_fit_scales_with_zero_weights_on_the_kept_scales_raises():
    x = np.zeros((30, 30, 1), np.float32)
    with pytest.raises(ValueError, match="sum to 0"):
        ms_ssim(x, x, max_val=1.0, power_factors=(0.0, 0.0, 1.0), fit_scales=True)


# --- Volumes and signals ------------------------------------------------------------


@pytest.mark.parametrize(
    "spatial_dims,shape", [(3, (2, 23, 18, 21, 2)), (1, (2, 45, 3)), (2, (1, 19, 24, 1))]
)
def test_other_spatial_dims_match_float64_reference(spatial_dims, shape):
    x = rand(shape, 15)
    y = np.clip(0.7 * x + 0.3 * rand(shape, 16), 0, 1)
    options = dict(power_factors=(0.2, 0.3, 0.5), filter_size=5, spatial_dims=spatial_dims)
    got = ms_ssim(x.astype(np.float32), y.astype(np.float32), max_val=1.0, **options)
    assert got.shape == shape[: -1 - spatial_dims]
    image = shape[-1 - spatial_dims :]
    flat_x, flat_y = x.reshape(-1, *image), y.reshape(-1, *image)
    want = [
        reference.ms_ssim_nd(a, b, weights=(0.2, 0.3, 0.5), size=5, spatial_dims=spatial_dims)
        for a, b in zip(flat_x, flat_y, strict=True)
    ]
    np.testing.assert_allclose(np.ravel(got), want, atol=1e-5)


def test_volume_with_fitted_scales_and_float64_is_exact(x64):
    x = rand((20, 33, 17, 1), 17)
    y = 0.5 * x + 0.5 * rand((20, 33, 17, 1), 18)
    got = ms_ssim(x, y, max_val=1.0, filter_size=5, spatial_dims=3, fit_scales=True)
    want = reference.ms_ssim_nd(x, y, size=5, spatial_dims=3, fit_scales=True)
    assert float(got) == pytest.approx(want, abs=1e-12)


# --- Masks ---------------------------------------------------------------------------

MASK_OPTIONS = dict(max_val=1.0, power_factors=(0.3, 0.3, 0.4), filter_size=5)


def _masked_case(seed=19, shape=(2, 27, 30, 3)):
    x = rand(shape, seed, np.float32)
    y = np.clip(x + 0.3 * (rand(shape, seed + 1, np.float32) - 0.5), 0, 1)
    mask = np.ones((*shape[:-1], 1), np.float32)
    mask[:, 5:14, 7:20] = 0.0  # a hole
    mask[-1, :, :3] = 0.0  # and a border strip in the last image
    return x, y, mask


def test_all_ones_mask_gives_exactly_the_unmasked_result():
    x, y, _ = _masked_case()
    plain = ms_ssim(x, y, **MASK_OPTIONS)
    for mask in (np.ones((*x.shape[:-1], 1), np.float32), np.ones(x.shape), np.bool_(True)):
        np.testing.assert_array_equal(ms_ssim(x, y, mask=mask, **MASK_OPTIONS), plain)


def test_mask_matches_float64_reference(x64):
    x, y, mask = (v.astype(np.float64) for v in _masked_case(21))
    got = ms_ssim(x, y, mask=mask, **MASK_OPTIONS)
    want = [
        reference.ms_ssim_nd(x[i], y[i], mask=mask[i], weights=(0.3, 0.3, 0.4), size=5)
        for i in range(2)
    ]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_masked_out_content_changes_neither_value_nor_gradient():
    x, y, mask = _masked_case(23)
    hole = np.broadcast_to(mask == 0, x.shape)
    garbage = [rand(x.shape, 40, np.float32) * 1e6, np.full(x.shape, np.nan, np.float32)]
    garbage.append(np.where(rand(x.shape, 41) > 0.5, np.inf, -np.inf).astype(np.float32))

    def value_and_grads(a, b):
        f = jax.value_and_grad(lambda p, t: ms_ssim(p, t, mask=mask, **MASK_OPTIONS).sum(), (0, 1))
        return f(a, b)

    want_value, want_grads = value_and_grads(x, y)
    assert np.isfinite(float(want_value))
    for junk in garbage:
        value, grads = value_and_grads(np.where(hole, junk, x), np.where(hole, -junk, y))
        assert float(value) == float(want_value)
        for g, w in zip(grads, want_grads, strict=True):
            np.testing.assert_array_equal(g, w)
            assert not np.any(np.asarray(g)[hole])


def test_empty_mask_gives_one():
    x, y, _ = _masked_case()
    np.testing.assert_array_equal(
        ms_ssim(x, y, mask=np.zeros(x.shape, np.float32), **MASK_OPTIONS), [1.0, 1.0]
    )


def test_check_grads_with_mask_float64(x64):
    x, y, mask = (v[:1, :19, :21, :1].astype(np.float64) for v in _masked_case(25))
    f = jax.jit(lambda a, b: ms_ssim(a, b, mask=mask, **MASK_OPTIONS))
    check_grads(f, (x, y), order=1, modes=["rev"])


# --- Non-finite input, scale, options --------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_pixel_gives_nan_not_a_score(bad):
    x, y, _ = _masked_case(27)
    x = x.copy()
    x[0, 3, 4, 1] = bad
    out = np.asarray(ms_ssim(x, y, **MASK_OPTIONS))
    assert np.isnan(out[0]) and np.isfinite(out[1])


def test_relu_keeps_nan():
    from dssim_mae_jax._pyramid import relu_pow as _relu_pow

    out = _relu_pow(jnp.asarray([np.nan, -0.5, 0.0, 0.25]), jnp.asarray(0.5))
    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[1:], [0.0, 0.0, 0.5])


@pytest.mark.parametrize("scale", [1e-12, 1e-9, 1e-3, 1e3, 1e10, 1e12])
def test_values_and_gradients_are_scale_invariant_in_float32(scale):
    """MS-SSIM of (s x, s y) with max_val s is MS-SSIM of (x, y); its gradient scales as 1/s."""
    x, y, _ = _masked_case(29, (1, 24, 26, 1))

    def f(a, b, m):
        return ms_ssim(a, b, **{**MASK_OPTIONS, "max_val": m}).sum()

    with jax.enable_x64(True):
        want_grad = np.asarray(jax.grad(f)(x.astype(np.float64), y.astype(np.float64), 1.0))
    want = reference.ms_ssim_nd(x[0], y[0], weights=(0.3, 0.3, 0.4), size=5)
    value, grad = jax.value_and_grad(f)(x * np.float32(scale), y * np.float32(scale), scale)
    assert float(value) == pytest.approx(want, abs=2e-6)
    np.testing.assert_allclose(
        np.asarray(grad, np.float64) * scale, want_grad, atol=1e-4 * np.abs(want_grad).max()
    )


def test_window_given_as_taps_matches_named_window_and_reference(x64):
    x, y, _ = (v.astype(np.float64) for v in _masked_case(31, (1, 30, 28, 2)))
    taps = reference.gaussian_1d(5, 1.5)
    options = dict(max_val=1.0, power_factors=(0.3, 0.3, 0.4))
    named = ms_ssim(x, y, filter_size=5, **options)
    np.testing.assert_allclose(ms_ssim(x, y, window=list(taps), **options), named, atol=1e-14)
    box = [1.0, 2.0, 3.0, 2.0, 1.0]
    want = reference.ms_ssim_nd(x[0], y[0], weights=(0.3, 0.3, 0.4), size=5, kind=box)
    assert float(ms_ssim(x, y, window=box, **options)[0]) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"power_factors": (0.0, 0.0)}, ValueError, "not all 0"),
        ({"power_factors": (0.5, np.nan)}, ValueError, "power_factors"),
        ({"power_factors": 0.5}, ValueError, "power_factors"),
        ({"fit_scales": 1}, TypeError, "`fit_scales` must be True or False"),
        ({"spatial_dims": 2.0}, TypeError, "`spatial_dims` must be the int"),
        ({"window": [1.0, -1.0, 1.0]}, ValueError, "`window` taps"),
        ({"window": "box"}, ValueError, "`window` must be one of"),
        ({"mask": np.full((200, 200, 1), np.nan)}, ValueError, "`mask` must hold finite"),
    ],
)
def test_bad_options_raise(kwargs, error, match):
    x = np.zeros((200, 200, 1), np.float32)
    with pytest.raises(error, match=match):
        ms_ssim(x, x, **{"max_val": 1.0, **kwargs})


def test_empty_channel_axis_raises():
    x = np.zeros((170, 170, 0), np.float32)
    with pytest.raises(ValueError, match="must not be empty"):
        ms_ssim(x, x, max_val=1.0)


def test_check_power_factors_is_the_one_rule():
    from dssim_mae_jax import _validation

    assert _validation.check_power_factors(np.asarray([0.5, 0.5])) == (0.5, 0.5)
    assert _validation.check_power_factors([np.float32(1.0)], length=1) == (1.0,)
    with pytest.raises(ValueError, match="must have 3 entries"):
        _validation.check_power_factors((0.5, 0.5), length=3)
    with pytest.raises(ValueError, match="power_factors"):
        _validation.check_power_factors((0.5, True))


def test_min_size_rule_is_shared():
    from dssim_mae_jax._pyramid import ms_ssim_min_size

    assert ms_ssim_min_size(11, 5) == 161
    assert ms_ssim_min_size(11, 1) == 11
    for n in range(1, 60):  # the closed form equals repeated halving (rounding up)
        assert reference.fitted_scales((n,), 7, 4) == sum(
            n >= ms_ssim_min_size(7, k) for k in range(1, 5)
        )
