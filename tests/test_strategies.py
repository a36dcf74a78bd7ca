"""The loss-strategy comparison (experiments/strategies): configs, tiny end-to-end runs,
tables, the report and the command line."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dssim_mae_jax import training

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # experiments/ is not installed with the library
    sys.path.insert(0, str(ROOT))

import experiments.strategies as strategies  # noqa: E402
from experiments.strategies import __main__ as cli  # noqa: E402

TINY = dict(features=8, depth=3, batch_size=4, patch_size=24, eval_crop=48, steps=6)


def test_default_strategies_weights():
    s = strategies.default_strategies(alpha=0.84)
    assert list(s) == ["mae", "dssim", "dssim_mae", "phased"]
    assert (s["mae"].first, s["mae"].rest) == ((0.0, 1.0), (0.0, 1.0))
    assert (s["dssim"].first, s["dssim"].rest) == ((1.0, 0.0), (1.0, 0.0))
    assert s["dssim_mae"].first == s["dssim_mae"].rest == (0.84, 0.16)
    assert (s["phased"].first, s["phased"].rest) == ((0.0, 1.0), (0.84, 0.16))
    assert strategies.default_strategies(alpha=0.5)["phased"].rest == (0.5, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        strategies.default_strategies(alpha=1.5)


def test_strategy_config_changes_only_loss_weights():
    base = strategies.comparison_config(**TINY)
    for s in strategies.STRATEGIES.values():
        cfg = strategies.strategy_config(base, s, seed=3)
        assert cfg.seed == 3
        old, new = base.phases, cfg.phases
        assert [p.fraction for p in new] == [p.fraction for p in old]
        assert [dict(p.learning_rates) for p in new] == [dict(p.learning_rates) for p in old]
        assert (new[0].structural_weight, new[0].mae_weight) == s.first
        assert all((p.structural_weight, p.mae_weight) == s.rest for p in new[1:])
        # Everything else is the base config.
        a, b = cfg.to_dict(), base.to_dict()
        assert {k for k in a if a[k] != b[k]} <= {"phases", "seed"}


def test_comparison_config_defaults():
    base = strategies.comparison_config(steps=40)
    assert base.checkpoint_every == 40 and base.keep_checkpoints == 1
    assert not base.progress_bar
    # The study compares the seed's strategies on the seed's recipe, not train.py's default.
    assert base.phases == training.SEED_PHASES and base.preset == "seed-naive"


def test_phased_strategy_needs_two_phases():
    one = strategies.comparison_config(
        **TINY,
        phases=[{"name": "all", "fraction": 1.0, "structural_weight": 0.5, "mae_weight": 0.5}],
    )
    assert strategies.strategy_config(one, strategies.STRATEGIES["mae"]).phases[0].mae_weight == 1
    with pytest.raises(training.ConfigError, match="at least two"):
        strategies.strategy_config(one, strategies.STRATEGIES["phased"])


def test_bad_arguments(tmp_path):
    base = strategies.comparison_config(**TINY)
    with pytest.raises(ValueError, match="unknown strategy"):
        strategies.compare_strategies(base, str(tmp_path), strategies=["l2"])
    with pytest.raises(ValueError, match="seeds"):
        strategies.compare_strategies(base, str(tmp_path), seeds=[])
    with pytest.raises(ValueError, match="at least one strategy"):
        strategies.compare_strategies(base, str(tmp_path), strategies=[])


def _fake_runs(evals):
    """StrategyRuns with given model metrics {(strategy, seed): (psnr, ssim)}; no training."""
    base = strategies.comparison_config(**TINY)
    runs = []
    for (name, seed), (psnr, ssim) in evals.items():
        spec = strategies.STRATEGIES[name]
        ev = {
            "input": {"psnr": 20.0 + seed, "ssim": 0.3, "mae": 0.07},
            "model": {"psnr": psnr, "ssim": ssim, "mae": 0.02},
        }
        cfg = strategies.strategy_config(base, spec, seed=seed)
        runs.append(strategies.StrategyRun(name, spec, seed, cfg, f"runs/{name}", ev, 10.0))
    return runs


def test_tables_and_verdict():
    runs = _fake_runs(
        {
            ("mae", 0): (28.0, 0.80),
            ("mae", 1): (28.2, 0.81),
            ("dssim_mae", 0): (28.0, 0.82),  # SSIM up, PSNR equal: beats
            ("dssim_mae", 1): (28.16, 0.83),  # 0.04 dB below: within the tolerance
            ("dssim", 0): (27.5, 0.83),  # SSIM up but PSNR down: does not
            ("dssim", 1): (27.7, 0.84),
            ("phased", 0): (28.3, 0.79),  # SSIM down in one seed: does not
            ("phased", 1): (28.4, 0.82),
        }
    )
    stats = strategies.summarize_runs(runs)
    assert list(stats) == ["input", "mae", "dssim_mae", "dssim", "phased"]
    assert stats["mae"]["psnr"] == pytest.approx((28.1, np.std([28.0, 28.2], ddof=1)))
    assert stats["input"]["psnr"] == pytest.approx((20.5, np.std([20.0, 21.0], ddof=1)))
    diffs = strategies.paired_differences(runs)
    assert diffs["dssim_mae"]["ssim"] == pytest.approx([0.02, 0.02])
    assert diffs["phased"]["psnr"] == pytest.approx([0.3, 0.2])
    assert strategies.verdict(runs, "dssim_mae").startswith("**yes**")
    assert "higher in 2/2 seeds" in strategies.verdict(runs, "dssim_mae")
    assert strategies.verdict(runs, "dssim").startswith("**no**")
    assert "dB below on average" in strategies.verdict(runs, "dssim")
    assert strategies.verdict(runs, "phased").startswith("**no**")
    assert "(higher in 1/2 seeds)" in strategies.verdict(runs, "phased")
    assert "no paired runs" in strategies.verdict(runs[:2], "phased")
    table = strategies.results_table(runs)
    assert "| MAE only (`mae`) | 28.10 ± 0.14 | 0.8050 ± 0.0071 | 0.0200 ± 0.0000 |" in table
    assert "noisy input" in table
    assert "| `dssim_mae` | -0.02 ± 0.03 | +0.0200 ± 0.0000 |" in strategies.differences_table(runs)
    assert "| `phased` | 1 | 28.40 | 0.8200 | 0.0200 | 10 |" in strategies.per_seed_table(runs)
    report = strategies.comparison_report(
        runs, command="python x.py", wall_seconds=75, train_names=("a", "b"), eval_names=("c",)
    )
    assert "python x.py" in report and "1 min 15 s (8 runs)" in report
    assert "## Verdict" in report and "**yes** — `dssim_mae`" in report


def test_report_states_what_it_read_from_config_and_data():
    sr = strategies.comparison_config(**TINY, task="sr", scale=3, data_dir="/photos")
    runs = [
        strategies.StrategyRun(
            "mae", strategies.STRATEGIES["mae"], 0, sr, "runs/mae", {"input": {}, "model": {}}, 1.0
        )
    ]
    report = strategies.comparison_report(
        runs, command="x", wall_seconds=1, train_names=("t1.png",), eval_names=("e1.png",)
    )
    assert "`sr` (bicubic downsampling ×3)" in report and "Gaussian noise" not in report
    assert "`/photos`" in report and "`t1.png`" in report and "`e1.png`" in report
    assert "chelsea" not in report and "DnCNN" not in report
    # The loss description comes from the loss make_loss built for the preset.
    gs = strategies.comparison_config(**TINY, preset="gaussian-splatting")
    runs[0] = strategies.StrategyRun("mae", runs[0].spec, 0, gs, "w", runs[0].eval, 1.0)
    loss = training.build_loss(gs)[0].config
    report = strategies.comparison_report(
        runs, command="x", wall_seconds=1, train_names=("a",), eval_names=("b",)
    )
    assert f"{loss.filter_size} taps" in report and f"padding `{loss.padding}`" in report


def test_compare_strategies_end_to_end(tmp_path, capsys):
    # One small comparison serves every check below: each run compiles its own train step.
    workdir = tmp_path / "strategies"
    base = strategies.comparison_config(**TINY, log_every=1, num_samples=0)
    lines = []
    runs = strategies.compare_strategies(
        base, str(workdir), strategies=["mae", "phased"], seeds=[0], log=lines.append
    )
    assert [(r.strategy, r.seed) for r in runs] == [("mae", 0), ("phased", 0)]
    assert len(lines) == 2 and "PSNR" in lines[0]
    for r in runs:
        assert (workdir / r.strategy / "seed0" / "eval.json").is_file()
        assert {"psnr", "ssim", "mae"} <= set(r.eval["model"])
        assert np.isfinite(r.eval["model"]["psnr"]) and r.params is not None
    # Same seed: the same noisy held-out input whatever the strategy.
    assert runs[0].eval["input"] == runs[1].eval["input"]

    switch = base.phase_boundaries[1]
    for r in runs:
        records = strategies.read_metrics(r.workdir)
        assert [rec["step"] for rec in records] == list(range(1, TINY["steps"] + 1))
        for rec in records:
            # A record's "step" counts the steps done; its weights are those of step - 1.
            expected = r.spec.first if rec["step"] - 1 < switch else r.spec.rest
            assert (rec["structural_weight"], rec["mae_weight"]) == pytest.approx(expected)
            # Both terms are logged whatever their weights.
            assert np.isfinite(rec["mae"]) and np.isfinite(rec["structural"])

    crops = strategies.restored_crops(runs, crop=16)
    assert len(crops) == 2
    for triple in crops:
        assert [a.shape for a in triple] == [(16, 16, 3)] * 3
    np.testing.assert_array_equal(crops[0][0], crops[1][0])  # same noisy input
    assert not np.array_equal(crops[0][1], crops[1][1])  # different models

    # The command line over the same workdir resumes the finished runs (re-evaluates them).
    out = tmp_path / "results.md"
    argv = ["--steps", "6", "--seeds", "0", "--strategies", "mae", "phased"]
    argv += ["--features", "8", "--depth", "3", "--batch-size", "4", "--patch-size", "24"]
    argv += ["--eval-crop", "48", "--workdir", str(workdir), "--out", str(out)]
    assert cli.main(argv) == 0
    text = out.read_text()
    assert text.startswith("# Does DSSIM+MAE beat MAE?")
    assert "python -m experiments.strategies --steps 6 --seeds 0 --strategies mae phased" in text
    assert "`chelsea`, `coffee`" in text  # the held-out names, as the data gave them
    assert "| MAE only (`mae`) |" in text and "## Every run" in text
    assert json.loads((workdir / "mae" / "seed0" / "eval.json").read_text()) == runs[0].eval
    assert "MAE only" in capsys.readouterr().out
