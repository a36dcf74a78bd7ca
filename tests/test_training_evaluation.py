"""Per-image held-out scores (with the colour cast), their console lines, and the held-out
PSNR probe of the training curves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dssim_mae_jax import training
from dssim_mae_jax.training import _evaluation


def _images(n=2, size=40, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((size + 3 * i, size, 3)).astype(np.float32) for i in range(n)]


def _psnr64(a, b):
    """PSNR in float64 numpy (max 1): the reference."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(1.0 / mse)


def test_colour_cast_is_the_mean_offset_per_channel_in_levels():
    clean = np.random.default_rng(0).random((2, 16, 20, 3))
    offset = np.asarray([3.0, -1.5, 0.0]) / 255
    restored = clean + offset + np.random.default_rng(1).normal(0, 0.01, clean.shape)
    want = 255 * (restored - clean).mean(axis=(1, 2))  # float64 reference
    got = jax.jit(_evaluation.colour_cast)(jnp.asarray(restored, jnp.float32), clean)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)
    np.testing.assert_allclose(np.asarray(got).mean(0), [3.0, -1.5, 0.0], atol=0.5)


@pytest.mark.parametrize("task", ["denoise", "sr"])
def test_per_image_scores_are_what_the_means_average(task):
    config = training.Config(task=task, scale=2, eval_crop=36)
    identity = lambda params, x: (
        x if task == "denoise" else jax.image.resize(x, (*x.shape[:-3], 2 * x.shape[-3],
                                                         2 * x.shape[-2], 3), "nearest")
    )  # fmt: skip
    evaluate = training.make_evaluator(config, identity)
    images = _images()
    means, shown = training.evaluate_dataset(config, evaluate, {}, images, seed=3)
    per_image = _evaluation.score_images(config, shown, ["a.png", "b/c.png"])
    assert list(per_image) == ["a.png", "b/c.png"]
    for which in ("input", "model"):
        for k, v in means[which].items():
            mean = np.mean([per_image[n][which][k] for n in per_image])
            assert mean == pytest.approx(v, abs=1e-5), (which, k)
    for name, (_, restored, clean) in zip(per_image, shown, strict=True):
        model = per_image[name]["model"]
        assert model["psnr"] == pytest.approx(_psnr64(restored, clean), abs=1e-3)
        want = 255 * (restored.astype(np.float64) - clean).mean(axis=(0, 1))
        np.testing.assert_allclose(model["cast"], want, atol=1e-3)
    lines = _evaluation.format_images(per_image).splitlines()
    assert len(lines) == 2 and lines[1].lstrip().startswith("b/c.png")
    cast = " ".join(f"{c:+.2f}" for c in per_image["a.png"]["model"]["cast"])
    assert f"cast [{cast}] levels" in lines[0] and "PSNR" in lines[0] and "SSIM" in lines[0]


def _y64(rgb):
    """BT.601 studio-range luma (MATLAB rgb2ycbcr) on [0, 1] data, float64: the reference."""
    rgb = np.asarray(rgb, np.float64) * 255
    return (16 + rgb @ np.asarray([65.481, 128.553, 24.966]) / 255)[..., None] / 255


def test_sr_means_follow_the_y_channel_and_border_conventions():
    config = training.Config(task="sr", scale=2, eval_crop=40)
    upsample = lambda params, x: jax.image.resize(
        x, (*x.shape[:-3], 2 * x.shape[-3], 2 * x.shape[-2], 3), "linear"
    )
    evaluate = training.make_evaluator(config, upsample)
    images = _images(n=3, size=44)
    means, shown = training.evaluate_dataset(config, evaluate, {}, images, seed=1)
    assert "ms_ssim" not in means["model"]  # 40 pixels: too small for 5 scales
    for which, row in (("input", 0), ("model", 1)):
        psnr_y = []
        for triple in shown:
            pred, clean = (_y64(triple[i])[2:-2, 2:-2] for i in (row, 2))
            assert 0.0 <= triple[row].min() and triple[row].max() <= 1.0  # clipped
            psnr_y.append(_psnr64(pred, clean))
        assert means[which]["psnr_y"] == pytest.approx(np.mean(psnr_y), abs=1e-3), which
        psnr = np.mean([_psnr64(t[row], t[2]) for t in shown])
        assert means[which]["psnr"] == pytest.approx(psnr, abs=1e-3), which
    conv = _evaluation.conventions(config, means)
    assert conv["psnr"] == "image_mean" and conv["crop_border"] == 2
    assert "BT.601" in conv["y_channel"] and "ms_ssim" not in conv
    assert conv["matlab_downsample"] is False


def test_score_images_needs_one_name_per_image():
    config = training.Config(eval_crop=36)
    evaluate = training.make_evaluator(config, lambda params, x: x)
    _, shown = training.evaluate_dataset(config, evaluate, {}, _images(), seed=0)
    with pytest.raises(ValueError, match="names"):
        _evaluation.score_images(config, shown, ["only-one"])
    # No held-out image: no metric at all (NaN would read as a diverged model).
    assert training.evaluate_dataset(config, evaluate, {}, [], seed=0) == (
        {"input": {}, "model": {}},
        [],
    )


def test_probe_is_the_psnr_of_fixed_held_out_crops():
    config = training.Config(task="denoise", noise_sigma=25.0)
    images = _images(n=3, size=50)
    identity = lambda params, x: x
    probe = _evaluation.make_probe(config, identity, images, seed=7, crop=32, count=4)
    value = probe({})["heldout_psnr"]
    assert value == probe({})["heldout_psnr"]  # fixed crops and noise
    # Reference: the same crops (centre 32x32 of images 0, 1, 2, 0) and noise, in float64.
    clean = np.stack([training.center_crop(images[i % 3], 32) for i in range(4)])
    noise = jax.random.normal(jax.random.PRNGKey(7), clean.shape, jnp.float32)
    noisy = np.clip(clean + 25.0 / 255 * np.asarray(noise, np.float64), 0, 1)
    want = np.mean([_psnr64(noisy[i], clean[i]) for i in range(4)])
    assert value == pytest.approx(want, abs=1e-3)
    better = _evaluation.make_probe(config, lambda p, x: 0.5 * x + 0.5 * p, images, seed=7)
    assert better(jnp.asarray(0.5))["heldout_psnr"] != pytest.approx(value)
    assert _evaluation.make_probe(config, identity, [], seed=0)({}) == {}
