"""`load_restorer`: a run's checkpoint applied to images of any size, whole or in tiles."""

import json
import os

import numpy as np
import pytest
import restore_runs

from dssim_mae_jax import training
from dssim_mae_jax.training._config import ConfigError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, fields in {
        "denoise": {"task": "denoise"},
        "sr": {"task": "sr", "scale": 3},
        "gray": {"task": "denoise", "channels": 1},
    }.items():
        out[name] = (str(root / name), *restore_runs.make_run(str(root / name), **fields))
    return out


def _image(h, w, c, seed=0):
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


def test_restorer_applies_the_checkpoint_parameters(runs):
    workdir, config, params, apply_fn = runs["denoise"]
    restore = training.load_restorer(workdir)
    x = _image(37, 52, 3)
    # The model applied directly to the parameters that were saved (not a fresh init).
    want = np.asarray(apply_fn(params, x[None]))[0]
    np.testing.assert_allclose(restore(x), want, atol=1e-6)
    assert restore.step == config.steps and restore.scale == 1
    assert np.abs(want - x).mean() > 0.1  # far from the identity: the test can fail


@pytest.mark.parametrize("name", ["denoise", "sr"])
def test_tiled_output_equals_untiled(runs, name):
    workdir = runs[name][0]
    whole = training.load_restorer(workdir, max_pixels=1 << 20)
    tiled = training.load_restorer(workdir, max_pixels=48 * 48)
    for h, w in ((101, 77), (64, 150), (49, 49)):  # odd sizes, a partial last tile
        x = _image(h, w, 3, seed=h)
        assert tiled.tiles(h, w) > 1 and whole.tiles(h, w) == 1
        a, b = tiled(x), whole(x)
        assert a.shape == (h * whole.scale, w * whole.scale, 3)
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_too_small_a_margin_would_show(runs):
    """The tiling test is sensitive: tiles without enough context differ by far more."""
    workdir = runs["denoise"][0]
    x = _image(101, 77, 3)
    tiled = training.load_restorer(workdir, max_pixels=48 * 48)
    tiled.margin = 1  # less than the receptive field of 4 convolutions
    assert np.abs(tiled(x) - training.load_restorer(workdir)(x)).max() > 1e-2


def test_super_resolution_scale_comes_from_the_run(runs):
    restore = training.load_restorer(runs["sr"][0])
    assert restore.scale == 3
    assert restore(_image(20, 31, 3)).shape == (60, 93, 3)


def test_gray_and_colour_inputs_keep_their_channels(runs):
    colour = training.load_restorer(runs["denoise"][0])
    gray = training.load_restorer(runs["gray"][0])
    x = _image(30, 40, 3)
    g = x[..., :1]
    # Gray image, colour model: replicated, restored, reduced to its BT.601 luma.
    want = colour(np.repeat(g, 3, axis=-1)) @ np.asarray([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(colour(g)[..., 0], want, atol=1e-6)
    np.testing.assert_allclose(colour(g[..., 0]), colour(g), atol=0)  # [H, W] accepted
    # Colour image, gray model: one channel at a time.
    out = gray(x)
    assert out.shape == (30, 40, 3)
    for ch in range(3):
        np.testing.assert_allclose(out[..., ch], gray(x[..., ch : ch + 1])[..., 0], atol=1e-6)


def test_integer_pixels_are_scaled_by_their_dtype(runs):
    restore = training.load_restorer(runs["denoise"][0])
    x8 = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    x16 = x8.astype(np.uint16) * 257
    np.testing.assert_allclose(restore(x8), restore(x8 / np.float32(255)), atol=1e-6)
    np.testing.assert_allclose(restore(x16), restore(x8), atol=1e-6)


def test_bad_images_and_options_are_refused(runs):
    restore = training.load_restorer(runs["denoise"][0])
    with pytest.raises(ValueError, match=r"image: expected .* 1 \(gray\) or 3 \(RGB\)"):
        restore(np.zeros((8, 8, 4), np.float32))
    with pytest.raises(ValueError, match="image: expected"):
        restore(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="image: expected uint8/uint16"):
        restore(np.zeros((8, 8, 3), np.int8))
    with pytest.raises(ValueError, match="max_pixels: got 100"):
        training.load_restorer(runs["denoise"][0], max_pixels=100)


def test_workdirs_without_a_usable_checkpoint_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"no config\.json"):
        training.load_restorer(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json: not a valid train\.py config"):
        training.load_restorer(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(training.Config().to_dict()))
    with pytest.raises(ConfigError, match="has no checkpoint"):
        training.load_restorer(str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()  # nothing created by looking


def test_damaged_checkpoint_is_refused_with_a_warning(tmp_path):
    restore_runs.make_run(str(tmp_path))
    step = tmp_path / "checkpoints" / "10"
    for root, _, files in os.walk(step):
        for f in files:
            with open(os.path.join(root, f), "wb"):
                pass  # truncated to 0 bytes
    with pytest.warns(RuntimeWarning, match="checkpoint step 10 does not restore"):
        with pytest.raises(ConfigError, match="no finished checkpoint that restores"):
            training.load_restorer(str(tmp_path))


def test_checkpoint_of_an_unfinished_run_is_used_with_a_warning(tmp_path):
    restore_runs.make_run(str(tmp_path), step=4)
    with pytest.warns(RuntimeWarning, match="step 4 of 10 .the run did not finish"):
        restore = training.load_restorer(str(tmp_path))
    assert restore.step == 4
