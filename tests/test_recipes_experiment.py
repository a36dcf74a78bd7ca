"""The recipe study (experiments/recipes/): its loss terms against NumPy/SciPy references, the
maths behind the colour cast, the statistics and the choice rule, and a quick end-to-end run."""

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # experiments/ is not installed with the library
    sys.path.insert(0, str(ROOT))

from experiments.recipes import __main__ as cli  # noqa: E402
from experiments.recipes import grid, losses, report  # noqa: E402

C1 = 0.01**2


def _pair(seed=0, shape=(40, 40, 3)):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, shape).astype(np.float32)
    x = np.clip(y + rng.normal(0.02, 0.1, shape), 0, 1).astype(np.float32)
    return x, y


def test_mean_remedy_is_l1_of_channel_means():
    x, y = _pair()
    want = np.mean(np.abs(x.astype(np.float64).mean((0, 1)) - y.astype(np.float64).mean((0, 1))))
    got = float(losses.remedy_term(jnp.asarray(x), jnp.asarray(y), "mean"))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_smooth_mean_remedy_is_charbonnier_of_channel_means():
    x, y = _pair(4)
    d = x.astype(np.float64).mean((0, 1)) - y.astype(np.float64).mean((0, 1))
    eps = 1 / 255
    want = np.mean(np.sqrt(d**2 + eps**2) - eps)
    got = float(losses.remedy_term(jnp.asarray(x), jnp.asarray(y), "smooth_mean"))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_lowpass_remedy_matches_scipy_gaussian_filter():
    x, y = _pair(1)
    s = losses.LOWPASS_SIGMA
    r = round(3 * s)

    def blur(a):  # SciPy's Gaussian, truncated at 3 sigma, then the valid part
        b = scipy.ndimage.gaussian_filter(a.astype(np.float64), (s, s, 0), truncate=3.0)
        return b[r:-r, r:-r]

    want = np.mean(np.abs(blur(x) - blur(y)))
    got = float(losses.remedy_term(jnp.asarray(x), jnp.asarray(y), "lowpass"))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_chroma_remedy_is_mae_of_bt601_cb_cr():
    x, y = _pair(2)

    # ITU-R BT.601 full-range Cb, Cr (JPEG File Interchange Format, Hamilton 1992).
    def cbcr(a):
        r, g, b = a[..., 0], a[..., 1], a[..., 2]
        cb = -0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 0.5 * r - 0.418688 * g - 0.081312 * b
        return np.stack([cb, cr], -1)

    want = np.mean(np.abs(cbcr(x.astype(np.float64)) - cbcr(y.astype(np.float64))))
    got = float(losses.remedy_term(jnp.asarray(x), jnp.asarray(y), "chroma"))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_recipe_loss_weights_the_terms():
    x, y = map(jnp.asarray, _pair(3))
    w = {"structural": 0.3, "mae": 0.7, "remedy": 2.0}
    loss, aux = losses.recipe_loss(x, y, weights=w, remedy="mean")
    want = 0.3 * aux["structural"] + 0.7 * aux["mae"] + 2.0 * aux["remedy"]
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
    np.testing.assert_allclose(
        float(aux["mae"]), np.mean(np.abs(np.asarray(x) - np.asarray(y))), rtol=1e-5
    )


def test_luminance_factor_is_flat_in_a_small_offset():
    rows = losses.luminance_check(deltas=(1, 2, 4))
    for r in rows:  # 1 - SSIM of a pure offset is 1 - l: delta^2 / (2 mu^2 + C1) to first order
        np.testing.assert_allclose(r["one_minus_ssim"], r["predicted"], rtol=0.05)
    # its derivative is proportional to delta (vanishes with it); the mean term's is not
    d = [r["d_dssim_d_delta"] for r in rows]
    np.testing.assert_allclose(d[1] / d[0], 2.0, rtol=0.05)
    np.testing.assert_allclose(d[2] / d[0], 4.0, rtol=0.1)
    assert all(r["d_mean_term_d_delta"] == pytest.approx(1.0) for r in rows)  # one channel


def test_structural_gradient_preserves_channel_means_without_offset():
    drift = losses.structural_gradient_drift()["no offset"]
    assert np.all(np.abs(drift["dssim_sum"]) < 0.01 * np.asarray(drift["dssim_abs_sum"]))


@pytest.mark.parametrize(
    "kw, field",
    [({"alpha": 1.5}, "alpha"), ({"alpha": 0.2, "switch": 1.0}, "switch"),
     ({"alpha": 0.2, "structure": "x"}, "structure"), ({"alpha": 0.2, "remedy": "mean"}, "gamma")],
)  # fmt: skip
def test_recipe_rejects_bad_fields(kw, field):
    with pytest.raises(ValueError, match=field):
        grid.Recipe(**kw)


def test_grid_names_are_unique_and_start_with_mae():
    names = [r.name for r in grid.GRID]
    assert len(set(names)) == len(names) and names[0] == "mae"


def test_pareto_front():
    pts = {"a": (28.0, 0.77), "b": (27.0, 0.78), "c": (26.9, 0.775), "d": (28.1, 0.76)}
    assert report.pareto(pts) == ["b", "a", "d"]


def _record(psnr, ssim, cast, seed):
    rows = [{"psnr": p, "ssim": s, "cast": cast, "psnr_offset_removed": p, "offset": [cast, 0, 0]}
            for p, s in zip(psnr, ssim, strict=True)]  # fmt: skip
    return {"validation": rows, "test": rows, "train_seconds": 1.0, "seed": seed}


def test_choice_rule_on_synthetic_records():
    mae, good, costly = grid.MAE, grid.Recipe(0.2), grid.Recipe(0.84)
    recs = {
        mae.name: {s: _record([28.0 + s, 27.0], [0.70, 0.72], 0.5, s) for s in range(3)},
        # SSIM up on every image and seed, PSNR noisy around 0, no cast: meets the rule
        good.name: {
            s: _record([28.0 + s + (0.1 if s % 2 else -0.1), 27.0], [0.71, 0.73], 0.6, s)
            for s in range(3)
        },
        costly.name: {s: _record([27.0 + s, 26.0], [0.72, 0.74], 5.0, s) for s in range(3)},
    }
    summary = report.summarize(recs, [mae, good, costly], range(3))
    assert report.eligible(summary[good.name]) and not report.eligible(summary[costly.name])
    assert report.choose(summary)[0] == good.name
    # without it: the fallback keeps no-PSNR-cost and no-cast, takes the larger SSIM gain
    del summary[good.name]
    assert report.choose(summary)[0] is None


@pytest.mark.slow
def test_quick_run_writes_report_and_reuses_runs(tmp_path, capsys):
    out, runs = tmp_path / "r.md", tmp_path / "runs"
    argv = ["--quick", "--runs-dir", str(runs), "--out", str(out), "--cells", "2"]
    assert cli.main(argv) == 0
    text = out.read_text()
    assert "## Validation images" in text and "## Test images" in text
    assert "`mae`" in text and (tmp_path / "figures" / "recipes_pareto.png").exists()
    summary = json.loads((tmp_path / "r.json").read_text())
    assert sorted(summary["runs"]) == sorted(r.name for r in grid.GRID[:2])
    files = sorted(runs.rglob("seed*.json"))
    assert len(files) == 4
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert cli.main(argv) == 0  # the second invocation trains nothing
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    # a fresh clone has no runs folder: the committed summary brings the runs back, untrained
    import shutil

    shutil.rmtree(runs)
    assert cli.main(argv) == 0
    restored = sorted(runs.rglob("seed*.json"))
    assert [f.relative_to(runs) for f in restored] == [f.relative_to(runs) for f in files]
    assert all("train_loss" not in json.loads(f.read_text()) for f in restored)
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == summary["runs"]
