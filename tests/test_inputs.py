"""Input preparation (once per call), traced bad options, float32 range, masks, errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dssim_mae_jax as dmj
from dssim_mae_jax import _inputs, _jit, _validation


def _images(shape=(2, 24, 24, 3), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random(shape).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(np.clip(x + 0.1 * rng.standard_normal(shape), 0, 1))


def test_each_input_is_prepared_once_per_call(monkeypatch):
    """One trace of a masked make_loss call prepares, casts and masks the pair once."""
    counts = {}

    def counting(module, name):
        original = getattr(module, name)

        def wrapped(*args, **kwargs):
            key = name if name != "normalize_dynamic" else f"{name}:{args[0]}"
            counts[key] = counts.get(key, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    # The two stages of a prepared pair: checked and cast (whole arrays), then masked,
    # flagged and scaled (traced once, also when it runs chunk by chunk).
    counting(_inputs, "_checked")
    counting(_inputs, "_scaled")
    for name in ("as_float_pair", "broadcast_mask", "check_mask_values"):
        counting(_validation, name)
    counting(_jit, "normalize_dynamic")
    x, y = _images((2, 23, 23, 3))  # a shape no other test traces
    mask = jnp.ones((2, 23, 23, 1))
    dmj.make_loss("seed-naive")(x, y, mask=mask)
    assert counts == {
        "_checked": 1,
        "_scaled": 1,
        "as_float_pair": 1,
        "broadcast_mask": 1,
        "check_mask_values": 1,
        "normalize_dynamic:predictions": 1,
        "normalize_dynamic:targets": 1,
        "normalize_dynamic:mask": 1,
        "normalize_dynamic:weights": 1,
    }


# ------------------------------------------------------------ traced options give NaN


@pytest.mark.parametrize("value", [-1.0, 0.0, np.inf, np.nan])
def test_traced_impossible_max_val_gives_nan(value):
    x, y = _images()
    for fn in (dmj.ssim, dmj.mae, dmj.psnr, dmj.dssim):
        out = jax.jit(lambda v, fn=fn: fn(x, y, max_val=v))(value)
        assert np.all(np.isnan(np.asarray(out))), fn.__name__


def test_traced_bad_mask_weights_give_nan():
    x, y = _images()
    half = jnp.concatenate([jnp.ones((2, 12, 24, 1)), -jnp.ones((2, 12, 24, 1))], axis=1)
    for mask in (-jnp.ones((2, 24, 24, 1)), half, jnp.full((2, 24, 24, 1), jnp.inf)):
        for fn in (dmj.ssim, dmj.mae, dmj.psnr):
            out = jax.jit(lambda m, fn=fn: fn(x, y, max_val=1.0, mask=m))(mask)
            assert np.all(np.isnan(np.asarray(out))), fn.__name__


def test_traced_bad_loss_weights_and_alpha_give_nan():
    x, y = _images()
    loss_fn = dmj.make_loss("seed-naive")
    for w in (-1.0, np.inf, np.nan):
        loss, _ = jax.jit(lambda v: loss_fn(x, y, weights={"structural": v}))(w)
        assert np.all(np.isnan(np.asarray(loss)))
    for alpha in (1.5, -0.5, np.nan):
        loss = jax.jit(lambda a: dmj.dssim_mae_loss(x, y, max_val=1.0, alpha=a))(alpha)
        assert np.all(np.isnan(np.asarray(loss)))


def test_jax_scalars_are_checked_like_python_scalars():
    x, y = _images()
    for value in (-1.0, np.float32(-1.0), jnp.asarray(-1.0)):
        with pytest.raises(ValueError, match=r"weights\['structural'\]"):
            dmj.make_loss("seed-naive")(x, y, weights={"structural": value})
    for value in (1.5, np.float32(1.5), jnp.asarray(1.5)):
        with pytest.raises(ValueError, match="alpha"):
            dmj.dssim_mae_loss(x, y, max_val=1.0, alpha=value)
    for value in (-2.0, np.float32(-2.0), jnp.asarray(-2.0)):
        with pytest.raises(ValueError, match="`max_val` must be a positive finite number"):
            dmj.ssim(x, y, max_val=value)


# ------------------------------------------------------------ float32 range


def test_full_float32_range_of_max_val():
    x, y = _images()
    ref_ssim, ref_mae = dmj.ssim(x, y, max_val=1.0), dmj.mae(x, y, max_val=1.0)
    ref_psnr = dmj.psnr(x, y, max_val=1.0)
    for scale in (1e-30, 1e30, 1e38, 3e38):
        np.testing.assert_allclose(dmj.ssim(x * scale, y * scale, max_val=scale), ref_ssim, 2e-5)
        np.testing.assert_allclose(dmj.mae(x * scale, y * scale, max_val=scale), ref_mae, 1e-5)
        np.testing.assert_allclose(dmj.psnr(x * scale, y * scale, max_val=scale), ref_psnr, 1e-5)
    # Differences beyond the float range: each input is scaled first.
    out = dmj.mae(x * 3e38, -y * 3e38, max_val=3e38)
    np.testing.assert_allclose(out, dmj.mae(x, -y, max_val=1.0), rtol=1e-5)
    out = dmj.psnr(x * 3e38, -y * 3e38, max_val=3e38)
    np.testing.assert_allclose(out, dmj.psnr(x, -y, max_val=1.0), rtol=1e-5)
    with pytest.raises(ValueError, match="finite in float32"):
        dmj.psnr(x, y, max_val=1e39)


def test_psnr_of_tiny_differences_does_not_underflow():
    x, _ = _images()
    zeros = jnp.zeros_like(x)
    got = np.asarray(dmj.psnr(zeros, x * 1e-20, max_val=1.0))
    expected = -10 * np.log10(np.mean(np.square(np.asarray(x, np.float64) * 1e-20), axis=(1, 2, 3)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(np.isinf(np.asarray(dmj.psnr(x, x, max_val=1.0))))


# ------------------------------------------------------------ masks are weights at any scale


@pytest.mark.parametrize("c", [1e-30, 1e-11, 1.0, 1e20, 1e38])
def test_uniform_mask_of_any_scale_is_no_mask(c):
    x, y = _images((2, 24, 24, 3))
    mask = jnp.full((2, 24, 24, 1), c, jnp.float32)
    np.testing.assert_allclose(
        dmj.ssim(x, y, max_val=1.0, mask=mask), dmj.ssim(x, y, max_val=1.0), rtol=2e-5
    )
    np.testing.assert_allclose(dmj.mae(x, y, mask=mask), dmj.mae(x, y), rtol=2e-5)
    np.testing.assert_allclose(
        dmj.psnr(x, y, max_val=1.0, mask=mask), dmj.psnr(x, y, max_val=1.0), rtol=2e-5
    )


def test_complex_mask_is_refused():
    x, y = _images()
    with pytest.raises(TypeError, match="mask"):
        dmj.ssim(x, y, max_val=1.0, mask=jnp.ones((2, 24, 24, 1), jnp.complex64))
    with pytest.raises(TypeError, match="mask"):
        jax.jit(lambda m: dmj.ssim(x, y, max_val=1.0, mask=m))(
            jnp.ones((2, 24, 24, 1), "complex64")
        )


# ------------------------------------------------------------ options refused at build time


def test_options_are_refused_when_the_loss_is_built():
    with pytest.raises(ValueError, match="k1"):
        dmj.make_loss("seed-naive", k1=1e30)
    with pytest.raises(ValueError, match="both be 0"):
        dmj.make_loss("seed-naive", k1=0.0, k2=0.0)
    x, y = _images()
    with pytest.raises(ValueError, match="both be 0"):
        dmj.ssim(x, y, max_val=1.0, k1=0, k2=0)


def test_extreme_filter_sigmas_give_a_window():
    x, y = _images()
    for sigma in (1e-200, 0.01, 1e200):
        assert np.all(np.isfinite(np.asarray(dmj.ssim(x, y, max_val=1.0, filter_sigma=sigma))))
    out = dmj.ssim(x, y, max_val=1.0, filter_size=10, filter_sigma=0.01)
    assert np.all(np.isfinite(np.asarray(out)))
    assert np.all(
        np.isfinite(
            np.asarray(
                dmj.multi_sigma_ssim(x, y, max_val=1.0, filter_size=11, sigmas=(1e-200, 1.0))
            )
        )
    )


def test_balance_state_and_decay_types():
    x, y = _images()
    loss_fn = dmj.make_balanced_loss("seed-naive", decay=np.float32(0.9))
    loss, _, state = loss_fn(x, y, dmj.init_balance_state())
    assert np.all(np.isfinite(np.asarray(loss))) and int(state.count) == 1
    for bad in (None, (jnp.zeros(2), jnp.zeros((), jnp.int32))):
        with pytest.raises(TypeError, match="BalanceState"):
            loss_fn(x, y, bad)


# ------------------------------------------------------------ errors for users of other libraries


def test_positional_max_val_and_data_range_get_a_hint():
    x, y = _images()
    with pytest.raises(TypeError, match=r"write max_val=\.\.\."):
        dmj.ssim(x, y, 1.0)
    with pytest.raises(TypeError, match="called `max_val` here"):
        dmj.ssim(x, y, data_range=1.0)
    with pytest.raises(TypeError, match="called `max_val` here"):
        dmj.psnr(x, y, data_range=1.0)


def test_integer_images_above_max_val():
    a = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    b = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    with pytest.raises(ValueError, match="max_val=255"):
        dmj.ssim(a, b, max_val=1.0)
    assert np.isfinite(float(dmj.ssim(a, b, max_val=255)[0]))
    with pytest.warns(UserWarning, match="dtype's range"):
        jax.jit(lambda p, q: dmj.ssim(p, q, max_val=1.0))(a, b)


def test_old_spellings_warn_and_work():
    x, y = _images()
    with pytest.warns(DeprecationWarning) as record:
        cfg = dmj.LossConfig(w_structural=0.7, w_absolute=0.3)
    messages = {str(w.message) for w in record}
    assert messages == {
        "`w_structural` is deprecated; use `structural_weight`.",
        "`w_absolute` is deprecated; use `mae_weight`.",
    }
    assert (cfg.structural_weight, cfg.mae_weight) == (0.7, 0.3)
    with pytest.warns(DeprecationWarning, match="'structural'"):
        old, _ = dmj.make_loss("seed-naive")(x, y, weights={"ssim": 0.5})
    new, _ = dmj.make_loss("seed-naive")(x, y, weights={"structural": 0.5})
    np.testing.assert_array_equal(old, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dmj.make_loss("seed-naive", structural_weight=0.5)


def test_make_loss_takes_alpha_like_the_direct_function():
    """A preset and dssim_mae_loss with the preset's fields agree; alpha means the same."""
    x, y = _images()
    for name in ("seed-naive", "gaussian-splatting", "monodepth2"):
        cfg = dmj.PRESETS[name]
        fields = {
            f: getattr(cfg, f)
            for f in ("dssim_form", "clip", "per_pixel", "window", "filter_size", "padding")
        }
        alpha = cfg.structural_weight
        assert alpha + cfg.mae_weight == pytest.approx(1.0)
        direct = dmj.dssim_mae_loss(x, y, max_val=cfg.max_val, alpha=alpha, **fields)
        np.testing.assert_allclose(dmj.make_loss(name)(x, y)[0], direct, rtol=1e-6)
        half = dmj.dssim_mae_loss(x, y, max_val=cfg.max_val, alpha=0.5, **fields)
        np.testing.assert_allclose(dmj.make_loss(name, alpha=0.5)(x, y)[0], half, rtol=1e-6)
