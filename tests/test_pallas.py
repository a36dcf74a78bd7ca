"""The fused Pallas SSIM (dssim_mae_jax/_pallas.py): interpret mode on a CPU, Triton on a GPU.

Maps, per-image means and gradients w.r.t. both images are compared with the XLA path (the
public ``ssim(..., return_map=True)`` and ``jax.grad`` of it) to 1e-6 in float32, on crops of
scikit-image's photographs and on adversarial inputs, and with the float64 reference of
tests/reference.py. Small images and small tiles (8 rows x 32 merged columns), so that several
tiles and their halos are exercised while interpret mode stays quick.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from skimage import data

import dssim_mae_jax as dmj
from dssim_mae_jax import _filters, _pallas

TOL = 1e-6
TILES = {"tile_rows": 8, "tile_cols": 32}


def _taps(window="gaussian", size=11, sigma=1.5):
    return _filters.window_taps(window, size, sigma, np.float32)


def _pallas_ssim(x, y, mask=None, *, max_val=1.0, window="gaussian", size=11, padding="valid",
                 k1=0.01, k2=0.03, **tiles):  # fmt: skip
    """The fused kernels on inputs prepared as the XLA path prepares them."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    if mask is not None:
        mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), x.shape)
        keep = mask > 0
        x, y = jnp.where(keep, x, 0.0), jnp.where(keep, y, 0.0)
    inv = 1.0 / max_val
    return _pallas.ssim_map(
        x * inv,
        x * inv - (x - y) * inv,
        mask,
        taps=_taps(window, size),
        padding=padding,
        c1=k1**2,
        c2=k2**2,
        interpret=None,  # the interpreter on CPU, Triton on a GPU
        **(tiles or TILES),
    )


def _xla_ssim(x, y, mask=None, *, window="gaussian", size=11, fn=dmj.ssim, **options):
    return fn(x, y, window=window, filter_size=size, mask=mask, **options)


def _assert_close(got, want, want64, scale=1.0):
    """`got` equals the float32 XLA result `want` to 1e-6 (relative to `scale`), or is about as
    accurate: its largest error against the float64 XLA result `want64()` is at most twice
    the float32 XLA result's own, plus 1e-6.

    The kernels filter rows before columns, XLA columns before rows (and sum the adjoint's
    terms in another order), so where SSIM amplifies rounding (windows of almost no variance,
    tiny C1/C2, short windows, masks) the two float32 results can differ by more than 1e-6
    while being equally accurate. `want64` is a callable, evaluated only when some value is
    not within 1e-6 (float64 compilation is slow).
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    if np.all(np.isnan(want) | (np.abs(got - want) <= TOL * scale)):
        return
    want64 = np.asarray(want64(), np.float64)
    ours, theirs = np.nanmax(np.abs(got - want64)), np.nanmax(np.abs(want - want64))
    assert ours <= 2.0 * theirs + TOL * scale, (
        f"max |pallas - float64| {ours:.3g}, max |xla - float64| {theirs:.3g}, "
        f"max |pallas - xla| {np.nanmax(np.abs(got - want)):.3g} (scale {scale:.3g})"
    )


def _xla_results(x, y, mask, w, **options):
    """(map, mean, gradients) of the XLA path: the public ssim and jax.grad of it."""

    def weighted_map(a, b):
        return jnp.sum(w * _xla_ssim(a, b, mask, return_map=True, max_val=1.0, **options))

    s_map = _xla_ssim(x, y, mask, return_map=True, max_val=1.0, **options)
    mean = _xla_ssim(x, y, mask, max_val=1.0, **options)
    grads = jax.grad(weighted_map, argnums=(0, 1))(x, y) if w is not None else (None, None)
    return s_map, mean, *grads


def _check_against_xla(x, y, mask=None, seed=0, grad=True, **options):
    """Map, mean and both gradients of a random weighting of the map, Pallas vs XLA."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    got_map, got_mean, got_deficit = jax.jit(lambda a, b: _pallas_ssim(a, b, mask, **options))(x, y)
    w = np.random.default_rng(seed).random(got_map.shape) if grad else None
    w32 = None if w is None else jnp.asarray(w, jnp.float32)
    want = _xla_results(x, y, mask, w32, **options)
    float64 = []

    def want64(i):
        def get():
            if not float64:
                with jax.enable_x64(True):
                    m64 = None if mask is None else np.asarray(mask, np.float64)
                    w64 = None if w is None else jnp.asarray(w)
                    results = _xla_results(jnp.asarray(x64), jnp.asarray(y64), m64, w64, **options)
                    float64.extend(np.asarray(r) if r is not None else None for r in results)
            return float64[i]

        return get

    assert got_map.shape == want[0].shape and got_mean.shape == want[1].shape
    _assert_close(got_map, want[0], want64(0))
    _assert_close(got_mean, want[1], want64(1))
    # The deficit (1 - mean, for DSSIM) against the public dssim = (1 - SSIM) / 2.
    want_dssim = _xla_ssim(x, y, mask, max_val=1.0, fn=dmj.dssim, **options)
    np.testing.assert_allclose(got_deficit / 2.0, want_dssim, rtol=1e-5, atol=TOL)
    if grad:

        def loss(a, b):
            return jnp.sum(w32 * _pallas_ssim(a, b, mask, **options)[0])

        got = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, y)
        for i, g in enumerate(got):
            scale = max(1.0, float(jnp.max(jnp.abs(want[2 + i]))))
            _assert_close(g, want[2 + i], want64(2 + i), scale=scale)
    return got_map


def _noisy(image, seed=0, sigma=0.08):
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0.0, 1.0)


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()[120:156, 180:214].astype(np.float64) / 255.0  # 36x34x3


@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_photograph_matches_xla_every_padding(astronaut, padding):
    _check_against_xla(_noisy(astronaut), astronaut, padding=padding)


def test_grayscale_photograph_batch_with_leading_axes():
    camera = data.camera()[200:230, 210:243].astype(np.float64)[:, :, None] / 255.0
    x = np.stack([np.stack([_noisy(camera, s), 0.5 * camera + 0.25]) for s in (1, 2)])
    y = np.broadcast_to(camera, x.shape)
    got = _check_against_xla(x, y, padding="same")
    assert got.shape == (2, 2, 30, 33, 1)


def test_default_tiles_and_float64_reference(astronaut):
    x = _noisy(astronaut, 3)
    got_map, got_mean, _ = _pallas_ssim(x, astronaut, tile_rows=32, tile_cols=128)
    want_map, _, _ = reference.ssim_maps(x, astronaut)
    np.testing.assert_allclose(got_map, want_map, rtol=0, atol=2e-6)
    np.testing.assert_allclose(got_mean, reference.ssim(x, astronaut), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "window,size,padding",
    [("uniform", 3, "reflect"), ((1.0, 2.0, 4.0, 1.0), 4, "valid"), ("gaussian", 7, "same")],
)
def test_other_windows(astronaut, window, size, padding):
    # A 3x3 box with reflect padding is monodepth2's; the asymmetric taps check that the
    # backward pass uses the reversed window.
    _check_against_xla(_noisy(astronaut, 4), astronaut, window=window, size=size, padding=padding)


def test_identical_images_give_exactly_one_and_zero_gradient(astronaut):
    x = jnp.asarray(astronaut, jnp.float32)
    for padding in ("valid", "same"):
        s_map, mean, deficit = _pallas_ssim(x, x, padding=padding)
        assert np.all(np.asarray(s_map) == 1.0) and float(mean) == 1.0 and float(deficit) == 0.0
        gx, gy = jax.grad(lambda a, b, p=padding: _pallas_ssim(a, b, padding=p)[1], (0, 1))(x, x)
        assert np.all(np.asarray(gx) == 0.0) and np.all(np.asarray(gy) == 0.0)


def test_flat_images_match_the_closed_form():
    # Constant a vs b: variances vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1) (Wang et al. 2004).
    for a, b, want in ((1.0, 0.0, 9.999000099990e-05), (0.25, 0.75, 0.6000639897616381)):
        x, y = np.full((1, 20, 21, 2), a), np.full((1, 20, 21, 2), b)
        got = _check_against_xla(x, y, padding="valid")
        # Absolute: the per-image centring constants round (1 ulp of the means), which moves
        # mu_y by ~6e-8 and a tiny SSIM by as much (the XLA path alike).
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_zero_images_and_zero_against_photo(astronaut):
    zeros = np.zeros_like(astronaut)
    got = _check_against_xla(zeros, zeros, padding="same")
    assert np.all(np.asarray(got) == 1.0)
    _check_against_xla(zeros, astronaut, padding="same")


@pytest.mark.slow
def test_anticorrelated_images_give_about_minus_one():
    # A checkerboard against its complement: equal local means, covariance -variance, so with
    # tiny C1, C2 SSIM is about -1 (Wang et al. 2004's formula).
    rows, cols = np.indices((24, 26))
    board = (0.25 + 0.5 * ((rows + cols) % 2)).reshape(1, 24, 26, 1)
    got = _check_against_xla(board, 1.0 - board, k1=1e-5, k2=1e-5)
    assert np.all(np.asarray(got) < -0.99)
    ramp = np.linspace(0.0, 1.0, 24 * 26).reshape(1, 24, 26, 1)
    _check_against_xla(ramp, 1.0 - ramp, padding="reflect")


def test_nan_stays_nan(astronaut):
    x = np.array(astronaut)
    x[10, 12, 1] = np.nan
    s_map, mean, _ = _pallas_ssim(x, astronaut)
    # The NaN reaches its channel's centring constant: that channel's map is NaN, the others
    # equal the XLA path's maps of the same channels; the mean is NaN (the public functions
    # then make the whole image NaN, for the XLA path and the kernels alike).
    s_map = np.asarray(s_map)
    assert np.all(np.isnan(s_map[..., 1])) and np.isnan(float(mean))
    for c in (0, 2):
        want = _xla_ssim(x[..., c : c + 1], astronaut[..., c : c + 1], return_map=True, max_val=1.0)
        np.testing.assert_allclose(s_map[..., c], np.asarray(want)[..., 0], rtol=0, atol=TOL)
    grads = jax.grad(lambda a: _pallas_ssim(a, astronaut)[1])(jnp.asarray(x, jnp.float32))
    assert np.all(np.isnan(np.asarray(grads)[..., 1]))


@pytest.mark.slow
@pytest.mark.parametrize("padding", ["valid", "same", "reflect"])
def test_random_mask_every_padding(astronaut, padding):
    mask = (np.random.default_rng(5).random((*astronaut.shape[:-1], 1)) > 0.3).astype(np.float32)
    x = _noisy(astronaut, 6)
    x[mask[..., 0] == 0] = np.nan  # masked-out pixels reach neither value nor gradient
    _check_against_xla(x, astronaut, mask=mask, padding=padding)


def test_empty_and_full_masks(astronaut):
    x = _noisy(astronaut, 7)
    empty = np.zeros((*astronaut.shape[:-1], 1), np.float32)
    _, mean, _ = _pallas_ssim(x, astronaut, empty, padding="valid")
    assert float(mean) == 1.0  # nothing observed: SSIM 1, as the XLA path gives
    _check_against_xla(x, astronaut, mask=empty, grad=False)
    full = np.ones_like(empty)
    with_full, _, _ = _pallas_ssim(x, astronaut, full, padding="same")
    without, _, _ = _pallas_ssim(x, astronaut, padding="same")
    np.testing.assert_allclose(with_full, without, rtol=0, atol=TOL)


@pytest.mark.slow
def test_per_channel_mask(astronaut):
    mask = np.ones(astronaut.shape, np.float32)
    mask[:, :, 1] = 0.0
    mask[5:15, 3:9, 2] = 0.0
    _check_against_xla(_noisy(astronaut, 8), astronaut, mask=mask, padding="reflect")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"spatial_dims": 3}, ValueError, "spatial_dims=2"),
        ({"padding": "circular"}, ValueError, "`padding`"),
        ({"tile_cols": 48}, ValueError, "`tile_cols` must be a power of two"),
    ],
)
def test_bad_options_raise(kwargs, error, match):
    x = jnp.zeros((16, 16, 1))
    options = {"taps": _taps(), "padding": "valid", "c1": 1e-4, "c2": 9e-4, "interpret": True}
    with pytest.raises(error, match=match):
        _pallas.ssim_map(x, x, None, **{**options, **kwargs})


def test_bad_inputs_raise():
    options = {"taps": _taps(), "padding": "valid", "c1": 1e-4, "c2": 9e-4, "interpret": True}
    with pytest.raises(TypeError, match="float32"):
        _pallas.ssim_map(jnp.zeros((16, 16, 1), jnp.int32), jnp.zeros((16, 16, 1)), None, **options)
    with pytest.raises(ValueError, match="at least the window"):
        _pallas.ssim_map(jnp.zeros((8, 16, 1)), jnp.zeros((8, 16, 1)), None, **options)
    with pytest.raises(ValueError, match="shape"):
        _pallas.ssim_map(jnp.zeros((16, 16, 1)), jnp.zeros((16, 16, 2)), None, **options)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda c: _pallas.ssim_map(
            jnp.zeros((16, 16, 1)), jnp.zeros((16, 16, 1)), None, **{**options, "c1": c}
        ))(1e-4)  # fmt: skip


# ------------------------------------------------------- the public option implementation=
# Two small images (one with a NaN pixel in the batch below) keep interpret mode quick.


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(11)
    y = rng.random((2, 24, 24, 3))
    return jnp.asarray(_noisy(y, 12), jnp.float32), jnp.asarray(y, jnp.float32)


def _float64(fn):
    """`fn()` with x64 enabled, as float64 NumPy (the reference of `_assert_close`)."""

    def get():
        with jax.enable_x64(True):
            return np.asarray(fn(), np.float64)

    return get


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_public_ssim_and_dssim_pallas_equal_xla(pair, padding):
    # ssim's value, dssim's map and dssim's gradient: every output the option routes
    # (value from the kernels' mean, map as (1 - map) / 2, deficit / 2 through the VJP).
    x, y = pair
    x = x.at[1, 5, 7, 0].set(jnp.nan)  # the second image is flagged: NaN, as the XLA path
    mask = jnp.asarray(np.random.default_rng(13).random((2, 24, 24, 1)) > 0.2, jnp.float32)
    options = dict(max_val=1.0, padding=padding, mask=mask)
    x64, y64, m64 = (np.asarray(a, np.float64) for a in (x, y, mask))
    options64 = dict(options, mask=m64)

    for fn, return_map in ((dmj.ssim, False), (dmj.dssim, True)):
        got = fn(x, y, implementation="pallas", return_map=return_map, **options)
        want = fn(x, y, implementation="xla", return_map=return_map, **options)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.all(np.isnan(np.asarray(got)[1])) and not np.any(np.isnan(np.asarray(got)[0]))
        _assert_close(
            got, want, _float64(lambda f=fn, r=return_map: f(x64, y64, return_map=r, **options64))
        )

    def loss(implementation):
        # The finite image only: the flagged one's gradient is NaN on both paths.
        return lambda a: dmj.dssim(a, y, implementation=implementation, **options)[0]

    got, want = jax.grad(loss("pallas"))(x), jax.grad(loss("xla"))(x)
    scale = max(1.0, float(jnp.max(jnp.abs(want[0]))))
    ref = _float64(lambda: jax.grad(lambda a: dmj.dssim(a, y64, **options64)[0])(x64)[0])
    _assert_close(got[0], want[0], ref, scale=scale)


def test_losses_pallas_equal_xla(pair):
    x, y = pair
    options = dict(max_val=1.0, alpha=0.8, dssim_form="full", reduction="mean")

    def loss(implementation):
        return lambda a: dmj.dssim_mae_loss(a, y, implementation=implementation, **options)

    got, got_grad = jax.value_and_grad(loss("pallas"))(x)
    want, want_grad = jax.value_and_grad(loss("xla"))(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    scale = max(1.0, float(jnp.max(jnp.abs(want_grad))))
    np.testing.assert_allclose(got_grad, want_grad, rtol=0, atol=TOL * scale)
    # make_loss: per-pixel map (1 - S map and |x - y| combined on the map's grid) and aux.
    cfg = dmj.LossConfig(per_pixel=True, return_map=True, padding="same", implementation="pallas")
    (got_map, got_aux), (want_map, want_aux) = (
        dmj.make_loss(cfg, implementation=i)(x, y) for i in ("pallas", "xla")
    )
    assert dmj.make_loss(cfg).config.implementation == "pallas"
    np.testing.assert_allclose(got_map, want_map, rtol=0, atol=TOL)
    assert sorted(got_aux) == sorted(want_aux)
    for key in want_aux:
        np.testing.assert_allclose(got_aux[key], want_aux[key], rtol=0, atol=TOL, err_msg=key)


def test_default_implementation_is_xla(pair):
    x, y = pair
    want = dmj.ssim(x, y, max_val=1.0, implementation="xla")
    np.testing.assert_array_equal(dmj.ssim(x, y, max_val=1.0), want)
    np.testing.assert_array_equal(dmj.ssim(x, y, max_val=1.0, implementation=None), want)
    assert dmj.LossConfig().implementation is None


def test_bad_implementation_raises(pair):
    x, y = pair
    big = jnp.zeros((1, 161, 161, 1))
    calls = [
        lambda i: dmj.ssim(x, y, max_val=1.0, implementation=i),
        lambda i: dmj.dssim(x, y, max_val=1.0, implementation=i),
        lambda i: dmj.ms_ssim(big, big, max_val=1.0, implementation=i),
        lambda i: dmj.multi_sigma_ssim(x, y, max_val=1.0, filter_size=11, implementation=i),
        lambda i: dmj.dssim_mae_loss(x, y, max_val=1.0, implementation=i),
        lambda i: dmj.LossConfig(implementation=i),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"`implementation` must be one of .*'cudnn'"):
            call("cudnn")


def test_ms_ssim_refuses_pallas(pair):
    x, y = pair
    big = jnp.zeros((1, 161, 161, 1))
    message = r"`implementation='pallas'` is not supported by MS-SSIM .*contrast-structure"
    with pytest.raises(ValueError, match=message):
        dmj.ms_ssim(big, big, max_val=1.0, implementation="pallas")
    with pytest.raises(ValueError, match=message):
        dmj.multi_sigma_ssim(x, y, max_val=1.0, filter_size=11, implementation="pallas")
    for structure in ("ms_ssim", "multi_sigma"):
        with pytest.raises(ValueError, match=message):
            dmj.LossConfig(structure=structure, implementation="pallas")
    # The XLA spelling is accepted.
    assert float(dmj.ms_ssim(big, big, max_val=1.0, implementation="xla")[0]) == 1.0


def test_pallas_limits_are_clear_errors(pair):
    x, y = pair
    with pytest.raises(ValueError, match="spatial_dims=2"):
        volume = jnp.zeros((1, 8, 8, 8, 1))
        dmj.ssim(
            volume, volume, max_val=1.0, spatial_dims=3, implementation="pallas", filter_size=3
        )
    with pytest.raises(ValueError, match="spatial_dims=2"):
        dmj.LossConfig(spatial_dims=3, implementation="pallas")
    with jax.enable_x64(True):
        x64 = np.asarray(x, np.float64)
        with pytest.raises(TypeError, match="float32"):
            dmj.ssim(x64, x64, max_val=1.0, implementation="pallas")
    # Reverse mode only (a custom VJP): forward mode is refused by JAX, never a wrong number.
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda a: dmj.ssim(a, y, max_val=1.0, implementation="pallas"), (x,), (x,))


def test_import_does_not_load_pallas():
    import subprocess
    import sys

    code = (
        "import sys, dssim_mae_jax; "
        "loaded = [m for m in sys.modules if 'pallas' in m]; assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
