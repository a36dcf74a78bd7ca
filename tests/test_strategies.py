"""The loss-strategy comparison: configs, tiny end-to-end runs, tables and the CLI."""

import json

import numpy as np
import pytest

from dssim_mae_jax import training
from dssim_mae_jax.training import _strategies

TINY = dict(features=8, depth=3, batch_size=4, patch_size=24, eval_crop=48, steps=6)


def test_default_strategies_weights():
    s = training.default_strategies(0.84)
    assert list(s) == ["mae", "dssim", "dssim_mae", "phased"]
    assert (s["mae"].first, s["mae"].rest) == ((0.0, 1.0), (0.0, 1.0))
    assert (s["dssim"].first, s["dssim"].rest) == ((1.0, 0.0), (1.0, 0.0))
    assert s["dssim_mae"].first == s["dssim_mae"].rest == (0.84, 0.16)
    assert (s["phased"].first, s["phased"].rest) == ((0.0, 1.0), (0.84, 0.16))
    assert training.default_strategies(0.5)["phased"].rest == (0.5, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        training.default_strategies(1.5)


def test_strategy_config_changes_only_loss_weights():
    base = training.comparison_config(**TINY)
    for s in training.STRATEGIES.values():
        cfg = training.strategy_config(base, s, seed=3)
        assert cfg.seed == 3
        old, new = base.phase_list, cfg.phase_list
        assert [p.fraction for p in new] == [p.fraction for p in old]
        assert [dict(p.learning_rates) for p in new] == [dict(p.learning_rates) for p in old]
        assert (new[0].ssim_weight, new[0].mae_weight) == s.first
        assert all((p.ssim_weight, p.mae_weight) == s.rest for p in new[1:])
        # Everything else is the base config.
        a, b = cfg.to_dict(), base.to_dict()
        assert {k for k in a if a[k] != b[k]} <= {"phases", "seed"}


def test_comparison_config_defaults():
    base = training.comparison_config(steps=40)
    assert base.checkpoint_every == 40 and base.keep_checkpoints == 1
    assert not base.progress_bar
    assert base.phases == tuple(p.to_dict() for p in training.DEFAULT_PHASES)


def test_phased_strategy_needs_two_phases():
    one = training.comparison_config(
        **TINY, phases=[{"name": "all", "fraction": 1.0, "ssim_weight": 0.5, "mae_weight": 0.5}]
    )
    assert training.strategy_config(one, training.STRATEGIES["mae"]).phase_list[0].mae_weight == 1
    with pytest.raises(training.ConfigError, match="at least two"):
        training.strategy_config(one, training.STRATEGIES["phased"])


def test_bad_arguments(tmp_path):
    base = training.comparison_config(**TINY)
    with pytest.raises(ValueError, match="unknown strategy"):
        training.compare_strategies(base, str(tmp_path), strategies=["l2"])
    with pytest.raises(ValueError, match="seeds"):
        training.compare_strategies(base, str(tmp_path), seeds=[])
    with pytest.raises(ValueError, match="at least one strategy"):
        training.compare_strategies(base, str(tmp_path), strategies=[])


def test_compare_strategies_end_to_end(tmp_path, capsys):
    # One comparison serves every check below: tiny runs still compile a train step each.
    workdir = tmp_path / "strategies"
    base = training.comparison_config(**TINY, log_every=1)
    lines = []
    runs = training.compare_strategies(
        base, str(workdir), strategies=["mae", "phased"], seeds=[0, 1], log=lines.append
    )
    _check_runs(workdir, runs, lines)
    _check_logged_weights(runs)
    _check_tables(runs)
    _check_restored_crops(runs)
    _check_command_line(workdir, runs, tmp_path / "results.md", capsys)


def _check_runs(workdir, runs, lines):
    pairs = [(r.strategy, r.seed) for r in runs]
    assert pairs == [("mae", 0), ("mae", 1), ("phased", 0), ("phased", 1)]
    assert len(lines) == 4 and "PSNR" in lines[0]
    for r in runs:
        assert (workdir / r.strategy / f"seed{r.seed}" / "eval.json").is_file()
        assert {"psnr", "ssim", "mae"} <= set(r.eval["model"])
        assert np.isfinite(r.eval["model"]["psnr"])
        assert r.params is not None
    # Same seed: same noisy held-out input whatever the strategy.
    by = {(r.strategy, r.seed): r for r in runs}
    assert by["mae", 0].eval["input"] == by["phased", 0].eval["input"]
    assert by["mae", 0].eval["input"] != by["mae", 1].eval["input"]


def _check_logged_weights(runs):
    switch = training.phase_boundaries(runs[0].config)[1]
    for r in runs:
        records = training.read_metrics(r.workdir)
        assert [rec["step"] for rec in records] == list(range(1, TINY["steps"] + 1))
        for rec in records:
            # A record's "step" counts the steps done; its weights are those of step - 1.
            expected = r.spec.first if rec["step"] - 1 < switch else r.spec.rest
            assert (rec["w_ssim"], rec["w_mae"]) == pytest.approx(expected)
            # Both terms are logged whatever their weights.
            assert np.isfinite(rec["mae"]) and np.isfinite(rec["dssim"])


def _check_tables(runs):
    stats = training.summarize_runs(runs)
    assert list(stats) == ["input", "mae", "phased"]
    psnr = [r.eval["model"]["psnr"] for r in runs if r.strategy == "mae"]
    assert stats["mae"]["psnr"] == pytest.approx((np.mean(psnr), np.std(psnr, ddof=1)))
    table = training.results_table(runs)
    assert "MAE only (`mae`)" in table and "±" in table and "noisy input" in table
    diffs = training.paired_differences(runs)
    assert list(diffs) == ["phased"] and len(diffs["phased"]["ssim"]) == 2
    assert "`phased`" in training.differences_table(runs)
    v = training.verdict(runs, "phased")
    assert v.startswith(("**yes**", "**no**")) and "/2 seeds" in v
    assert "no paired runs" in training.verdict(runs, "dssim")
    assert "| `phased` | 1 |" in training.per_seed_table(runs)
    report = training.comparison_report(runs, command="python x.py", wall_seconds=75)
    assert "python x.py" in report and "1 min 15 s" in report and "## Verdict" in report


def _check_restored_crops(runs):
    crops = training.restored_crops(runs[:2], crop=16)
    assert len(crops) == 2
    for triple in crops:
        assert [a.shape for a in triple] == [(16, 16, 3)] * 3
    # Different seeds see different noise; the clean crop is the same.
    np.testing.assert_array_equal(crops[0][2], crops[1][2])
    assert not np.array_equal(crops[0][0], crops[1][0])


def _check_command_line(workdir, runs, out, capsys):
    argv = ["--steps", "6", "--seeds", "0", "1", "--strategies", "mae", "phased"]
    argv += ["--features", "8", "--depth", "3", "--batch-size", "4", "--patch-size", "24"]
    argv += ["--eval-crop", "48", "--workdir", str(workdir), "--out", str(out)]
    assert _strategies.main(argv, prog="compare") == 0
    text = out.read_text()
    assert text.startswith("# Does DSSIM+MAE beat MAE?")
    assert "compare --steps 6 --seeds 0 1" in text
    assert "| MAE only (`mae`) |" in text and "## Every run" in text
    # The finished runs were resumed (only re-evaluated), not retrained: same metrics.
    ev = json.loads((workdir / "mae" / "seed0" / "eval.json").read_text())
    assert ev == runs[0].eval
    assert "MAE only" in capsys.readouterr().out
