"""Metric states: accumulation, merge, masks, mixed sizes in shape buckets, compile counts.

References: the public per-image functions (dssim_mae_jax.ssim, ...) called on each image
alone at its own size, and float64 numpy for the two dataset-PSNR conventions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data

import dssim_mae_jax as dmj
from dssim_mae_jax.metrics import MAE, MSSSIM, PSNR, SSIM, MultiSigmaSSIM, _states

TOL = 1e-6  # float32: each image's value against its unpadded value
# multi_sigma_ssim multiplies five contrast-structure maps; in float32 the function itself is
# about 9e-7 from its float64 value on these crops (measured with jax.enable_x64, filter_size=9,
# padding="same"), and the bucketed value as close on the other side, so they may differ by 2e-6.
# PSNR is in dB: near 25 dB one float32 ulp is 1.9e-6, so 1e-6 is below its resolution; two
# ulps are allowed there.
TOLS = {"MultiSigmaSSIM": 2e-6, "PSNR": 4e-6}

# (state class, public function, options) for every state; small windows keep it quick.
CASES = [
    (SSIM, dmj.ssim, {}),
    (SSIM, dmj.ssim, {"padding": "same"}),
    (SSIM, dmj.ssim, {"padding": "reflect", "window": "uniform", "filter_size": 7}),
    (MultiSigmaSSIM, dmj.multi_sigma_ssim, {"filter_size": 11, "sigmas": (0.5, 1.0, 2.0)}),
    (MultiSigmaSSIM, dmj.multi_sigma_ssim, {"filter_size": 9, "padding": "same"}),
    (PSNR, dmj.psnr, {}),
    (MAE, dmj.mae, {}),
]
IDS = [f"{c.__name__}-{o}" for c, _, o in CASES]


def _pair(h, w, seed, channels=3):
    photo = data.astronaut().astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, 512 - h), rng.integers(0, 512 - w)
    target = photo[top : top + h, left : left + w, :channels]
    pred = np.clip(target + rng.normal(0, 0.06, target.shape), 0, 1).astype(np.float32)
    return pred, target


def _mask(h, w, seed):
    return (np.random.default_rng(seed).random((h, w, 1)) > 0.25).astype(np.float32)


SIZES = [(37, 53), (64, 41), (50, 50), (33, 70)]


def _per_image(fn, preds, targets, masks, options):
    return np.array(
        [
            float(fn(p, t, max_val=1.0, mask=m, **options))
            for p, t, m in zip(preds, targets, masks, strict=True)
        ]
    )


@pytest.mark.parametrize(("cls", "fn", "options"), CASES, ids=IDS)
@pytest.mark.parametrize("masked", [False, True])
def test_mixed_sizes_equal_unpadded(cls, fn, options, masked):
    pairs = [_pair(h, w, i) for i, (h, w) in enumerate(SIZES)]
    preds, targets = [p for p, _ in pairs], [t for _, t in pairs]
    masks = [_mask(h, w, 10 + i) for i, (h, w) in enumerate(SIZES)] if masked else None
    want = _per_image(fn, preds, targets, masks or [None] * len(SIZES), options)
    state = cls.empty(max_val=1.0, keep_values=8, **options).update(preds, targets, mask=masks)
    tol = TOLS.get(cls.__name__, TOL)
    np.testing.assert_allclose(np.asarray(state.per_image()), want, rtol=0, atol=tol)
    np.testing.assert_allclose(float(state.compute()), want.mean(), rtol=0, atol=tol)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("fit_scales", [False, True])
def test_ms_ssim_mixed_odd_sizes_equal_unpadded(masked, fit_scales):
    # Odd sizes at several levels of the pyramid (TF's symmetric pad before each pooling).
    sizes = [(161, 170), (175, 163), (201, 185)] + ([(90, 121)] if fit_scales else [])
    pairs = [_pair(h, w, i) for i, (h, w) in enumerate(sizes)]
    preds, targets = [p for p, _ in pairs], [t for _, t in pairs]
    masks = [_mask(h, w, 20 + i) for i, (h, w) in enumerate(sizes)] if masked else None
    options = {"fit_scales": fit_scales}
    want = _per_image(dmj.ms_ssim, preds, targets, masks or [None] * len(sizes), options)
    state = MSSSIM.empty(max_val=1.0, keep_values=8, **options).update(preds, targets, mask=masks)
    np.testing.assert_allclose(np.asarray(state.per_image()), want, rtol=0, atol=TOL)


@pytest.mark.parametrize(("cls", "fn", "options"), CASES[:1] + CASES[3:], ids=IDS[:1] + IDS[3:])
def test_batches_accumulate_like_one_call(cls, fn, options):
    preds, targets = zip(*[_pair(40, 48, i) for i in range(6)], strict=True)
    preds, targets = np.stack(preds), np.stack(targets)
    want = np.asarray(fn(preds, targets, max_val=1.0, **options))
    empty = cls.empty(max_val=1.0, keep_values=6, **options)
    step = jax.jit(lambda s, p, t: s.update(p, t))
    eager, jitted = empty, empty
    for lo, hi in ((0, 2), (2, 5), (5, 6)):
        eager = eager.update(preds[lo:hi], targets[lo:hi])
        jitted = step(jitted, preds[lo:hi], targets[lo:hi])
    tol = TOLS.get(cls.__name__, TOL)
    for state in (eager, jitted):
        assert int(state.count) == 6
        np.testing.assert_allclose(np.asarray(state.per_image()), want, rtol=0, atol=tol)
        np.testing.assert_allclose(float(state.compute()), want.mean(), rtol=0, atol=tol)
    # merge of the split halves: the same sums and the per-image values in order.
    a = empty.update(preds[:4], targets[:4])
    b = empty.update(preds[4:], targets[4:])
    merged = jax.jit(lambda x, y: x.merge(y))(a, b)
    np.testing.assert_allclose(np.asarray(merged.per_image()), want, rtol=0, atol=tol)
    np.testing.assert_allclose(float(merged.compute()), want.mean(), rtol=0, atol=tol)


def test_state_scans_over_batches_inside_jit():
    preds, targets = zip(*[_pair(32, 32, i, channels=1) for i in range(8)], strict=True)
    preds = np.stack(preds).reshape(4, 2, 32, 32, 1)
    targets = np.stack(targets).reshape(4, 2, 32, 32, 1)

    @jax.jit
    def evaluate(p, t):
        def body(state, batch):
            return state.update(*batch), None

        return jax.lax.scan(body, SSIM.empty(max_val=1.0), (p, t))[0].compute()

    want = dmj.ssim(preds.reshape(8, 32, 32, 1), targets.reshape(8, 32, 32, 1), max_val=1.0)
    np.testing.assert_allclose(float(evaluate(preds, targets)), float(np.mean(want)), atol=TOL)


def test_empty_mask_images_are_not_counted():
    # A fixed-size batch padded with a dummy image (mask all zero), as a last batch is.
    preds, targets = zip(*[_pair(40, 40, i) for i in range(3)], strict=True)
    preds, targets = np.stack(preds), np.stack(targets)
    mask = np.ones((3, 1, 1, 1), np.float32)
    mask[2] = 0.0
    preds[2] = np.nan  # whatever the dummy holds
    for update in (lambda s: s.update(preds, targets, mask=mask),
                   jax.jit(lambda s: s.update(preds, targets, mask=mask))):  # fmt: skip
        state = update(SSIM.empty(max_val=1.0, keep_values=4))
        assert int(state.count) == 2
        want = dmj.ssim(preds[:2], targets[:2], max_val=1.0)
        np.testing.assert_allclose(np.asarray(state.per_image()), want, atol=TOL)


def test_nan_image_gives_nan():
    p, t = _pair(32, 32, 0)
    p = p.copy()
    p[3, 4, 0] = np.nan
    for cls in (SSIM, PSNR, MAE):
        assert np.isnan(float(cls.empty(max_val=1.0).update(p[None], t[None]).compute()))
    assert np.isnan(float(SSIM.empty(max_val=1.0).compute()))  # nothing counted


def test_psnr_conventions_against_float64():
    pairs = [_pair(h, w, i) for i, (h, w) in enumerate(SIZES)]
    state = PSNR.empty(max_val=1.0).update([p for p, _ in pairs], [t for _, t in pairs])
    sq = [np.asarray(p, np.float64) - np.asarray(t, np.float64) for p, t in pairs]
    image_mean = np.mean([-10 * np.log10(np.mean(d**2)) for d in sq])
    pooled = -10 * np.log10(sum(np.sum(d**2) for d in sq) / sum(d.size for d in sq))
    assert abs(image_mean - pooled) > 0.01  # the two conventions differ here
    np.testing.assert_allclose(float(state.image_mean()), image_mean, atol=2e-4)
    np.testing.assert_allclose(float(state.compute()), image_mean, atol=2e-4)
    np.testing.assert_allclose(float(state.pooled_mse()), pooled, atol=2e-4)
    s2 = PSNR.empty(max_val=1.0, reduction="pooled_mse").update(
        [p for p, _ in pairs], [t for _, t in pairs]
    )
    np.testing.assert_allclose(float(s2.compute()), pooled, atol=2e-4)


def test_keep_values_capacity():
    preds, targets = zip(*[_pair(24, 24, i, channels=1) for i in range(5)], strict=True)
    preds, targets = np.stack(preds), np.stack(targets)
    state = MAE.empty(max_val=1.0, keep_values=3).update(preds, targets)
    want = np.asarray(dmj.mae(preds, targets, max_val=1.0))
    assert int(state.count) == 5
    np.testing.assert_allclose(np.asarray(state.per_image()), want[:3], atol=TOL)
    np.testing.assert_allclose(float(state.compute()), want.mean(), atol=TOL)
    assert MAE.empty(max_val=1.0).update(preds, targets).values.shape == (0,)


def test_twenty_four_images_of_twelve_sizes_compile_at_most_four_times():
    sizes = [(96 + 9 * i, 150 - 7 * i) for i in range(12)]
    images = [_pair(h, w, i) for i, (h, w) in enumerate(sizes * 2)]
    state = SSIM.empty(max_val=1.0, keep_values=24, filter_size=7, k2=0.031)  # fresh options
    before = _states._bucket_step._cache_size()
    for p, t in images:
        state = state.update(p[None], t[None])
    compiles = _states._bucket_step._cache_size() - before
    assert 1 <= compiles <= 4
    want = [float(dmj.ssim(p, t, max_val=1.0, filter_size=7, k2=0.031)) for p, t in images]
    np.testing.assert_allclose(np.asarray(state.per_image()), want, rtol=0, atol=TOL)


def test_options_and_errors():
    with pytest.raises(TypeError, match="max_val"):
        SSIM.empty()
    with pytest.raises(TypeError, match="unknown option"):
        SSIM.empty(max_val=1.0, sigmas=(1.0,))
    with pytest.raises(ValueError, match="reduction"):
        PSNR.empty(max_val=1.0, reduction="median")
    with pytest.raises(ValueError, match="keep_values"):
        MAE.empty(keep_values=-1)
    with pytest.raises(ValueError, match="bucket_growth"):
        MAE.empty(bucket_growth=1.0)
    with pytest.raises(ValueError, match="y_channel"):
        MAE.empty(y_channel=True)
    with pytest.raises(ValueError, match="same options"):
        SSIM.empty(max_val=1.0).merge(SSIM.empty(max_val=255.0))
    p, t = _pair(8, 8, 0)
    with pytest.raises(ValueError, match="filter_size"):
        SSIM.empty(max_val=1.0).update(p[None], t[None])
    p, t = _pair(100, 120, 0)
    with pytest.raises(ValueError, match="fit_scales"):
        MSSSIM.empty(max_val=1.0).update(p[None], t[None])
    with pytest.raises(ValueError, match="one channel"):
        PSNR.empty(max_val=1.0, y_channel=True).update(
            p[None], t[None], mask=np.ones((100, 120, 3))
        )
    with pytest.raises(ValueError, match="mask"):
        PSNR.empty(max_val=1.0).update(p[None], t[None], mask=-np.ones((100, 120, 1)))


def test_no_buckets_calls_the_function_at_each_size():
    p, t = _pair(40, 45, 0)
    state = SSIM.empty(max_val=1.0, bucket_growth=None).update(p[None], t[None])
    assert float(state.compute()) == float(dmj.ssim(p[None], t[None], max_val=1.0)[0])
    # A list of masked images: each image with its own mask, as the function takes it.
    pairs = [_pair(h, w, i) for i, (h, w) in enumerate(SIZES[:2])]
    masks = [_mask(h, w, i) for i, (h, w) in enumerate(SIZES[:2])]
    state = SSIM.empty(max_val=1.0, bucket_growth=None, keep_values=2).update(
        [p for p, _ in pairs], [t for _, t in pairs], mask=masks
    )
    want = [
        float(dmj.ssim(p, t, max_val=1.0, mask=m)) for (p, t), m in zip(pairs, masks, strict=True)
    ]
    assert np.asarray(state.per_image()).tolist() == want


def test_nnx_metric_in_multimetric():
    nnx = pytest.importorskip("flax.nnx")
    from dssim_mae_jax.metrics import NnxMetric

    pairs = [_pair(32, 40, i) for i in range(4)]
    preds = jnp.asarray(np.stack([p for p, _ in pairs]))
    targets = jnp.asarray(np.stack([t for _, t in pairs]))
    metrics = nnx.MultiMetric(
        psnr=NnxMetric(PSNR.empty(max_val=1.0)),
        ssim=NnxMetric(SSIM.empty(max_val=1.0)),
        loss=nnx.metrics.Average("loss"),
    )

    @nnx.jit
    def step(m, p, t):
        m.update(predictions=p, targets=t, loss=jnp.mean(jnp.abs(p - t)))

    step(metrics, preds[:2], targets[:2])
    step(metrics, preds[2:], targets[2:])
    out = metrics.compute()
    np.testing.assert_allclose(
        float(out["ssim"]), float(jnp.mean(dmj.ssim(preds, targets, max_val=1.0))), atol=TOL
    )
    np.testing.assert_allclose(
        float(out["psnr"]), float(jnp.mean(dmj.psnr(preds, targets, max_val=1.0))), atol=1e-4
    )
    metrics.reset()
    assert np.isnan(float(metrics.compute()["ssim"]))
