"""Adaptive balance: explicit EMA state, bias correction, weights on normalised terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dssim_mae_jax as dmj


def _images(shape=(3, 20, 20, 3), seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=shape)
    y = np.clip(x + rng.normal(0.0, 0.1, shape), 0.0, 1.0)
    return jnp.asarray(scale * x, jnp.float32), jnp.asarray(scale * y, jnp.float32)


def test_first_step_puts_both_terms_near_one_and_state_advances():
    # Unnormalised MAE on 0..255 data: the raw terms differ by orders of magnitude.
    x, y = _images(scale=255.0)
    loss_fn = dmj.make_balanced_loss("seed-naive", max_val=255.0, normalize_mae=False)
    state = dmj.init_balance_state()
    loss, aux, state = jax.jit(loss_fn)(x, y, state)
    assert loss.shape == (3,) and int(state.count) == 1
    np.testing.assert_allclose(aux["scale_structural"][0], jnp.mean(aux["structural"]), rtol=1e-4)
    np.testing.assert_allclose(aux["scale_mae"][0], jnp.mean(aux["mae"]), rtol=1e-4)
    assert float(jnp.mean(aux["mae"])) > 10.0  # raw MAE in grey levels
    np.testing.assert_allclose(jnp.mean(loss), 0.8 + 0.2, rtol=1e-3)
    # The raw terms in aux are those of make_loss.
    _, raw = jax.jit(dmj.make_loss("seed-naive", max_val=255.0, normalize_mae=False))(x, y)
    np.testing.assert_allclose(aux["structural"], raw["structural"], rtol=1e-6)


def test_ema_with_bias_correction_matches_a_numpy_recurrence():
    balanced = dmj.make_balanced_loss("gaussian-splatting", decay=0.9)
    traces = []

    @jax.jit
    def loss_fn(x, y, state, weights):
        traces.append(1)  # runs only while tracing
        return balanced(x, y, state, weights=weights)

    state = dmj.init_balance_state()
    ema = np.zeros(2)
    for t in range(1, 5):
        x, y = _images(seed=t)
        w_s = jnp.float32(0.1 * t)
        loss, aux, state = loss_fn(x, y, state, {"structural": w_s, "mae": jnp.float32(1.0)})
        current = np.array([np.mean(aux["structural"]), np.mean(aux["mae"])])
        ema = 0.9 * ema + 0.1 * current
        scale = ema / (1 - 0.9**t) + 1e-6
        np.testing.assert_allclose(state.magnitudes, ema, rtol=1e-5)
        np.testing.assert_allclose(aux["scale_structural"], scale[0], rtol=1e-5)
        expected = 0.1 * t * aux["structural"] / scale[0] + aux["mae"] / scale[1]
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert len(traces) == 1  # weights and state changed every step


def test_gradient_finite_and_the_scale_carries_no_gradient():
    x, y = _images()
    loss_fn = dmj.make_balanced_loss("monodepth2", reduction="mean")
    state = dmj.init_balance_state()

    def objective(p):
        loss, _, _ = loss_fn(p, y, state)
        return loss

    g = jax.jit(jax.grad(objective))(x)
    assert np.isfinite(g).all()
    # Same gradient as the unbalanced loss with the scales as constant weights.
    _, aux, _ = jax.jit(loss_fn)(x, y, state)
    plain = dmj.make_loss("monodepth2", reduction="mean")
    weights = {"structural": 0.85 / aux["scale_structural"][0], "mae": 0.15 / aux["scale_mae"][0]}
    g_ref = jax.jit(jax.grad(lambda p, w: plain(p, y, weights=w)[0]))(x, weights)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-8)
    # Identical images: zero terms, finite everything.
    loss, aux, new_state = jax.jit(loss_fn)(x, x, state)
    assert np.isfinite(loss) and np.isfinite(new_state.magnitudes).all()


def test_bad_options():
    with pytest.raises(ValueError, match="decay"):
        dmj.make_balanced_loss("seed-naive", decay=1.0)
    with pytest.raises(ValueError, match="eps"):
        dmj.make_balanced_loss("seed-naive", eps=0.0)
    with pytest.raises(ValueError, match="return_map"):
        dmj.make_balanced_loss("monodepth2", return_map=True)
    with pytest.raises(ValueError, match="seed-naive"):
        dmj.make_balanced_loss("nope")


def test_unscorable_images_stay_out_of_the_estimate():
    x, y = _images()
    loss_fn = dmj.make_balanced_loss("seed-naive", decay=0.5)
    clean_loss, _, clean_state = loss_fn(x[:2], y[:2], dmj.init_balance_state())
    bad = np.array(x)
    bad[2, 4, 4, 0] = np.nan
    loss, aux, state = loss_fn(bad, y, dmj.init_balance_state())
    assert np.isnan(float(loss[2])) and np.isnan(float(aux["structural"][2]))
    # The two scorable images give the estimate (and losses) of a batch of just them.
    np.testing.assert_allclose(state.magnitudes, clean_state.magnitudes, rtol=1e-6)
    np.testing.assert_allclose(loss[:2], clean_loss, rtol=1e-6)
    # A batch with nothing scorable leaves the state as it was.
    _, _, after = loss_fn(np.full_like(bad, np.nan), y, state)
    np.testing.assert_array_equal(after.magnitudes, state.magnitudes)
    assert int(after.count) == int(state.count) == 1
    # A masked-out NaN is not input: it changes nothing.
    mask = np.ones((3, 20, 20, 1), np.float32)
    mask[2, 4, 4] = 0.0
    masked, _, masked_state = loss_fn(bad, y, dmj.init_balance_state(), mask=mask)
    assert np.all(np.isfinite(np.asarray(masked)))
    assert np.all(np.isfinite(np.asarray(masked_state.magnitudes)))
