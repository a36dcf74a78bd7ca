"""dssim_mae_loss and make_loss: weights, aux, maps, masks, reductions, gradients, errors."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import signal

import dssim_mae_jax as dmj

SSIM_PRESETS = ("seed-naive", "seed-normalized", "gaussian-splatting", "monodepth2")
ALL_PRESETS = (*SSIM_PRESETS, "zhao-mix", "ms-ssim-pyramid-mix", "dssim-mae-mean")


def _min_size(cfg):
    """The smallest image side the preset's structural term accepts (and 16 for SSIM)."""
    return {"ms_ssim": 161, "multi_sigma": cfg.filter_size}.get(cfg.structure, 16)


def _images(shape=(2, 24, 28, 3), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=shape)
    y = np.clip(x + rng.normal(0.0, 0.1, shape), 0.0, 1.0)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def _adversarial(h, w, c, seed=1):
    """Pairs that break naive SSIM gradients, one per batch entry."""
    x = np.random.default_rng(seed).uniform(size=(h, w, c))
    pairs = [
        (x, x),  # identical
        (np.full_like(x, 0.3), np.full_like(x, 0.7)),  # constant images
        (np.zeros_like(x), np.zeros_like(x)),  # all zero
        (x, 1.0 - x),  # anti-correlated
        (x, np.zeros_like(x)),  # against black
    ]
    return tuple(jnp.asarray(np.stack(v), jnp.float32) for v in zip(*pairs, strict=True))


# ------------------------------------------------------------------------------ API shape
def test_public_functions_have_keyword_only_hyperparameters():
    for fn in (dmj.dssim_mae_loss, dmj.make_loss, dmj.make_balanced_loss):
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.POSITIONAL_OR_KEYWORD:
                assert p.default is p.empty, (fn.__name__, p.name)
    loss_fn = dmj.make_loss("seed-naive")
    params = inspect.signature(loss_fn).parameters
    assert params["mask"].kind is params["mask"].KEYWORD_ONLY
    assert params["weights"].kind is params["weights"].KEYWORD_ONLY
    assert loss_fn.config == dmj.PRESETS["seed-naive"]


@pytest.mark.parametrize("name", SSIM_PRESETS)
def test_aux_holds_both_terms_and_loss_is_their_weighted_sum(name):
    x, y = _images()
    cfg = dmj.PRESETS[name]
    scale = cfg.max_val
    loss, aux = jax.jit(dmj.make_loss(name))(scale * x, scale * y)
    assert set(aux) == {"ssim", "structural", "mae", "mean", "psnr", "loss"}
    for value in aux.values():
        assert value.shape == (2,) and value.dtype == jnp.float32
    # The seed's presets leave the mean term off: computed and logged, weight 0.
    assert cfg.mean_weight == 0.0
    np.testing.assert_allclose(
        loss, cfg.structural_weight * aux["structural"] + cfg.mae_weight * aux["mae"], rtol=1e-6
    )
    np.testing.assert_allclose(aux["mae"], dmj.mae(x, y), rtol=1e-5)
    np.testing.assert_allclose(aux["psnr"], dmj.psnr(x, y, max_val=1.0), rtol=1e-5)
    opts = dict(filter_size=cfg.filter_size, window=cfg.window, padding=cfg.padding)
    np.testing.assert_allclose(aux["ssim"], dmj.ssim(x, y, max_val=1.0, **opts), rtol=1e-5)
    if not cfg.clip:
        form = (lambda s: 1.0 - s) if cfg.dssim_form == "full" else (lambda s: (1 - s) / 2)
        np.testing.assert_allclose(aux["structural"], form(aux["ssim"]), rtol=1e-6)


def test_dssim_forms_and_direct_loss_match_make_loss():
    x, y = _images()
    s = dmj.ssim(x, y, max_val=1.0)
    m = dmj.mae(x, y)
    half = dmj.dssim_mae_loss(x, y, max_val=1.0, alpha=0.7)
    full = dmj.dssim_mae_loss(x, y, max_val=1.0, alpha=0.7, dssim_form="full")
    np.testing.assert_allclose(half, 0.7 * (1 - s) / 2 + 0.3 * m, rtol=1e-6)
    np.testing.assert_allclose(full, 0.7 * (1 - s) + 0.3 * m, rtol=1e-6)
    via_make, _ = dmj.make_loss(
        "seed-naive", structural_weight=0.7, mae_weight=0.3, dssim_form="half"
    )(x, y)
    np.testing.assert_allclose(half, via_make, rtol=1e-7)
    # Unnormalised MAE on 0..255 data keeps the data's units.
    raw = dmj.dssim_mae_loss(255 * x, 255 * y, max_val=255.0, alpha=0.5, normalize_mae=False)
    np.testing.assert_allclose(raw, 0.5 * (1 - s) / 2 + 0.5 * 255 * m, rtol=1e-5)
    # A traced alpha under jit.
    traced = jax.jit(lambda a: dmj.dssim_mae_loss(x, y, max_val=1.0, alpha=a))(0.7)
    np.testing.assert_allclose(traced, half, rtol=1e-6)


def test_gaussian_mae_weighting_is_valid_filtering_then_mean(x64):
    """mae_weighting='gaussian' == mean over valid positions of G * |x - y| (scipy)."""
    x, y = (np.asarray(v, np.float64) for v in _images((1, 20, 23, 2)))
    cfg = dmj.LossConfig(structural_weight=0.0, mae_weight=1.0, mae_weighting="gaussian")
    loss_fn = jax.jit(dmj.make_loss(cfg))
    loss, aux = loss_fn(x, y)
    d = np.arange(11) - 5.0
    g = np.exp(-(d**2) / (2 * 1.5**2))
    g2 = np.outer(g, g) / np.outer(g, g).sum()
    e = np.abs(x - y)[0]
    expected = np.mean([signal.correlate(e[..., c], g2, mode="valid").mean() for c in (0, 1)])
    np.testing.assert_allclose(aux["mae"], [expected], rtol=1e-12)
    np.testing.assert_allclose(loss, [expected], rtol=1e-12)
    # Masked: an all-ones mask changes nothing; an empty one gives 0.
    ones, _ = loss_fn(x, y, mask=np.ones((1, 20, 23, 1)))
    np.testing.assert_allclose(ones, loss, rtol=1e-12)
    empty, _ = loss_fn(x, y, mask=np.zeros((1, 20, 23, 1)))
    assert float(empty[0]) == 0.0


# --------------------------------------------------------------------- weights / schedules
def test_weights_change_every_step_without_retracing():
    x, y = _images()
    loss_fn = dmj.make_loss("seed-naive")
    traces = []

    @jax.jit
    def step(pred, target, w_s, w_a):
        traces.append(1)  # runs only while tracing
        loss, aux = loss_fn(pred, target, weights={"structural": w_s, "mae": w_a})
        return jnp.mean(loss), aux

    _, aux = loss_fn(x, y)
    for w_s, w_a in ((0.0, 1.0), (0.8, 0.2), (0.5, 0.5), (1.0, 0.0), (0.3, 2.0)):
        loss, _ = step(x, y, jnp.float32(w_s), jnp.float32(w_a))
        expected = jnp.mean(w_s * aux["structural"] + w_a * aux["mae"])
        np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert len(traces) == 1
    # One key only: the other keeps the preset's weight.
    partial, _ = loss_fn(x, y, weights={"mae": 0.0})
    np.testing.assert_allclose(partial, 0.8 * aux["structural"], rtol=1e-6)


# ------------------------------------------------------------------------- the mean term
def _mean_term_reference(x, y, *, max_val=1.0, eps=None, mask=None, normalize=True):
    """R per image in float64 NumPy, the direct form mean_c(sqrt(d_c^2 + e^2) - e)."""
    x, y = np.asarray(x, np.float64) / max_val, np.asarray(y, np.float64) / max_val
    e = (max_val / 255.0 if eps is None else eps) / max_val
    w = np.ones_like(x) if mask is None else np.broadcast_to(np.asarray(mask, np.float64), x.shape)
    out = []
    for xi, yi, wi in zip(x, y, w, strict=True):
        mx = (wi * xi).sum((0, 1)) / wi.sum((0, 1))
        my = (wi * yi).sum((0, 1)) / wi.sum((0, 1))
        r = np.mean(np.sqrt((mx - my) ** 2 + e**2) - e)
        out.append(r if normalize else r * max_val)
    return np.asarray(out)


def _offset_images(shape=(3, 20, 22, 3), seed=2):
    """Pairs whose channel means differ by 0 (equal images), under a level and several levels."""
    y = np.asarray(_images(shape, seed)[1], np.float64)
    offsets = np.asarray([[0.0, 0.0, 0.0], [0.3, -0.5, 1.0], [6.0, -3.0, 12.0]]) / 255.0
    return np.clip(y + offsets[:, None, None, :], 0.0, 1.0), y


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"mean_eps": 0.02},
        {"max_val": 255.0},
        {"max_val": 255.0, "normalize_mae": False, "mean_eps": 3.0},
    ],
)
def test_mean_term_matches_float64_reference(options, x64):
    x, y = _offset_images()
    scale = options.get("max_val", 1.0)
    cfg = dmj.LossConfig(structural_weight=0.0, mae_weight=0.0, mean_weight=1.0, **options)
    loss, aux = jax.jit(dmj.make_loss(cfg))(scale * x, scale * y)
    expected = _mean_term_reference(
        scale * x,
        scale * y,
        max_val=scale,
        eps=options.get("mean_eps"),
        normalize=options.get("normalize_mae", True),
    )
    assert loss.dtype == jnp.float64
    np.testing.assert_allclose(aux["mean"], expected, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(loss, expected, rtol=1e-10, atol=1e-15)
    # Masked: the means are the masked means; an empty mask gives 0.
    mask = np.zeros((3, 20, 22, 1))
    mask[0, 2:9, 3:17] = 1.0
    mask[1, ::2] = 0.5
    masked, _ = dmj.make_loss(cfg)(scale * x, scale * y, mask=mask)
    expected = _mean_term_reference(
        scale * x[:2],
        scale * y[:2],
        max_val=scale,
        eps=options.get("mean_eps"),
        mask=mask[:2],
        normalize=options.get("normalize_mae", True),
    )
    np.testing.assert_allclose(masked[:2], expected, rtol=1e-10, atol=1e-15)
    assert float(masked[2]) == 0.0


def test_mean_term_in_the_full_loss_and_the_direct_form(x64):
    x, y = _offset_images()
    loss, aux = jax.jit(dmj.make_loss("dssim-mae-mean"))(x, y)
    r = _mean_term_reference(x, y)
    np.testing.assert_allclose(aux["mean"], r, rtol=1e-10, atol=1e-15)
    expected = 0.2 * aux["structural"] + 0.8 * aux["mae"] + 1.0 * r
    np.testing.assert_allclose(loss, expected, rtol=1e-10)
    direct = dmj.dssim_mae_loss(x, y, max_val=1.0, alpha=0.2, mean_weight=1.0, dssim_form="full")
    np.testing.assert_allclose(direct, loss, rtol=1e-12)
    # A loss map carries R on every pixel: its mean is still the per-image loss.
    cfg = dmj.LossConfig(mean_weight=0.5, padding="same")
    per_image, _ = dmj.make_loss(cfg)(x, y)
    loss_map, _ = dmj.make_loss(cfg, return_map=True)(x, y)
    np.testing.assert_allclose(jnp.mean(loss_map, axis=(1, 2, 3)), per_image, rtol=1e-10)


def test_mean_term_gradient_is_finite_and_exactly_zero_at_identity(x64):
    x, y = _offset_images()
    cfg = dmj.LossConfig(structural_weight=0.0, mae_weight=0.0, mean_weight=1.0)
    loss_fn = dmj.make_loss(cfg)
    grad = jax.grad(lambda p: jnp.sum(loss_fn(p, y)[0]))(x)
    # dR/dx[h, w, c] = d_c / sqrt(d_c^2 + e^2) / (C * H * W), d_c the channel-mean offset.
    d = (x - y).mean((1, 2))
    e = 1.0 / 255.0
    expected = d / np.sqrt(d**2 + e**2) / (3 * 20 * 22)
    np.testing.assert_allclose(grad, np.broadcast_to(expected[:, None, None], x.shape), rtol=1e-9)
    assert np.all(grad[0] == 0.0)  # equal means
    at_identity = jax.grad(lambda p: jnp.sum(loss_fn(p, y)[0]))(y)
    assert np.all(np.asarray(at_identity) == 0.0)
    check_grads(lambda p: loss_fn(p, y)[0], (x,), order=2, modes=["rev"], atol=1e-6, rtol=1e-5)
    # float32, adversarial pairs, the whole preset: finite gradients, 0 at x == y.
    preset = dmj.make_loss("dssim-mae-mean")
    with jax.enable_x64(False):
        a, b = _adversarial(16, 16, 3)
        g = jax.grad(lambda p: jnp.sum(preset(p, b)[0]))(a)
        assert np.all(np.isfinite(g))
        assert np.all(np.asarray(g[0]) == 0.0) and np.all(np.asarray(g[2]) == 0.0)


def test_mean_weight_is_traced_without_retracing_and_checked():
    x, y = (jnp.asarray(v, jnp.float32) for v in _offset_images())
    loss_fn = dmj.make_loss("seed-naive")
    traces = []

    @jax.jit
    def step(pred, target, w_r):
        traces.append(1)  # runs only while tracing
        return loss_fn(pred, target, weights={"structural": 0.8, "mae": 0.2, "mean": w_r})

    base, aux = loss_fn(x, y)
    for w_r in (0.0, 1.0, 0.25):
        loss, _ = step(x, y, jnp.float32(w_r))
        np.testing.assert_allclose(loss, base + w_r * aux["mean"], rtol=1e-6)
    assert len(traces) == 1
    # Impossible traced weights give NaN, never a number; concrete ones raise.
    assert np.all(np.isnan(step(x, y, jnp.float32(-1.0))[0]))
    assert np.all(np.isnan(step(x, y, jnp.float32(np.inf))[0]))
    direct = jax.jit(lambda w: dmj.dssim_mae_loss(x, y, max_val=1.0, mean_weight=w))
    assert np.all(np.isnan(direct(jnp.float32(-0.5))))
    with pytest.raises(ValueError, match=r"weights\['mean'\]"):
        loss_fn(x, y, weights={"mean": -1.0})
    with pytest.raises(ValueError, match="mean_weight"):
        dmj.dssim_mae_loss(x, y, max_val=1.0, mean_weight=-1.0)
    with pytest.raises(TypeError, match="mean_weight"):
        dmj.dssim_mae_loss(x, y, max_val=1.0, mean_weight="1")
    with pytest.raises(ValueError, match="mean_weight"):
        dmj.LossConfig(mean_weight=-0.1)
    with pytest.raises(ValueError, match="mean_eps"):
        dmj.LossConfig(mean_eps=0.0)
    with pytest.raises(ValueError, match="mean_eps"):
        dmj.make_loss("seed-naive", mean_eps=1e-30)


# -------------------------------------------------------------------- maps, masks, reduce
def test_return_map_shapes_and_means():
    x, y = _images()
    for name in ("monodepth2", "gaussian-splatting"):
        loss, _ = dmj.make_loss(name)(x, y)
        loss_map, aux = dmj.make_loss(name, return_map=True)(x, y)
        assert loss_map.shape == x.shape
        # Padded statistics: the map's mean is the per-image loss.
        np.testing.assert_allclose(jnp.mean(loss_map, axis=(1, 2, 3)), loss, rtol=1e-5)
        np.testing.assert_allclose(aux["loss"], loss, rtol=1e-5)
    # monodepth2's per-pixel reprojection loss: channel mean of the map, by hand.
    s_map = dmj.ssim(
        x, y, max_val=1.0, window="uniform", filter_size=3, padding="reflect", return_map=True
    )
    by_hand = 0.85 * jnp.clip((1 - s_map) / 2, 0, 1) + 0.15 * jnp.abs(x - y)
    mono_map, _ = dmj.make_loss("monodepth2", return_map=True)(x, y)
    # (Two compiled programs: float32 rounding may differ by a few ulps.)
    np.testing.assert_allclose(mono_map, by_hand, rtol=1e-5, atol=1e-6)
    # Valid statistics: the map lives on the window centres.
    naive_map, _ = dmj.make_loss("seed-naive", return_map=True)(x, y)
    assert naive_map.shape == (2, 24 - 10, 28 - 10, 3)
    direct_map = dmj.dssim_mae_loss(x, y, max_val=1.0, return_map=True, padding="reflect")
    assert direct_map.shape == x.shape


def test_min_over_candidates_with_maps():
    """The monodepth2 use: per-pixel minimum over candidate reconstructions."""
    x, y = _images((3, 16, 16, 3))
    map_fn = jax.jit(dmj.make_loss("monodepth2", return_map=True))
    maps = jnp.stack([map_fn(x[i : i + 1], y[:1])[0] for i in range(3)])  # [3, 1, 16, 16, 3]
    per_pixel = jnp.mean(maps, axis=-1)  # mean over channels, as monodepth2
    best = jnp.min(per_pixel, axis=0)
    assert best.shape == (1, 16, 16)
    assert bool(jnp.all(best <= per_pixel[0]))


@pytest.mark.parametrize("name", SSIM_PRESETS)
def test_masks_ones_empty_and_partial(name):
    x, y = _images()
    loss_fn = dmj.make_loss(name)
    loss, _ = loss_fn(x, y)
    ones, _ = loss_fn(x, y, mask=jnp.ones((2, 24, 28, 1)))
    np.testing.assert_allclose(ones, loss, rtol=1e-5)
    mask = np.ones((2, 24, 28, 1), np.float32)
    mask[1] = 0.0  # an image with nothing valid
    mask[0, :, 14:] = 0.0  # half an image
    masked, aux = loss_fn(x, y, mask=mask)
    assert float(masked[1]) == 0.0 and float(aux["mae"][1]) == 0.0
    assert np.isfinite(masked).all() and float(masked[0]) > 0.0
    np.testing.assert_allclose(
        aux["mae"][0], jnp.mean(jnp.abs(x - y)[0, :, :14]) / dmj.PRESETS[name].max_val, rtol=1e-5
    )


def test_reductions():
    x, y = _images()
    per_image, _ = dmj.make_loss("seed-naive")(x, y)
    mean, aux_mean = dmj.make_loss("seed-naive", reduction="mean")(x, y)
    total, _ = dmj.make_loss("seed-naive", reduction="sum")(x, y)
    assert per_image.shape == (2,) and mean.shape == () and total.shape == ()
    np.testing.assert_allclose(mean, jnp.mean(per_image), rtol=1e-6)
    np.testing.assert_allclose(total, jnp.sum(per_image), rtol=1e-6)
    assert aux_mean["ssim"].shape == (2,)  # aux stays per image
    direct = dmj.dssim_mae_loss(x, y, max_val=1.0, reduction="mean")
    assert direct.shape == ()


def test_batched_equals_vmapped_and_unbatched():
    x, y = _images((2, 3, 20, 20, 3))
    loss_fn = dmj.make_loss("monodepth2")
    batched, _ = jax.jit(loss_fn)(x, y)
    assert batched.shape == (2, 3)
    vmapped, _ = jax.jit(jax.vmap(jax.vmap(loss_fn)))(x, y)
    single, _ = loss_fn(x[1, 2], y[1, 2])
    assert single.shape == ()
    np.testing.assert_allclose(vmapped, batched, rtol=1e-6)
    np.testing.assert_allclose(single, batched[1, 2], rtol=1e-6)


def test_half_precision_inputs_give_float32():
    x, y = _images()
    loss, aux = dmj.make_loss("gaussian-splatting")(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16))
    assert loss.dtype == jnp.float32 and aux["ssim"].dtype == jnp.float32


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ALL_PRESETS)
def test_gradients_finite_on_adversarial_inputs(name):
    cfg = dmj.PRESETS[name]
    size = _min_size(cfg)
    x, y = _adversarial(size, size + 3, 3 if size < 100 else 1)
    x, y = cfg.max_val * x, cfg.max_val * y
    loss_fn = dmj.make_loss(name)

    @jax.jit
    def grads(pred, target, w_s, w_a, mask):
        def total(p):
            loss, _ = loss_fn(p, target, mask=mask, weights={"structural": w_s, "mae": w_a})
            return jnp.sum(loss)

        return jax.value_and_grad(total)(pred)

    masks = [None]
    # Masks cover each padding mode once (seed-normalized is seed-naive at another scale).
    if cfg.structure != "ms_ssim" and name != "seed-normalized":
        mask = np.ones((*x.shape[:-1], 1), np.float32)
        mask[:, :, : size // 2] = 0.0  # half of every image invalid
        mask[2] = 0.0  # one image with no valid pixel
        masks.append(jnp.asarray(mask))
    for mask in masks:
        for w_s, w_a in ((cfg.structural_weight, cfg.mae_weight), (0.0, 1.0), (1.0, 0.0)):
            value, g = grads(x, y, jnp.float32(w_s), jnp.float32(w_a), mask)
            assert np.isfinite(value), (name, w_s, w_a)
            assert np.isfinite(g).all(), (name, w_s, w_a, mask is None)
    # Identical images (batch entry 0) are a minimum of both terms: the gradient of every
    # weighting is exactly zero there (MAE uses the subgradient 0 at 0).
    for w_s, w_a in ((cfg.structural_weight, cfg.mae_weight), (0.0, 1.0), (1.0, 0.0)):
        _, g = grads(x, y, jnp.float32(w_s), jnp.float32(w_a), None)
        assert float(jnp.abs(g[0]).max()) == 0.0, (name, w_s, w_a)


@pytest.mark.parametrize("name", SSIM_PRESETS)
def test_gradient_of_loss_maps_is_exactly_zero_at_identity(name):
    cfg = dmj.PRESETS[name]
    x, _ = _images((1, 20, 21, 3))
    x = cfg.max_val * x
    loss_fn = dmj.make_loss(name, return_map=True)
    g = jax.jit(jax.grad(lambda p: jnp.sum(loss_fn(p, x)[0])))(x)
    assert float(jnp.abs(g).max()) == 0.0


def test_check_grads_float64(x64):
    x, y = (np.asarray(v, np.float64) for v in _images((1, 12, 12, 2)))
    # monodepth2 goes through the most loss-side code: maps, clipping, weighted means.
    loss_fn = dmj.make_loss("monodepth2", reduction="sum")
    check_grads(jax.jit(lambda p: loss_fn(p, y)[0]), (x,), order=1, modes=["rev"])


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dmj.make_loss("seed"), "seed-naive.*zhao-mix"),
        (lambda: dmj.make_loss("seed-naive", alpha=1.5), "alpha"),
        (lambda: dmj.make_loss({"w_ssim": 1.0}), "w_ssim"),
        (lambda: dmj.make_loss("seed-naive", structural_weight=-0.1), "structural_weight"),
        (lambda: dmj.make_loss("seed-naive", mae_weight=-1.0), "mae_weight"),
        (lambda: dmj.make_loss("seed-naive", structure="msssim"), "structure"),
        (lambda: dmj.make_loss("seed-naive", dssim_form="double"), "dssim_form"),
        (lambda: dmj.make_loss("seed-naive", reduction="avg"), "reduction"),
        (lambda: dmj.make_loss("seed-naive", mae_weighting="box"), "mae_weighting"),
        (lambda: dmj.make_loss("ms-ssim-pyramid-mix", padding="same"), "padding"),
        (lambda: dmj.make_loss("zhao-mix", return_map=True), "return_map"),
        (lambda: dmj.make_loss("zhao-mix", window="uniform"), "window"),
        (lambda: dmj.make_loss("zhao-mix", sigmas=(1.0, 0.0)), "sigmas"),
        (lambda: dmj.make_loss("zhao-mix")(*_images((1, 30, 40, 3))), "filter_size=31"),
        (lambda: dmj.make_loss("monodepth2", mae_weighting="gaussian"), "mae_weighting"),
        (lambda: dmj.make_loss("seed-naive", max_val=0.0), "max_val"),
        (lambda: dmj.make_loss("seed-naive", power_factors=()), "power_factors"),
        (lambda: dmj.dssim_mae_loss(*_images(), max_val=1.0, alpha=1.5), "alpha"),
        (lambda: dmj.dssim_mae_loss(*_images(), max_val=1.0, alpha=-0.1), "alpha"),
        (lambda: dmj.dssim_mae_loss(*_images(), max_val=1.0, structure="ssim3"), "structure"),
        (lambda: dmj.dssim_mae_loss(*_images(), max_val=1.0, dssim_form="x"), "dssim_form"),
        (lambda: dmj.dssim_mae_loss(*_images(), max_val=1.0, sigma=2.0), r"\['sigma'\]"),
        (lambda: dmj.dssim_mae_loss(*_images(), max_val=1.0, mae_weight=2.0), "alpha"),
        (
            lambda: dmj.make_loss("seed-naive")(*_images(), weights={"structural": -1.0}),
            r"weights\['structural'\]",
        ),
        (lambda: dmj.make_loss("seed-naive")(*_images(), weights={"l1": 1.0}), "'l1'"),
        (
            lambda: dmj.make_loss("seed-naive")(*_images(), weights={"structural": jnp.ones(2)}),
            r"weights\['structural'\]",
        ),
        (
            lambda: dmj.make_loss("ms-ssim-pyramid-mix")(
                *_images((1, 161, 161, 1)), mask=jnp.ones(1)
            ),
            "mask",
        ),
        (lambda: dmj.make_loss("seed-naive")(*_images((1, 8, 8, 1))), "filter_size"),
        (
            lambda: dmj.make_loss("seed-naive")(jnp.ones((8, 16, 16, 1)), jnp.ones((8, 16, 16))),
            "shape",
        ),
    ],
)
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_type_errors():
    with pytest.raises(TypeError, match="preset_or_config"):
        dmj.make_loss(3)
    with pytest.raises(TypeError, match="weights"):
        dmj.make_loss("seed-naive")(*_images(), weights=[0.5, 0.5])
    with pytest.raises(TypeError, match="clip"):
        dmj.LossConfig(clip=1)


# ------------------------------------------------------------------ NaN, inf and masks
def _nan_cases(name):
    cfg = dmj.PRESETS[name]
    size = _min_size(cfg)
    x, y = _images((3, size, size + 2, 1 if size > 100 else 3))
    x, y = np.array(cfg.max_val * x), np.array(cfg.max_val * y)
    x[0, 2, 3, 0] = np.nan
    x[1, 5, 1, 0] = np.inf
    y[2, 0, 0, 0] = -np.inf
    return x, y


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_nan_and_inf_propagate_as_nan(name):
    x, y = _nan_cases(name)
    for reduction in ("none", "mean", "sum"):
        loss, aux = jax.jit(dmj.make_loss(name, reduction=reduction))(x, y)
        assert np.all(np.isnan(np.asarray(loss))), (name, reduction, loss)
        assert np.all(np.isnan(np.asarray(aux["loss"]))), (name, reduction)
        assert np.all(np.isnan(np.asarray(aux["structural"]))), (name, reduction)
    for weights in ({"structural": 0.0}, {"mae": 0.0}):
        loss, _ = jax.jit(dmj.make_loss(name))(x, y, weights=weights)
        assert np.all(np.isnan(np.asarray(loss))), (name, weights)


@pytest.mark.parametrize("structure", ["ssim", "multi_sigma"])
def test_direct_loss_and_maps_propagate_nan(structure):
    x, y = _nan_cases("zhao-mix")
    kwargs = dict(max_val=1.0, structure=structure, filter_size=11)
    assert np.all(np.isnan(np.asarray(dmj.dssim_mae_loss(x, y, **kwargs))))
    assert np.isnan(float(dmj.dssim_mae_loss(x, y, reduction="mean", **kwargs)))
    maps = dmj.dssim_mae_loss(x, y, return_map=True, **kwargs)
    assert np.all(np.isnan(np.asarray(maps)).any(axis=(1, 2, 3)))
    per_pixel, _ = dmj.make_loss("monodepth2", structure=structure, window="gaussian")(x, y)
    assert np.all(np.isnan(np.asarray(per_pixel)))


@pytest.mark.parametrize("name", [*SSIM_PRESETS, "zhao-mix"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_masked_out_content_never_reaches_losses_or_gradients(name, bad):
    cfg = dmj.PRESETS[name]
    size = _min_size(cfg)
    x, y = _images((2, size, size + 2, 3))
    x, y = np.array(cfg.max_val * x), np.array(cfg.max_val * y)
    mask = np.ones((2, size, size + 2, 1), np.float32)
    mask[0, 3:9, 2:12] = 0.0
    mask[1] = 0.0
    hole = np.broadcast_to(mask == 0, x.shape)
    loss_fn = dmj.make_loss(name)

    @jax.jit
    def value_and_grads(a, b):
        def total(a, b):
            loss, aux = loss_fn(a, b, mask=mask)
            return jnp.sum(loss), aux

        return jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(a, b)

    (clean, clean_aux), clean_grads = value_and_grads(x, y)
    (dirty, dirty_aux), dirty_grads = value_and_grads(
        np.where(hole, bad, x), np.where(hole, -bad, y)
    )
    assert np.isfinite(float(clean))
    np.testing.assert_array_equal(np.asarray(dirty), np.asarray(clean))
    for key in clean_aux:
        np.testing.assert_array_equal(np.asarray(dirty_aux[key]), np.asarray(clean_aux[key]))
    for g_clean, g_dirty in zip(clean_grads, dirty_grads, strict=True):
        np.testing.assert_array_equal(np.asarray(g_dirty), np.asarray(g_clean))
        assert not np.any(np.asarray(g_clean)[hole])


def test_per_image_ssim_of_map_configs_is_the_ssim_reduction():
    """aux["ssim"] of a per-pixel config is `ssim`'s own per-image value, masks included."""
    x, y = _images()
    mask = np.ones((2, 24, 28, 1), np.float32)
    mask[0, :, 10:] = 0.0
    for padding in ("valid", "reflect"):
        loss_fn = dmj.make_loss("monodepth2", padding=padding)
        _, aux = jax.jit(loss_fn)(x, y, mask=mask)
        opts = dict(filter_size=3, window="uniform", padding=padding, mask=mask)
        expected = jax.jit(lambda a, b, opts=opts: dmj.ssim(a, b, max_val=1.0, **opts))(x, y)
        np.testing.assert_allclose(np.asarray(aux["ssim"]), np.asarray(expected), rtol=1e-6)
