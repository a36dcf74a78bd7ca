"""The Zhao et al. reproduction (experiments/zhao.py): its losses against float64 ports of the
released layers' formulas, its data, its statistics, and a quick end-to-end run."""

import dataclasses
import json
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import zhao  # noqa: E402  (experiments/zhao.py, the command-line entry)
from zhao_study import data, losses, paper, report, stats  # noqa: E402

C1, C2 = 0.01**2, 0.03**2


def _window(size, sigma):
    k = np.arange(size) - (size - 1) / 2
    g = np.exp(-(k**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def _stats(x, y, w):
    """Whole-patch Gaussian-weighted moments per image and channel, float64 ([B, C])."""
    s = lambda v: np.einsum("hw,bhwc->bc", w, v)
    mx, my = s(x), s(y)
    vx, vy, cxy = s(x * x) - mx**2, s(y * y) - my**2, s(x * y) - mx * my
    lum = (2 * mx * my + C1) / (mx**2 + my**2 + C1)
    cs = (2 * cxy + C2) / (vx + vy + C2)
    return lum, cs


def _patches(seed=0, b=3):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, (b, 31, 31, 3))
    x = np.clip(y + rng.normal(0, 0.1, y.shape), 0, 1)
    return x, y


def test_ssim_loss_matches_released_layer_formula():
    # NVlabs/PL4NN SSIM layer: one sigma-5 Gaussian over the whole odd patch, 1 - mean(l*cs).
    x, y = _patches()
    lum, cs = _stats(x, y, _window(31, 5.0))
    expected = 1 - np.mean(lum * cs)
    got = losses.make("ssim")(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(float(got), expected, rtol=2e-4)


@pytest.mark.skipif(not losses.has_multi_sigma(), reason="needs dssim_mae_jax.multi_sigma_ssim")
def test_mix_and_remedy_match_released_formula():
    # MSSSIML1: alpha (1 - l_8 prod_s cs_s) + (1 - alpha) sum(G_8 |x - y|), channel/batch mean.
    x, y = _patches(1)
    sigmas, a = (0.5, 1, 2, 4, 8), 0.84
    lum8, _ = _stats(x, y, _window(31, 8))
    prod_cs = np.prod([_stats(x, y, _window(31, s))[1] for s in sigmas], axis=0)
    gl1 = np.einsum("hw,bhwc->bc", _window(31, 8), np.abs(x - y))
    expected = a * (1 - np.mean(lum8 * prod_cs)) + (1 - a) * np.mean(gl1)
    xf, yf = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    np.testing.assert_allclose(float(losses.make("mix")(xf, yf)), expected, rtol=2e-4)
    # The larger-l1 remedy: the same terms with alpha = 0.5.
    expected_a50 = 0.5 * (1 - np.mean(lum8 * prod_cs)) + 0.5 * np.mean(gl1)
    np.testing.assert_allclose(float(losses.make("mix_a50")(xf, yf)), expected_a50, rtol=2e-4)
    # The remedy: the same, with the structural term on BT.601 luma.
    luma = np.asarray([0.299, 0.587, 0.114])
    xl, yl = (x @ luma)[..., None], (y @ luma)[..., None]
    lum8, _ = _stats(xl, yl, _window(31, 8))
    prod_cs = np.prod([_stats(xl, yl, _window(31, s))[1] for s in sigmas], axis=0)
    expected = a * (1 - np.mean(lum8 * prod_cs)) + (1 - a) * np.mean(gl1)
    np.testing.assert_allclose(float(losses.make("mix_luma")(xf, yf)), expected, rtol=2e-4)


def test_mix_matches_the_library_preset():
    # The same released MSSSIML1 (alpha 0.84) as the library's `zhao-mix` preset at 31 taps.
    import dssim_mae_jax as dmj

    try:
        preset = dmj.make_loss("zhao-mix", filter_size=31, reduction="mean")
        x, y = (jnp.asarray(v, jnp.float32) for v in _patches(3))
        expected = float(preset(x, y)[0])
    except ValueError as e:  # an older preset (pyramid MS-SSIM) rejects 31-pixel patches
        pytest.skip(f"zhao-mix preset without full-resolution MS-SSIM: {e}")
    np.testing.assert_allclose(float(losses.make("mix")(x, y)), expected, rtol=1e-5)


def test_l1_l2_and_unknown_loss():
    x, y = _patches(2)
    xf, yf = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    np.testing.assert_allclose(float(losses.make("l1")(xf, yf)), np.abs(x - y).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(losses.make("l2")(xf, yf)), ((x - y) ** 2).mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="loss"):
        losses.make("l3")


def test_patches_are_a_pure_function_of_seed_and_step():
    img = np.random.default_rng(0).uniform(0, 1, (80, 90, 3)).astype(np.float32)
    a = data.PatchSampler([img], "denoise", patch=31, batch=4, seed=3)
    b = data.PatchSampler([img], "denoise", patch=31, batch=4, seed=3)
    for step in (0, 7):
        for u, v in zip(a(step), b(step), strict=True):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a(0)[0], a(1)[0])
    assert not np.array_equal(
        a(0)[0], data.PatchSampler([img], "denoise", patch=31, batch=4, seed=4)(0)[0]
    )


def test_degradations():
    img = np.random.default_rng(1).uniform(0, 1, (64, 64, 3)).astype(np.float32)
    rng = np.random.default_rng(0)
    mask = data.bayer_mask(4, 4)
    np.testing.assert_array_equal(mask.sum(-1), np.ones((4, 4)))
    assert mask[..., 1].sum() == 8  # green twice as often as red or blue
    for task in ("sr", "jpeg"):
        out = data.degrade(img, task, rng)
        assert out.shape == img.shape and 0 < np.abs(out - img).mean() < 0.5
    mosaic = data.degrade(img, "demosaic", rng)
    assert np.count_nonzero(mosaic) <= img.size // 3
    with pytest.raises(ValueError, match="task"):
        data.degrade(img, "deblur", rng)


def test_data_dir_split_and_errors(tmp_path):
    from PIL import Image

    for i in range(5):
        arr = np.random.default_rng(i).integers(0, 256, (70, 80, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"im{i}.png")
    split = data.load_split(str(tmp_path))
    assert split.eval_names == ("im4.png",) and len(split.train) == 4
    assert data.load_split(str(tmp_path), num_eval=2).eval_names == ("im3.png", "im4.png")
    with pytest.raises(ValueError, match="--data-dir"):
        data.load_split(str(tmp_path / "missing"))


def test_bootstrap_interval_and_late_gain():
    constant = np.full((3, 4), 0.25)
    assert stats.bootstrap_interval(constant) == pytest.approx((0.25, 0.25))
    d = np.random.default_rng(0).normal(1.0, 0.5, (3, 5))
    lo, hi = stats.bootstrap_interval(d)
    assert lo < d.mean() < hi
    p = stats.paired(d, np.zeros_like(d))
    assert p["n"] == 15 and p["positive"] == int((d > 0).sum())
    curve = [{"step": s, "psnr": v} for s, v in [(0, 10), (50, 20), (80, 29), (100, 29.5)]]
    assert stats.late_gain(curve) == pytest.approx(0.5)


def _fake_training(monkeypatch, gain_by_steps: dict):
    """Replaces training: a run of `steps` ends at validation PSNR 25 + gain_by_steps[steps]
    (+ 0.01 * seed)."""
    from zhao_study import run

    calls = []

    def fake(cfg, split):
        calls.append((cfg.seed, cfg.steps))
        final = 25.0 + gain_by_steps[cfg.steps] + 0.01 * cfg.seed
        curve = [
            {"step": 0, "train_loss": None, "psnr": 20.0},
            {"step": cfg.steps * 4 // 5, "train_loss": 0.1, "psnr": final},
            {"step": cfg.steps, "train_loss": 0.1, "psnr": final},
        ]
        im = {"psnr": final, "ssim": 0.8, "ms_ssim": 0.9, "l1x1000": 30.0}
        return {
            "config": dataclasses.asdict(cfg),
            "curve": curve,
            "per_image": [im],
            "train_seconds": 1.0,
            "total_seconds": 2.0,
        }

    monkeypatch.setattr(run, "train_and_evaluate", fake)
    return run, calls


def test_cell_is_trained_with_doubled_steps_until_doubling_changes_little(tmp_path, monkeypatch):
    # 50 -> 100 steps: +0.5 dB (not converged); 100 -> 200: +0.05 dB (converged at 200).
    run, calls = _fake_training(monkeypatch, {50: 0.0, 100: 0.5, 200: 0.55, 400: 0.6})
    cfgs = [
        run.RunConfig(task="denoise", loss="mix", seed=s, steps=50, eval_every=5) for s in (0, 1)
    ]
    assert [(b.steps, b.eval_every) for b in run.budgets(cfgs[0], 2)] == [
        (50, 5),
        (100, 10),
        (200, 20),
    ]
    quiet = lambda m: None
    res = run.run_cell(cfgs, None, str(tmp_path), max_doublings=3, log=quiet)
    assert sorted(calls) == [(s, n) for s in (0, 1) for n in (50, 100, 200)]  # never 400
    assert set(res) == {0, 1} and all(r["config"]["steps"] == 200 for r in res.values())
    assert res[1]["converged"] is True and res[1]["all_budgets_seconds"] == 6.0
    assert [b["steps"] for b in res[0]["budgets"]] == [50, 100, 200]
    assert res[0]["budgets"][1]["val_psnr"] == pytest.approx(25.505)  # mean over the seeds
    # Every budget is a file of its own; a second call trains nothing and returns the same.
    names = sorted(os.listdir(tmp_path / "denoise"))
    assert names == sorted(f"mix_s{s}_{n}.json" for s in (0, 1) for n in (50, 100, 200))
    again = run.run_cell(cfgs, None, str(tmp_path), max_doublings=3, log=quiet)
    assert len(calls) == 6 and again[1] == json.loads(json.dumps(res[1]))
    # Without training, only finished budgets count: nothing at all in an empty folder.
    assert run.run_cell(cfgs, None, str(tmp_path / "none"), train=False, log=quiet) == {}
    # A cell that never converges is reported at its last budget, marked as such.
    run, calls = _fake_training(monkeypatch, {50: 0.0, 100: 1.0})
    res = run.run_cell(cfgs, None, str(tmp_path / "b"), max_doublings=1, log=quiet)
    assert res[0]["config"]["steps"] == 100 and res[0]["converged"] is False
    # One budget only (quick mode): not checked.
    res = run.run_cell(cfgs, None, str(tmp_path / "c"), max_doublings=0, log=quiet)
    assert res[0]["converged"] is None and res[0]["config"]["steps"] == 50


def test_diverged_cell_is_not_trained_longer(tmp_path, monkeypatch):
    run, calls = _fake_training(monkeypatch, {50: float("nan"), 100: 0.0})
    cfgs = [run.RunConfig(task="sr", loss="l2", seed=0, steps=50, eval_every=5)]
    res = run.run_cell(cfgs, None, str(tmp_path), max_doublings=2, log=lambda m: None)
    assert calls == [(0, 50)] and res[0]["converged"] is False


def test_compare_reports_the_largest_per_image_difference():
    im = lambda p: {"psnr": p, "ssim": 0.5, "ms_ssim": float("nan"), "l1x1000": 10.0}
    run = lambda *ps: {"config": {"steps": 1500}, "per_image": [im(p) for p in ps]}
    ours = {("sr", "l1", 0): run(30.0, 31.0), ("sr", "mix", 0): run(1.0, 2.0)}
    lines = zhao.compare(ours, {("sr", "l1", 0): run(30.0, 31.25)}, source="ref.json")
    assert "sr/l1/0: steps 1500 (there 1500); psnr 0.25, ssim 0, ms_ssim 0" in lines[1]
    assert lines[2] == "  sr/mix/0: not in ref.json"


@pytest.mark.parametrize("task", list(paper.TABLE_I))
def test_paper_table_transcription_is_self_consistent(task):
    """Checks on the numbers typed from Zhao et al. 2017, Table I, that a misread digit would
    likely break: the mean of per-image PSNR is at least the PSNR of the mean ℓ2 (Jensen), the
    mean ℓ1 squared is at most the mean ℓ2, and Mix is best in every row (bold there)."""
    _, table = paper.TABLE_I[task]
    for loss, row in table.items():
        v = dict(zip(paper.METRICS, row, strict=True))
        assert v["psnr"] >= -10 * np.log10(v["l2x1000"] / 1000), (task, loss)
        assert (v["l1x1000"] / 1000) ** 2 <= v["l2x1000"] / 1000, (task, loss)
        assert 0 < v["ssim"] < 1 and 0 < v["ms_ssim"] < 1
    nets = [loss for loss in table if loss != "input"]
    for metric in paper.METRICS:
        values = {loss: paper.value(task, loss, metric) for loss in nets}
        pick = min if metric.startswith(("l1", "l2")) else max
        assert pick(values, key=values.get) == "mix", (task, metric)
    assert paper.value("denoise", "l1", "psnr") is None
    assert paper.value(task, "phased", "psnr") is None


def test_paper_tables_set_the_published_differences_beside_ours():
    im = lambda p, s: {"psnr": p, "ssim": s, "ms_ssim": 0.9, "l1x1000": 10.0}
    run = lambda p, s: {"per_image": [im(p, s), im(p + 1, s)]}
    results = {("sr", "l1", k): run(30.0, 0.90) for k in (0, 1)}
    results |= {("sr", "mix", k): run(29.5, 0.92) for k in (0, 1)}
    lines = report.paper_tables(results, "sr", ["l1", "mix"], [0, 1])
    assert "| PSNR (dB) | 27.16 | 30.66 | 31.26 | 30.11 | 31.34 |" in lines
    # Paper: 31.34 - 31.26 dB and 0.9334 - 0.9322; here every pair differs by -0.5 and +0.02.
    mix = "| Mix − ℓ1 | +0.08 | -0.50 [-0.50, -0.50] | +0.0012 | +0.0200 [+0.0200, +0.0200] |"
    assert mix in lines
    assert "| MS-SSIM − ℓ1 | -1.15 | not run | -0.0032 | not run |" in lines
    assert report.paper_tables(results, "denoise", ["l1", "mix"], [0, 1]) == []


def test_default_runs_dir_is_separate_per_data_folder():
    args = zhao.parse_args(["--data-dir", "/data/kodak/"])
    assert args.data_dir == os.path.abspath("/data/kodak")  # one spelling per folder
    assert zhao.default_runs_dir(args).startswith(os.path.join("runs", "zhao_kodak_"))
    other = zhao.parse_args(["--data-dir", "/elsewhere/kodak"])
    assert zhao.default_runs_dir(other) != zhao.default_runs_dir(args)
    assert zhao.default_runs_dir(zhao.parse_args(["--quick"])) == os.path.join("runs", "zhao_quick")
    assert args.max_doublings == 2 and zhao.parse_args(["--quick"]).max_doublings == 0
    assert zhao.parse_args(["--task", "sr", "denoise"]).task == ["sr", "denoise"]
    with pytest.raises(SystemExit):
        zhao.parse_args(["--max-doublings", "9"])


def _run(tmp_path, capsys, *extra):
    out = tmp_path / "report.md"
    args = ["--quick", "--task", "denoise", "--seeds", "0", "--runs-dir", str(tmp_path / "runs")]
    zhao.main([*args, "--out", str(out), *extra])
    return out, capsys.readouterr().err


@pytest.mark.slow
def test_quick_study_writes_report_and_reuses_runs(tmp_path, capsys):
    out, log = _run(tmp_path, capsys, "--losses", "l1", "ssim")
    assert log.count("training denoise/") == 2
    text = out.read_text()
    for needle in (
        "| PSNR (dB) ↑ |",
        "Paired differences to ℓ1",
        "Colour cast",
        "converged",
        "at every budget trained",
        "the paper has no Gaussian-denoising task",
    ):
        assert needle in text
    assert (tmp_path / "figures" / "report_denoise.png").stat().st_size > 1000
    results = report.load_summary(str(tmp_path / "report.json"))
    assert set(results) == {("denoise", "l1", 0), ("denoise", "ssim", 0)}
    curve = results[("denoise", "l1", 0)]["curve"]
    assert curve[-1]["step"] == zhao.QUICK["steps"] and len(curve[-1]["offset"]) == 3
    # A second invocation trains nothing: the finished runs are reused.
    _, log = _run(tmp_path, capsys, "--losses", "l1", "ssim")
    assert "training" not in log


@pytest.mark.slow
def test_quick_study_with_data_dir(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        arr = np.random.default_rng(i).integers(0, 256, (180, 190, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"p{i}.png")
    out, log = _run(tmp_path, capsys, "--losses", "l1", "--data-dir", str(folder))
    assert "p2.png" in out.read_text() and "training denoise/l1" in log
    assert os.path.exists(tmp_path / "runs" / "denoise" / f"l1_s0_{zhao.QUICK['steps']}.json")
