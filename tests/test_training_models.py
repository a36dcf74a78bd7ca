"""Models, pixel shuffle, luminance and the bicubic baseline."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dssim_mae_jax import training
from dssim_mae_jax.training._color import bicubic_upsample, crop_border, rgb_to_y
from dssim_mae_jax.training._models import DnCNN, SRNet, make_model, pixel_shuffle


def test_dncnn_shapes_groups_and_near_identity_at_init():
    m = DnCNN(channels=3, features=8, depth=3, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
    y = nnx.jit(lambda m, x: m(x))(m, x)
    assert y.shape == x.shape
    assert float(jnp.abs(y - x).mean()) < 0.25  # small head init: close to the identity
    assert set(nnx.to_pure_dict(nnx.state(m))) == {"body", "head"}


def test_srnet_upsamples_by_scale():
    m = SRNet(channels=1, scale=4, features=8, depth=2, rngs=nnx.Rngs(0))
    y = nnx.jit(lambda m, x: m(x))(m, jnp.zeros((1, 6, 5, 1)))
    assert y.shape == (1, 24, 20, 1)


def test_pixel_shuffle_layout():
    x = jnp.arange(2 * 2 * 4, dtype=jnp.float32).reshape(1, 2, 2, 4)  # C = 1 * 2 * 2
    y = pixel_shuffle(x, 2)
    assert y.shape == (1, 4, 4, 1)
    # Sub-pixel (i, j) of low-res pixel (h, w) is channel i * 2 + j.
    np.testing.assert_array_equal(np.asarray(y[0, 0:2, 0:2, 0]), [[0, 1], [2, 3]])
    np.testing.assert_array_equal(np.asarray(y[0, 0:2, 2:4, 0]), [[4, 5], [6, 7]])


def test_state_apply_fn_matches_the_module_under_jit():
    c = training.Config(features=8, depth=3)
    state = training.create_train_state(c, training.make_optimizer(c)[0])
    x = jax.random.uniform(jax.random.PRNGKey(1), (1, 12, 12, 3))
    y = jax.jit(state.apply_fn)(state.params, x)
    # The same parameters (same seed) in the module itself.
    init_key, _ = jax.random.split(jax.random.PRNGKey(c.seed))
    module = make_model(c, rngs=nnx.Rngs(params=init_key))
    np.testing.assert_allclose(np.asarray(y), np.asarray(module(x)), rtol=1e-6, atol=1e-6)


def test_rgb_to_y_bt601():
    # MATLAB rgb2ycbcr: white -> 235, black -> 16, pure red -> 16 + 65.481.
    rgb = jnp.asarray([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    y = np.asarray(rgb_to_y(rgb))[..., 0] * 255
    np.testing.assert_allclose(y, [[235.0, 16.0, 81.481]], rtol=1e-5)
    gray = jnp.full((2, 2, 1), 0.3)
    np.testing.assert_array_equal(rgb_to_y(gray), gray)


def test_crop_border_and_bicubic_upsample():
    x = jnp.ones((1, 8, 6, 3))
    assert crop_border(x, 2).shape == (1, 4, 2, 3)
    up = bicubic_upsample(x, 2)
    assert up.shape == (1, 16, 12, 3)
    np.testing.assert_allclose(np.asarray(up), 1.0, atol=1e-5)


def test_bicubic_upsample_matches_jax_resize_in_float64():
    # Reference: jax.image.resize (Keys cubic, edge taps renormalised) run in float64, where
    # its coordinate rounding is negligible; in float32 it is off by ~1e-5 at coordinate 400.
    for shape, scale in (((1, 64, 150, 3), 3), ((2, 17, 9, 1), 2), ((5, 4, 3), 4)):
        x = np.random.default_rng(scale).random(shape)
        up = (*shape[:-3], shape[-3] * scale, shape[-2] * scale, shape[-1])
        with jax.enable_x64(True):
            ref = np.asarray(jax.image.resize(jnp.asarray(x), up, "cubic", antialias=True))
        got = jax.jit(bicubic_upsample, static_argnums=1)(jnp.asarray(x, jnp.float32), scale)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), ref, atol=1e-6, rtol=0)


def test_bicubic_upsample_of_a_crop_is_the_crop_of_the_upsampling():
    x = jnp.asarray(np.random.default_rng(0).random((1, 40, 700, 3)), jnp.float32)
    whole = np.asarray(bicubic_upsample(x, 3))
    part = np.asarray(bicubic_upsample(x[:, :, 600:660], 3))
    # Away from the crop's edges (2 input pixels: the kernel's reach) the pixels are identical.
    np.testing.assert_array_equal(part[:, :, 6:174], whole[:, :, 3 * 602 : 3 * 658])
