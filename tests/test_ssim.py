"""Tests of ssim and dssim: references, properties, gradients and errors."""

import json
import pathlib

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from jax.test_util import check_grads
from skimage.metrics import structural_similarity

from dssim_mae_jax import dssim, ssim

TF_REFERENCES = json.loads(
    (pathlib.Path(__file__).parent / "data" / "tf_references.json").read_text()
)

ssim_jit = jax.jit(
    ssim,
    static_argnames=(
        "filter_size",
        "window",
        "padding",
        "spatial_dims",
        "return_map",
        "filter_sigma",
        "k1",
        "k2",
    ),
)


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def skimage_ssim(x, y, data_range=1.0):
    """Wang/TF semantics in scikit-image (Gaussian 11 taps, population covariance)."""
    return structural_similarity(
        np.asarray(x, np.float64),
        np.asarray(y, np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=-1,
    )


# --- Golden references -------------------------------------------------------


def test_matches_tensorflow_and_skimage_on_photographs(photo_cases):
    """tf.image.ssim 2.21 (frozen, tests/data) and scikit-image (live) on real photos."""
    refs = TF_REFERENCES["cases"]
    for name, distorted, clean in photo_cases:
        ours = float(ssim_jit(distorted.astype(np.float32), clean.astype(np.float32), max_val=1.0))
        sk = skimage_ssim(distorted.astype(np.float32), clean.astype(np.float32))
        assert abs(ours - refs[name]["ssim"]) < 1e-4, name
        # Our float32 statistics stay closer to float64 than TF's own float32 (up to
        # 7e-5 off here); anti-correlated (inverted) images are the hardest case.
        assert abs(ours - sk) < 5e-6, name


def test_matches_dm_pix(photos):
    clean = photos["astronaut"].astype(np.float32)
    noisy = np.clip(clean + 0.1 * rand(clean.shape, 3, np.float32) - 0.05, 0, 1)
    batch_x, batch_y = np.stack([noisy, clean]), np.stack([clean, clean])
    np.testing.assert_allclose(
        ssim_jit(batch_x, batch_y, max_val=1.0), dm_pix.ssim(batch_x, batch_y), atol=1e-5
    )


def test_float64_matches_skimage_to_1e9(x64, photo_cases):
    f64 = jax.jit(lambda a, b: ssim(a, b, max_val=1.0))
    for name, distorted, clean in photo_cases[::3]:
        value = f64(distorted, clean)
        assert value.dtype == jnp.float64
        ours = float(value)
        assert abs(ours - skimage_ssim(distorted, clean)) < 1e-9, name


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
@pytest.mark.parametrize("kind,size", [("gaussian", 11), ("gaussian", 7), ("uniform", 3)])
def test_paddings_and_windows_match_float64_reference(x64, padding, kind, size):
    x, y = rand((23, 19, 2), 1), rand((23, 19, 2), 2)
    y = 0.6 * x + 0.4 * y
    got = ssim_jit(x, y, max_val=1.0, padding=padding, window=kind, filter_size=size)
    want = reference.ssim(x, y, padding=padding, kind=kind, size=size)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    got_map = ssim_jit(
        x, y, max_val=1.0, padding=padding, window=kind, filter_size=size, return_map=True
    )
    want_map, _, _ = reference.ssim_maps(x, y, padding=padding, kind=kind, size=size)
    assert got_map.shape == want_map.shape
    np.testing.assert_allclose(got_map, want_map, atol=1e-10)


def test_uniform_window_matches_skimage_box_statistics(photos):
    x = photos["coffee"][:64, :64]
    y = np.clip(x + 0.05 * (rand(x.shape, 4) - 0.5), 0, 1)
    sk = structural_similarity(
        x, y, win_size=7, use_sample_covariance=False, data_range=1.0, channel_axis=-1
    )
    ours = ssim_jit(
        x.astype(np.float32), y.astype(np.float32), max_val=1.0, window="uniform", filter_size=7
    )
    assert abs(float(ours) - sk) < 1e-5


@pytest.mark.parametrize("spatial_dims,shape", [(1, (40, 2)), (3, (13, 14, 15, 1))])
def test_other_spatial_dims_match_reference(x64, spatial_dims, shape):
    x, y = rand(shape, 5), rand(shape, 6)
    y = 0.5 * x + 0.5 * y
    for padding in ("valid", "reflect"):
        got = ssim_jit(x, y, max_val=1.0, spatial_dims=spatial_dims, padding=padding)
        want = reference.ssim(x, y, spatial_dims=spatial_dims, padding=padding)
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_constant_images_analytic_values():
    """(2ab + C1) / (a^2 + b^2 + C1) for flat images (no variance; docs/ssim_derivatives.md)."""
    ones, zeros = np.ones((16, 16, 1), np.float32), np.zeros((16, 16, 1), np.float32)
    np.testing.assert_allclose(ssim(ones, zeros, max_val=1.0), 9.999000099990e-05, rtol=1e-6)
    np.testing.assert_allclose(
        ssim(np.full_like(ones, 0.25), np.full_like(ones, 0.75), max_val=1.0),
        0.6000639897616381,
        rtol=1e-6,
    )


def test_ramp_against_its_mirror_is_negative():
    """A 16x16 ramp against its mirror image (TF image_ops_test's negative-SSIM case).

    Frozen values from tf.image.ssim (TensorFlow 2.21, uint8 inputs, max_val=255,
    11-tap Gaussian, sigma 1.5): -0.8170557 (k1=0.01, k2=0.03) and -0.9047608
    (k1=k2=1e-5); small constants push it towards -1.
    """
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8)[None], (16, 1))[..., None]
    mirror = ramp[:, ::-1]
    for (k1, k2), tf_value in (((0.01, 0.03), -0.8170557), ((1e-5, 1e-5), -0.9047608)):
        ours = float(ssim(ramp, mirror, max_val=255, k1=k1, k2=k2))
        exact = reference.ssim(ramp, mirror, max_val=255.0, k1=k1, k2=k2)
        assert ours == pytest.approx(exact, abs=1e-6)
        assert ours == pytest.approx(tf_value, abs=1e-4)  # TF's float32 is ~2e-5 off


# --- Properties --------------------------------------------------------------


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_identity_is_exactly_one_and_dssim_exactly_zero(photos, padding):
    batch = np.stack([photos["astronaut"][:70, :61], photos["coffee"][:70, :61]]).astype(np.float32)
    assert np.all(np.asarray(ssim_jit(batch, batch, max_val=1.0, padding=padding)) == 1.0)
    dssim_jit = jax.jit(lambda a, b: dssim(a, b, max_val=1.0, padding=padding))
    assert np.all(np.asarray(dssim_jit(batch, batch)) == 0.0)


def test_symmetry_and_bounds(photo_cases):
    for name, distorted, clean in photo_cases[:10]:
        a, b = distorted.astype(np.float32), clean.astype(np.float32)
        ab, ba = ssim_jit(a, b, max_val=1.0), ssim_jit(b, a, max_val=1.0)
        np.testing.assert_allclose(ab, ba, atol=1e-6, err_msg=name)
        s_map = ssim_jit(a, b, max_val=1.0, return_map=True)
        assert float(s_map.min()) >= -1.0 and float(s_map.max()) <= 1.0 + 1e-6, name


def test_dssim_is_half_of_one_minus_ssim(photo_cases):
    _, a, b = photo_cases[0]
    a, b = a.astype(np.float32), b.astype(np.float32)
    np.testing.assert_allclose(
        dssim(a, b, max_val=1.0), (1 - ssim(a, b, max_val=1.0)) / 2, atol=1e-7
    )
    np.testing.assert_allclose(
        dssim(a, b, max_val=1.0, return_map=True),
        (1 - ssim(a, b, max_val=1.0, return_map=True)) / 2,
        atol=1e-7,
    )


def test_batch_dimensions_vmap_and_loop_agree():
    x, y = rand((2, 3, 24, 24, 3), 7, np.float32), rand((2, 3, 24, 24, 3), 8, np.float32)
    batched = ssim_jit(x, y, max_val=1.0)
    assert batched.shape == (2, 3)
    single = jax.jit(lambda a, b: ssim(a, b, max_val=1.0))
    looped = np.array([[float(single(x[i, j], y[i, j])) for j in range(3)] for i in range(2)])
    vmapped = jax.vmap(jax.vmap(lambda a, b: ssim(a, b, max_val=1.0)))(x, y)
    np.testing.assert_allclose(batched, looped, atol=1e-6)
    np.testing.assert_allclose(vmapped, looped, atol=1e-6)


def test_jit_and_eager_agree_and_max_val_may_be_traced():
    x, y = rand((2, 20, 20, 3), 9, np.float32), rand((2, 20, 20, 3), 10, np.float32)
    eager = ssim(x, y, max_val=1.0)
    traced = jax.jit(lambda a, b, m: ssim(a, b, max_val=m))(x, y, jnp.float32(1.0))
    np.testing.assert_allclose(eager, traced, atol=1e-7)


def test_scale_invariance_and_uint8_inputs(photos):
    image = (photos["astronaut"] * 255).round().astype(np.uint8)
    noisy = np.clip(image.astype(int) + (rand(image.shape, 11) * 40 - 20).astype(int), 0, 255)
    noisy = noisy.astype(np.uint8)
    from_uint8 = ssim(noisy, image, max_val=255)
    assert from_uint8.dtype == jnp.float32
    from_unit = ssim(noisy / 255.0, image / 255.0, max_val=1.0)
    np.testing.assert_allclose(from_uint8, from_unit, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs_are_computed_in_float32(photos, dtype):
    clean = photos["astronaut"]
    noisy = np.clip(clean + 0.1 * (rand(clean.shape, 12) - 0.5), 0, 1)
    low_x, low_y = jnp.asarray(noisy, dtype), jnp.asarray(clean, dtype)
    got = ssim_jit(low_x, low_y, max_val=1.0)
    assert got.dtype == jnp.float32
    want = ssim_jit(np.asarray(low_x, np.float32), np.asarray(low_y, np.float32), max_val=1.0)
    assert abs(float(got) - float(want)) < 1e-3
    grad = jax.jit(jax.grad(lambda a: ssim(a, low_y, max_val=1.0)))(low_x)
    assert grad.dtype == dtype and bool(jnp.isfinite(grad.astype(jnp.float32)).all())


# --- Masks -------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_all_ones_mask_equals_unmasked(padding):
    x, y = rand((2, 20, 21, 3), 13, np.float32), rand((2, 20, 21, 3), 14, np.float32)
    plain = ssim_jit(x, y, max_val=1.0, padding=padding)
    masked = jax.jit(lambda a, b, m: ssim(a, b, max_val=1.0, padding=padding, mask=m))
    for mask in (np.ones((2, 20, 21, 1)), np.ones((20, 21, 3)), np.bool_(True)):
        np.testing.assert_allclose(masked(x, y, mask), plain, atol=2e-6)


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_mask_matches_float64_reference(x64, padding):
    x, y = rand((25, 22, 2), 15), rand((25, 22, 2), 16)
    mask = (rand((25, 22, 1), 17) > 0.35).astype(np.float64)
    mask[:, :9] = 0.0  # an empty region wider than the window's half
    got = ssim_jit(x, y, max_val=1.0, padding=padding, mask=mask, filter_size=7)
    want = reference.ssim(x, y, padding=padding, mask=mask, size=7)
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_masked_out_region_is_ignored():
    x = rand((32, 32, 1), 18, np.float32)
    y = x.copy()
    y[:, 16:] = rand((32, 16, 1), 19, np.float32)  # damage the right half only
    mask = np.zeros((32, 32, 1), np.float32)
    mask[:, :16] = 1.0
    masked = jax.jit(lambda a, b, m: ssim(a, b, max_val=1.0, mask=m, padding="same"))
    assert float(masked(x, y, mask)) == pytest.approx(1.0, abs=1e-6)
    assert float(masked(x, y, np.ones_like(mask))) < 0.9
    assert float(masked(x, y, np.zeros_like(mask))) == 1.0  # nothing observed: documented


# --- Gradients ---------------------------------------------------------------


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
@pytest.mark.parametrize("masked", [False, True])
def test_check_grads_float64(x64, padding, masked):
    x, y = rand((1, 10, 9, 2), 20), rand((1, 10, 9, 2), 21)
    mask = (rand((1, 10, 9, 1), 22) > 0.3).astype(np.float64) if masked else None

    @jax.jit
    def mean_ssim(a, b):
        return ssim(a, b, max_val=1.0, padding=padding, mask=mask, filter_size=5)

    @jax.jit
    def ssim_map(a, b):
        return ssim(a, b, max_val=1.0, padding=padding, mask=mask, filter_size=5, return_map=True)

    check_grads(mean_ssim, (x, y), order=1, modes=["rev"])
    check_grads(ssim_map, (x, y), order=1, modes=["rev"])


def _autodiff_ssim(x, y, max_val=1.0, size=11, sigma=1.5):
    """Plain jnp SSIM (five moments, depthwise conv at HIGHEST precision) for autodiff."""
    taps = jnp.asarray(reference.gaussian_1d(size, sigma), x.dtype)
    kernel = jnp.outer(taps, taps)[:, :, None, None] * jnp.ones((1, 1, 1, x.shape[-1]), x.dtype)

    def f(v):
        return jax.lax.conv_general_dilated(
            v,
            kernel,
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[-1],
            precision=jax.lax.Precision.HIGHEST,
        )

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    s = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


def test_gradient_matches_autodiff_float32():
    x, y = rand((2, 24, 24, 3), 23, np.float32), rand((2, 24, 24, 3), 24, np.float32)
    y = 0.7 * x + 0.3 * y
    ours = jax.jit(jax.grad(lambda a: ssim(a, y, max_val=1.0).sum()))(x)
    auto = jax.jit(jax.grad(lambda a: _autodiff_ssim(a, y).sum()))(x)
    np.testing.assert_allclose(ours, auto, atol=2e-6 * float(jnp.abs(auto).max()) + 1e-9)


ADVERSARIAL = {
    "identical": lambda x: (x, x),
    "constant": lambda x: (np.full_like(x, 0.3), np.full_like(x, 0.7)),
    "zeros": lambda x: (np.zeros_like(x), np.zeros_like(x)),
    "zero-vs-image": lambda x: (np.zeros_like(x), x),
    "anti-correlated": lambda x: (x, 1.0 - x),
    "huge-range": lambda x: (1e4 * x, 1e4 * (1 - x)),
}


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_gradients_finite_on_adversarial_inputs(padding):
    base = rand((16, 16, 3), 25, np.float32)
    pairs = [ADVERSARIAL[name](base) for name in sorted(ADVERSARIAL)]
    a = np.stack([p[0] for p in pairs])
    b = np.stack([p[1] for p in pairs])
    mask = np.ones((*a.shape[:-1], 1), np.float32)
    mask[0] = 0.0  # one image fully masked out
    mask[1:, :, :8] = 0.0  # and an empty region in the others

    @jax.jit
    def grads(p, t, m):
        plain = jax.grad(lambda p, t: ssim(p, t, max_val=1.0, padding=padding).sum(), (0, 1))
        masked = jax.grad(
            lambda p, t: ssim(p, t, max_val=1.0, padding=padding, mask=m).sum(), (0, 1)
        )
        return plain(p, t) + masked(p, t)

    for g in grads(a, b, mask):
        assert g.shape == a.shape
        assert bool(jnp.isfinite(g).all()), padding


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_gradient_is_exactly_zero_at_identity(photos, padding):
    x = jnp.asarray(
        np.stack([photos["astronaut"][:48, :45], photos["coffee"][:48, :45]]), jnp.float32
    )

    @jax.jit
    def grads(a, b):
        g1 = jax.grad(lambda p: ssim(p, b, max_val=1.0, padding=padding).sum())(a)
        g2 = jax.grad(lambda p: dssim(p, b, max_val=1.0, mask=b > 0.5, padding=padding).sum())(a)
        return g1, g2

    for g in grads(x, x):
        assert float(jnp.abs(g).max()) == 0.0


# --- Errors ------------------------------------------------------------------

GOOD = np.zeros((16, 16, 3), np.float32)


@pytest.mark.parametrize(
    "kwargs,args,error,match",
    [
        ({}, (GOOD, np.zeros((16, 15, 3))), ValueError, "same shape"),
        ({}, (np.zeros((16, 3)), np.zeros((16, 3))), ValueError, "at least 3 dimensions"),
        ({"spatial_dims": 3}, (GOOD, GOOD), ValueError, "at least 4 dimensions"),
        ({}, (np.zeros((8, 8, 1)), np.zeros((8, 8, 1))), ValueError, "at least 11"),
        ({"padding": "same"}, (np.zeros((8, 20, 1)),) * 2, ValueError, "at least 11"),
        ({"window": "box"}, (GOOD, GOOD), ValueError, "`window` must be one of"),
        ({"padding": "zeros"}, (GOOD, GOOD), ValueError, "`padding` must be one of"),
        ({"filter_size": 0}, (GOOD, GOOD), ValueError, "`filter_size` must be a positive"),
        ({"filter_size": 3.0}, (GOOD, GOOD), TypeError, "`filter_size` must be an int"),
        ({"filter_sigma": -1.0}, (GOOD, GOOD), ValueError, "`filter_sigma` must be a positive"),
        ({"max_val": 0.0}, (GOOD, GOOD), ValueError, "`max_val` must be a positive"),
        ({"max_val": -255}, (GOOD, GOOD), ValueError, "`max_val` must be a positive"),
        ({"max_val": "1"}, (GOOD, GOOD), TypeError, "`max_val` must be a positive number"),
        ({"k1": -0.1}, (GOOD, GOOD), ValueError, "`k1`"),
        ({"spatial_dims": 4}, (GOOD, GOOD), ValueError, "`spatial_dims` must be 1, 2 or 3"),
        ({"mask": np.ones((15, 16, 1))}, (GOOD, GOOD), ValueError, "`mask` must broadcast"),
        ({"mask": -np.ones((16, 16, 1))}, (GOOD, GOOD), ValueError, "`mask` must hold weights"),
        ({}, (GOOD.astype(complex), GOOD), TypeError, "`predictions` must hold real"),
        ({}, (GOOD, np.array([["a"]])), TypeError, "`targets` must hold real"),
    ],
)
def test_bad_input_raises_clear_errors_at_trace_time(kwargs, args, error, match):
    options = {"max_val": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        ssim(*args, **options)
    with pytest.raises(error, match=match):
        dssim(*args, **options)


def test_errors_are_raised_while_tracing_under_jit():
    traced = jax.jit(lambda a, b: ssim(a, b, max_val=1.0))
    with pytest.raises(ValueError, match="same shape"):
        traced.lower(GOOD, np.zeros((16, 15, 3), np.float32))
    with pytest.raises(ValueError, match="at least 11"):
        traced.lower(np.zeros((2, 10, 10, 3), np.float32), np.zeros((2, 10, 10, 3), np.float32))


def test_max_val_is_required():
    with pytest.raises(TypeError, match="max_val"):
        ssim(GOOD, GOOD)  # pylint: disable=missing-kwoa


def test_max_val_is_a_constant_without_gradient():
    x, y = rand((1, 16, 16, 1), 30, np.float32), rand((1, 16, 16, 1), 31, np.float32)
    g = jax.grad(lambda m: ssim(x, y, max_val=m).sum())(jnp.float32(1.0))
    assert float(g) == 0.0


def test_mask_is_a_constant_without_gradient():
    x, y = rand((1, 16, 16, 1), 32, np.float32), rand((1, 16, 16, 1), 33, np.float32)
    mask = np.ones((1, 16, 16, 1), np.float32)
    g = jax.grad(lambda m: ssim(x, y, max_val=1.0, mask=m).sum())(mask)
    assert float(jnp.abs(g).max()) == 0.0


def test_concrete_non_positive_max_val_arrays_are_rejected():
    with pytest.raises(ValueError, match="`max_val` must be a positive"):
        ssim(GOOD, GOOD, max_val=jnp.array(-1.0))
    with pytest.raises(ValueError, match="`max_val` must be a positive"):
        ssim(GOOD, GOOD, max_val=np.float32(0.0))


# --- Fidelity: window sums, legacy values, options as arrays ----------------------------


def _camera_pair():
    """scikit-image's own test pair: camera and a seeded noisy copy (skimage test_ssim.py)."""
    from skimage import data

    cam = data.camera()
    noise = np.random.RandomState(5).randn(*cam.shape)  # = np.random.seed(5); np.random.randn
    noisy = np.clip(cam + 20.0 * noise, 0, 255).astype(cam.dtype)
    return cam[..., None], noisy[..., None]


def test_box_window_reproduces_skimage_legacy_value_in_float32():
    """skimage's default SSIM (7x7 box, sample covariance) is 0.3674518327910367 here.

    Sample covariance multiplies (co)variances by N / (N - 1) = 49 / 48, which is
    population statistics with C2 divided by 49 / 48: k2 = 0.03 * sqrt(48 / 49).
    A box whose float32 taps summed to 1 + 4.5e-8 per axis put this 1.95e-6 low.
    """
    cam, noisy = _camera_pair()
    legacy = 0.3674518327910367
    options = dict(max_val=255, window="uniform", filter_size=7, k2=0.03 * np.sqrt(48 / 49))
    sk = structural_similarity(
        cam[..., 0].astype(np.float64), noisy[..., 0].astype(np.float64), data_range=255
    )
    assert sk == pytest.approx(legacy, abs=1e-12)  # live scikit-image, float64
    assert float(ssim(noisy, cam, **options)) == pytest.approx(legacy, abs=5e-7)
    with jax.enable_x64(True):
        f64 = ssim(noisy.astype(np.float64), cam.astype(np.float64), **options)
        assert float(f64) == pytest.approx(legacy, abs=1e-12)


def test_options_accept_numpy_scalars_and_concrete_0d_arrays():
    """dm_pix's tests pass filter_size, k1 and k2 this way."""
    x, y = rand((2, 16, 16, 3), 40, np.float32), rand((2, 16, 16, 3), 41, np.float32)
    want = ssim(x, y, max_val=1.0, filter_size=7, k1=0.02, k2=0.05, filter_sigma=1.2)
    for convert in (np.asarray, jnp.asarray, np.float64):
        got = ssim(
            x,
            y,
            max_val=convert(1.0),
            filter_size=np.int64(7) if convert is np.float64 else convert(7),
            k1=convert(0.02),
            k2=convert(0.05),
            filter_sigma=convert(1.2),
        )
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_traced_option_is_a_type_error_naming_it():
    x = rand((16, 16, 1), 42, np.float32)
    with pytest.raises(TypeError, match="`k1` is a static option"):
        jax.jit(lambda k: ssim(x, x, max_val=1.0, k1=k))(0.01)


def test_compiled_once_per_shape_and_options():
    x = rand((1, 17, 18, 1), 43, np.float32)
    compiled = ssim._jitted
    before = compiled._cache_size()
    for m in (1.0, 2.0, 3.5):  # a new max_val is a new value, not a new compilation
        ssim(x, x * 0.5, max_val=m, filter_size=5)
    ssim(x, x, max_val=1.0, filter_size=np.int32(5))
    assert compiled._cache_size() == before + 1


# --- Window given as data -----------------------------------------------------------------


def test_window_given_as_taps_matches_named_windows_and_reference(x64):
    x, y = rand((2, 21, 19, 2), 44), rand((2, 21, 19, 2), 45)
    named = ssim(x, y, max_val=1.0)
    taps = reference.gaussian_1d(11, 1.5)
    for window in (list(taps), tuple(taps), np.asarray(taps), jnp.asarray(taps)):
        np.testing.assert_allclose(ssim(x, y, max_val=1.0, window=window), named, atol=1e-15)
    box = ssim(x, y, max_val=1.0, window=[2.0] * 5)  # scaled to sum 1
    np.testing.assert_allclose(box, ssim(x, y, max_val=1.0, window="uniform", filter_size=5))
    tent = [1, 2, 3, 2, 1]
    for padding in ("valid", "same", "reflect"):
        got = ssim(x, y, max_val=1.0, window=tent, padding=padding)
        want = [reference.ssim(x[i], y[i], size=5, kind=tent, padding=padding) for i in range(2)]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_asymmetric_window_gradient_float64(x64):
    x, y = rand((1, 9, 10, 1), 46), rand((1, 9, 10, 1), 47)
    f = jax.jit(lambda a, b: ssim(a, b, max_val=1.0, window=[0.5, 1.0, 3.0], padding="same"))
    check_grads(f, (x, y), order=1, modes=["rev"])


@pytest.mark.parametrize(
    "window,extra,error,match",
    [
        ([1.0, -0.5, 1.0], {}, ValueError, "`window` taps"),
        ([], {}, ValueError, "`window` taps"),
        ([0.0, 0.0], {}, ValueError, "positive sum"),
        ([1.0, np.nan], {}, ValueError, "`window` taps"),
        ([[1.0, 2.0], [2.0, 1.0]], {}, TypeError, "1-D sequence"),
        ([1.0, 2.0, 1.0], {"filter_size": 5}, ValueError, "must be None or the number of taps"),
        ({"a": 1.0}, {}, TypeError, "`window` must be one of"),
    ],
)
def test_bad_window_taps_raise(window, extra, error, match):
    with pytest.raises(error, match=match):
        ssim(GOOD, GOOD, max_val=1.0, window=window, **extra)


# --- Nothing silently wrong: non-finite input, scale, late validation ------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [ssim, dssim])
def test_nan_or_inf_pixel_gives_nan(fn, bad):
    x, y = rand((2, 16, 16, 3), 48, np.float32), rand((2, 16, 16, 3), 49, np.float32)
    y[1, 8, 8, 2] = bad
    out = np.asarray(fn(x, y, max_val=1.0))
    assert np.isfinite(out[0]) and np.isnan(out[1])
    maps = np.asarray(fn(x, y, max_val=1.0, return_map=True))
    assert np.all(np.isnan(maps[1])) and np.all(np.isfinite(maps[0]))


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_masked_out_nan_and_inf_change_neither_value_nor_gradient(padding):
    x, y = rand((2, 16, 17, 3), 50, np.float32), rand((2, 16, 17, 3), 51, np.float32)
    mask = np.ones((2, 16, 17, 1), np.float32)
    mask[:, 4:9, 5:12] = 0.0
    hole = np.broadcast_to(mask == 0, x.shape)
    f = jax.value_and_grad(
        lambda a, b: ssim(a, b, max_val=1.0, mask=mask, padding=padding).sum(), (0, 1)
    )
    want_value, want_grads = f(x, y)
    for junk in (np.nan, np.inf, 1e30):
        value, grads = f(np.where(hole, junk, x), np.where(hole, -junk, y))
        assert float(value) == float(want_value)
        for g, w in zip(grads, want_grads, strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("scale", [1e-12, 1e-10, 1e-6, 1e6, 1e10, 1e12])
def test_values_and_gradients_are_scale_invariant_in_float32(scale):
    """SSIM of (s x, s y) with max_val s equals SSIM of (x, y) (float64 reference); the
    gradient scales as 1 / s. Unscaled statistics gave NaN at 1e10 and 1e-10."""
    x, y = rand((1, 16, 18, 2), 52), rand((1, 16, 18, 2), 53)
    y = 0.6 * x + 0.4 * y
    want = reference.ssim(x[0], y[0])
    with jax.enable_x64(True):
        want_grad = np.asarray(jax.grad(lambda a: ssim(a, y, max_val=1.0).sum())(x))
    xs, ys = (np.float32(scale) * v.astype(np.float32) for v in (x, y))
    value, grad = jax.value_and_grad(lambda a: ssim(a, ys, max_val=scale).sum())(xs)
    assert float(value) == pytest.approx(want, abs=2e-6)
    np.testing.assert_allclose(
        np.asarray(grad, np.float64) * scale, want_grad, atol=1e-4 * np.abs(want_grad).max()
    )


@pytest.mark.parametrize(
    "shape,kwargs,error,match",
    [
        ((16, 16, 0), {}, ValueError, "must not be empty"),
        ((2, 0, 16, 3), {}, ValueError, "must not be empty"),
        ((16, 16, 3), {"spatial_dims": 2.0}, TypeError, "`spatial_dims` must be the int"),
        ((16, 16, 3), {"spatial_dims": True}, TypeError, "`spatial_dims` must be the int"),
        ((16, 16, 3), {"return_map": 1}, TypeError, "`return_map` must be True or False"),
        ((16, 16, 3), {"k2": np.inf}, ValueError, "`k2` must be a finite"),
        ((16, 16, 3), {"k1": 1e20}, ValueError, "`k1` \\*\\* 2 must be finite in float32"),
        ((16, 16, 3), {"filter_sigma": np.nan}, ValueError, "`filter_sigma` must be a positive"),
        ((16, 16, 3), {"mask": np.full((16, 16, 1), np.nan)}, ValueError, "must hold finite"),
        ((16, 16, 3), {"mask": [[[np.inf]]]}, ValueError, "must hold finite"),
        ((16, 16, 3), {"max_val": np.nan}, ValueError, "`max_val` must be a positive"),
        ((16, 16, 3), {"max_val": np.array([1.0, 2.0])}, ValueError, "`max_val` must be a scalar"),
    ],
)
def test_every_option_is_validated_at_the_call(shape, kwargs, error, match):
    x = np.zeros(shape, np.float32)
    for fn in (ssim, dssim):
        with pytest.raises(error, match=match):
            fn(x, x, **{"max_val": 1.0, **kwargs})


def test_empty_batch_is_allowed():
    x = np.zeros((0, 16, 16, 3), np.float32)
    assert ssim(x, x, max_val=1.0).shape == (0,)
