"""Dense supervision in the Zhao et al. reproduction (experiments/zhao.py ``--crop``): on a
crop larger than 31x31 each loss is the mean of the released per-patch loss over every 31x31
sub-patch position."""

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import zhao  # noqa: E402  (experiments/zhao.py, the command-line entry)
from zhao_study import losses, report  # noqa: E402

needs_multi_sigma = pytest.mark.skipif(
    not losses.has_multi_sigma(), reason="needs dssim_mae_jax.multi_sigma_ssim"
)


def _crops(side, seed=0, b=2):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, (b, side, side, 3)).astype(np.float32)
    x = np.clip(y + rng.normal(0, 0.1, y.shape), 0, 1).astype(np.float32)
    return x, y


def _mean_over_subpatches(per_patch, x, y):
    """The mean of the 31x31 loss `per_patch` over every sub-patch position of the crops."""
    p = losses.PATCH
    n = x.shape[1] - p + 1
    values = [
        float(
            per_patch(
                jnp.asarray(x[:, r : r + p, c : c + p]), jnp.asarray(y[:, r : r + p, c : c + p])
            )
        )
        for r in range(n)
        for c in range(n)
    ]
    return np.mean(values)


@needs_multi_sigma
@pytest.mark.parametrize("name", ["mix", "msssim"])
def test_dense_loss_is_the_mean_of_the_per_patch_loss_over_subpatches(name):
    x, y = _crops(35)  # 5 x 5 = 25 sub-patch positions
    expected = _mean_over_subpatches(losses.make(name), x, y)
    got = float(losses.make(name, crop=35)(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # Not the centre patch alone: the dense value differs from the per-patch one there.
    centre = float(losses.make(name)(jnp.asarray(x[:, 2:33, 2:33]), jnp.asarray(y[:, 2:33, 2:33])))
    assert abs(got - centre) > 1e-4


def test_dense_l1_l2_are_pixel_means_and_other_losses_are_refused():
    x, y = _crops(35, seed=1)
    got = float(losses.make("l1", crop=35)(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(got, np.mean(np.abs(x - y)), rtol=1e-5)
    got = float(losses.make("l2", crop=35)(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(got, np.mean((x - y) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match=r"ssim.*crops above 31"):
        losses.make("ssim", crop=35)


def test_crop_option_errors(capsys):
    with pytest.raises(SystemExit):
        zhao.parse_args(["--crop", "21"])
    with pytest.raises(SystemExit):
        zhao.parse_args(["--crop", "61", "--losses", "l1", "ssim"])
    assert "--crop" in capsys.readouterr().err
    assert zhao.parse_args([]).crop == losses.PATCH


@needs_multi_sigma
@pytest.mark.slow
def test_quick_dense_run_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default runs dir is relative: runs/zhao_quick_crop35
    args = ["--quick", "--task", "denoise", "--seeds", "0", "--crop", "35", "--steps", "16"]
    zhao.main([*args, "--losses", "l1", "mix", "--out", str(tmp_path / "r.md")])
    assert capsys.readouterr().err.count("training denoise/") == 2
    results = report.load_summary(str(tmp_path / "r.json"))
    assert results[("denoise", "mix", 0)]["config"]["patch"] == 35
    assert (tmp_path / "runs" / "zhao_quick_crop35" / "denoise" / "mix_p35_s0_16.json").exists()


def test_dense_report_of_identical_runs_shows_no_change(tmp_path):
    # The 31x31 study's own l1/Mix runs given as the "dense" runs: the gap does not change.
    import json

    import zhao_dense

    study = Path(__file__).resolve().parents[1] / "docs" / "results_zhao.json"
    runs = report.load_summary(str(study))
    from zhao_study import run

    (tmp_path / "denoise").mkdir()
    for loss in ("l1", "mix"):
        for seed in (0, 1, 2):
            res = runs[("denoise", loss, seed)]
            cfg = run.RunConfig(**{**res["config"], "kernels": tuple(res["config"]["kernels"])})
            Path(run.result_path(str(tmp_path), cfg)).write_text(json.dumps(res))
    out = tmp_path / "dense.md"
    zhao_dense.main(["--runs-dir", str(tmp_path), "--study", str(study), "--out", str(out)])
    text = out.read_text()
    assert "change of the gap | +0.00 [+0.00, +0.00] (0/15)" in text
    assert "Not supported" in text and (tmp_path / "dense.json").exists()
