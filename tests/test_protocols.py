"""The papers' evaluation protocols against float64 references written from their definitions.

References (numpy float64, no library code):
- Y channel: MATLAB ``rgb2ycbcr`` / BasicSR ``to_y_channel`` on [0, 255] data,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, PSNR and SSIM with range 255
  after removing ``crop_border`` pixels on every side (BasicSR ``calculate_psnr``/
  ``calculate_ssim(..., test_y_channel=True)``; their SSIM is Wang's valid Gaussian SSIM).
- MATLAB ``ssim.m`` (Wang, 2009): ``f = max(1, round(min(H, W) / 256))`` (round half away
  from zero); if ``f > 1`` ``imfilter(img, ones(f)/f^2, 'symmetric', 'same')`` (centre tap
  ``floor((f + 1) / 2)``, 1-based) and ``img(1:f:end, 1:f:end)``; then Wang SSIM
  (11-tap Gaussian, sigma 1.5, K = (0.01, 0.03), L = 255, valid region).
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from skimage import data

from dssim_mae_jax import _protocols
from dssim_mae_jax.metrics import PSNR, SSIM


def _y_ref(rgb255):
    rgb = np.asarray(rgb255, np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def _psnr_ref(x, y, max_val=255.0):
    mse = np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
    return 10.0 * np.log10(max_val**2 / mse)


def _matlab_round(v):
    return int(np.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _matlab_downsample_ref(img):
    """ssim.m's downsampling of one [H, W] image, by explicit index arithmetic (float64)."""
    img = np.asarray(img, np.float64)
    h, w = img.shape
    f = max(1, _matlab_round(min(h, w) / 256))
    if f == 1:
        return img
    centre = (f + 1) // 2  # 1-based centre tap of imfilter

    def sym(i, n):  # 'symmetric' boundary: mirror with the edge sample repeated
        while i < 0 or i >= n:
            i = -1 - i if i < 0 else 2 * n - 1 - i
        return i

    out = np.zeros_like(img)
    offsets = [k - centre for k in range(1, f + 1)]
    rows = [[sym(i + o, h) for o in offsets] for i in range(h)]
    cols = [[sym(j + o, w) for o in offsets] for j in range(w)]
    for i in range(0, h, f):  # only the kept rows and columns are needed
        for j in range(0, w, f):
            out[i, j] = img[np.ix_(rows[i], cols[j])].sum() / (f * f)
    return out[::f, ::f]


def _matlab_ssim_ref(x, y):
    """MATLAB ssim.m on [H, W] images in [0, 255] (float64)."""
    xd, yd = _matlab_downsample_ref(x), _matlab_downsample_ref(y)
    return reference.ssim(xd[..., None], yd[..., None], max_val=255.0)


@pytest.fixture(scope="module")
def rgb_pair():
    target = data.astronaut()[40:200, 60:250].astype(np.float64)  # 160x190x3, 0..255
    rng = np.random.default_rng(0)
    pred = np.clip(target + rng.normal(0.0, 12.0, target.shape), 0, 255)
    return pred, target


def test_rgb_to_y_is_matlab_rgb2ycbcr(rgb_pair):
    pred, _ = rgb_pair
    got = np.asarray(_protocols.rgb_to_y(jnp.asarray(pred, jnp.float32), max_val=255.0))
    np.testing.assert_allclose(got[..., 0], _y_ref(pred), rtol=5e-7)  # float32: a few ulp
    # [0, 1] data: the same luma divided by 255.
    unit = np.asarray(_protocols.rgb_to_y(jnp.asarray(pred / 255.0, jnp.float32), max_val=1.0))
    np.testing.assert_allclose(unit[..., 0], _y_ref(pred) / 255.0, rtol=5e-7)
    # Studio range: black 16, white 235.
    ends = _protocols.rgb_to_y(jnp.asarray([[[0.0, 0, 0], [255, 255, 255]]]), max_val=255.0)
    np.testing.assert_allclose(np.asarray(ends)[0, :, 0], [16.0, 235.0], atol=1e-5)


@pytest.mark.parametrize("border", [0, 4])
def test_y_channel_psnr_and_ssim_match_basicsr_definition(rgb_pair, border):
    pred, target = rgb_pair
    cut = (slice(border, pred.shape[0] - border), slice(border, pred.shape[1] - border))
    py, ty = _y_ref(pred[cut]), _y_ref(target[cut])
    want_psnr = _psnr_ref(py, ty)
    want_ssim = reference.ssim(py[..., None], ty[..., None], max_val=255.0)
    options = {"max_val": 255.0, "y_channel": True, "crop_border": border}
    x, y = jnp.asarray(pred[None], jnp.float32), jnp.asarray(target[None], jnp.float32)
    for update in (lambda s: s.update(x, y), jax.jit(lambda s: s.update(x, y))):
        np.testing.assert_allclose(
            float(update(PSNR.empty(**options)).compute()), want_psnr, rtol=0, atol=2e-4
        )
        np.testing.assert_allclose(
            float(update(SSIM.empty(**options)).compute()), want_ssim, rtol=0, atol=2e-6
        )


def test_crop_border():
    x = jnp.arange(2 * 9 * 10 * 1, dtype=jnp.float32).reshape(2, 9, 10, 1)
    np.testing.assert_array_equal(_protocols.crop_border(x, 2), np.asarray(x)[:, 2:-2, 2:-2])
    assert _protocols.crop_border(x, 0) is x
    with pytest.raises(ValueError, match="crop_border"):
        _protocols.crop_border(x, 5)
    with pytest.raises(ValueError, match="crop_border"):
        _protocols.crop_border(x, -1)
    with pytest.raises(TypeError, match="crop_border"):
        _protocols.crop_border(x, 1.5)


@pytest.mark.parametrize(
    ("side", "factor"),
    # round(min / 256) half away from zero: 384 -> 1.5 -> 2, 640 -> 2.5 -> 3, 639 -> 2.
    [(100, 1), (128, 1), (383, 1), (384, 2), (512, 2), (639, 2), (640, 3), (896, 4)],
)
def test_matlab_downsample_factor(side, factor):
    assert _protocols.matlab_downsample_factor(side, side + 7) == factor
    assert _protocols.matlab_downsample_factor(side + 7, side) == factor


@pytest.mark.parametrize("shape", [(384, 401), (641, 650), (520, 777)])
def test_matlab_downsample_matches_definition(shape):
    img = data.astronaut()[: shape[0], : shape[1], 1] if shape[0] <= 512 else None
    if img is None or img.shape[1] < shape[1]:
        rng = np.random.default_rng(1)
        img = rng.integers(0, 256, shape).astype(np.float64)
    img = np.asarray(img, np.float64)
    want = _matlab_downsample_ref(img)
    got = np.asarray(_protocols.matlab_downsample(jnp.asarray(img[None, ..., None], jnp.float32)))
    assert got.shape[1:3] == want.shape
    np.testing.assert_allclose(got[0, ..., 0], want, rtol=0, atol=3e-4)


@pytest.mark.parametrize("jitted", [False, True])
def test_ssim_matlab_downsample_matches_ssim_m_definition(jitted):
    # Two real photographs (512x512 -> f = 2; a 390x600 crop -> f = 2 via 1.52), distorted.
    clean = [
        data.camera().astype(np.float64),
        data.coffee()[:390, :, 0].astype(np.float64),
    ]
    rng = np.random.default_rng(2)
    noisy = [np.clip(c + rng.normal(0, 15, c.shape), 0, 255) for c in clean]
    want = [_matlab_ssim_ref(n, c) for n, c in zip(noisy, clean, strict=True)]
    state = SSIM.empty(max_val=255.0, matlab_downsample=True, keep_values=2)
    if jitted:
        for n, c in zip(noisy, clean, strict=True):
            step = jax.jit(lambda s, a, b: s.update(a, b))
            state = step(state, jnp.asarray(n[None, ..., None]), jnp.asarray(c[None, ..., None]))
    else:  # eager: bucketed, both images in one call
        state = state.update([n[..., None] for n in noisy], [c[..., None] for c in clean])
    np.testing.assert_allclose(np.asarray(state.per_image()), want, rtol=0, atol=2e-6)
    # Without downsampling the value differs (the protocol is not a no-op here).
    plain = SSIM.empty(max_val=255.0).update(noisy[0][None, ..., None], clean[0][None, ..., None])
    assert abs(float(plain.compute()) - want[0]) > 1e-3


GOLDHILL = os.environ.get("DSSIM_MAE_JAX_GOLDHILL_DIR")


@pytest.mark.skipif(
    not GOLDHILL, reason="set DSSIM_MAE_JAX_GOLDHILL_DIR to a folder with piq's goldhill GIFs"
)
def test_goldhill_reproduces_matlab_value():
    # piq tests/assets/goldhill.gif and goldhill_jpeg.gif; piq's test_ssim quotes 0.8202 as the
    # output of ssim.m (http://www.cns.nyu.edu/~lcv/ssim/ssim.m) on this pair.
    from PIL import Image

    folder = pathlib.Path(GOLDHILL)
    with Image.open(folder / "goldhill.gif") as a, Image.open(folder / "goldhill_jpeg.gif") as b:
        ref = np.asarray(a, np.float64)[None, ..., None]
        jpeg = np.asarray(b, np.float64)[None, ..., None]
    state = SSIM.empty(max_val=255.0, matlab_downsample=True).update(jpeg, ref)
    assert abs(float(state.compute()) - 0.8202) < 1e-4
