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
