"""Config: defaults valid, CLI flags for every field, clear errors for invalid values."""

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from dssim_mae_jax import training

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv):
    parser = argparse.ArgumentParser()
    training.Config.add_arguments(parser)
    return training.Config.from_args(parser.parse_args(argv))


def test_default_is_valid_and_round_trips_through_json():
    c = training.Config().validate()
    back = training.Config.from_dict(json.loads(c.to_json()))
    assert back == c
    assert [p.name for p in c.phases] == ["mae", "mix"]


def test_default_is_the_studys_best_trade_off_and_the_seed_recipe_stays_reachable():
    """docs/results_recipes.md: MAE alone for 60%, then 0.2 (1 - SSIM) + 0.8 MAE + 1 mean."""
    c = training.Config()
    assert c.preset == "dssim-mae-mean" and c.phases == training._config.DEFAULT_PHASES
    first, mix = c.phases
    assert (first.fraction, first.structural_weight, first.mae_weight) == (0.6, 0.0, 1.0)
    assert first.mean_weight == 0.0 and first.learning_rates == {"body": 2e-3, "head": 2e-3}
    assert (mix.fraction, mix.structural_weight, mix.mae_weight, mix.mean_weight) == (
        0.4, None, None, None
    )  # fmt: skip
    assert mix.learning_rates == {"body": 5e-4, "head": 1e-3}
    _, weights = training.build_loss(c)
    assert weights == {"structural_weight": 0.2, "mae_weight": 0.8, "mean_weight": 1.0}
    seed = training.Config(preset="seed-naive", phases=training.SEED_PHASES).validate()
    _, weights = training.build_loss(seed)
    assert weights == {"structural_weight": 0.8, "mae_weight": 0.2, "mean_weight": 0.0}
    assert [p.learning_rates for p in seed.phases] == [p.learning_rates for p in c.phases]


def test_phase_mean_weight_round_trips_and_is_checked():
    c = _parse(["--phases", '[{"name": "a", "fraction": 1.0, "mean_weight": 0.5}]'])
    assert c.phases[0].mean_weight == 0.5
    assert training.Config.from_dict(json.loads(c.to_json())) == c
    with pytest.raises(training.ConfigError, match=r"phases\['a'\]\.mean_weight"):
        training.Config(phases=[{"name": "a", "fraction": 1.0, "mean_weight": -1}]).validate()


def test_every_field_is_a_flag():
    parser = argparse.ArgumentParser()
    training.Config.add_arguments(parser)
    flags = {a.dest for a in parser._actions}
    assert {f.name for f in dataclasses.fields(training.Config)} <= flags
    for f in dataclasses.fields(training.Config):
        assert f.metadata.get("help"), f"field {f.name} has no help text"


def test_flags_set_fields():
    c = _parse(
        [
            "--steps", "40", "--batch-size", "8", "--patch-size", "32", "--seed", "3",
            "--task", "sr", "--scale", "4", "--preset", "gaussian-splatting",
            "--no-progress-bar", "--loss-overrides", '{"filter_size": 7}',
            "--phases", '[{"name": "all", "fraction": 1.0}]',
        ]
    )  # fmt: skip
    assert (c.steps, c.batch_size, c.patch_size, c.seed, c.task, c.scale) == (40, 8, 32, 3, "sr", 4)
    assert c.preset == "gaussian-splatting" and not c.progress_bar
    assert c.loss_overrides == {"filter_size": 7}
    assert [p.name for p in c.phases] == ["all"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"task": "deblur"}, "task"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"patch_size": 4}, "patch_size"),
        ({"task": "sr", "scale": 3, "patch_size": 32}, "patch_size"),
        ({"scale": 5}, "scale"),
        ({"depth": 1}, "depth"),
        ({"channels": 2}, "channels"),
        ({"noise_sigma": -1.0}, "noise_sigma"),
        ({"compute_dtype": "int8"}, "compute_dtype"),
        ({"phases": [{"name": "a", "fraction": 0.5}]}, "phases"),
        ({"phases": [{"name": "a", "fraction": 0.5}, {"name": "a", "fraction": 0.5}]}, "phases"),
        ({"phases": [{"name": "a", "fraction": 1.0, "frozen": ["tail"]}]}, "frozen"),
        ({"phases": [{"name": "a", "fraction": 1.0, "mae_weight": -1}]}, "mae_weight"),
        ({"phases": [{"name": "a", "fraction": 1.0, "learning_rates": {"body": 1e-3}}]},
         "learning_rates"),
        ({"steps": 2, "phases": [{"name": "a", "fraction": 0.1}, {"name": "b", "fraction": 0.9}]},
         "steps"),
    ],
)  # fmt: skip
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        training.Config(**changes).validate()


def test_unknown_phase_key_is_an_error():
    with pytest.raises(ValueError, match="unknown phase field"):
        training.Config(phases=[{"name": "a", "fraction": 1.0, "lr": 1.0}])


def test_cli_help_and_invalid_value_exit_before_work(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--help"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    for flag in ("--workdir", "--steps", "--batch-size", "--patch-size", "--seed", "--preset",
                 "--task", "--data-dir", "--phases", "--noise-sigma"):  # fmt: skip
        assert flag in out.stdout
    text = " ".join(out.stdout.split())
    assert "(default: 500)" in text
    # Boolean flags show their default too, once.
    assert "show a tqdm progress bar (default: True, i.e. --progress-bar)" in text
    assert "(multi-host runs) (default: False, i.e. --no-distributed)" in text
    assert text.count("(default: True") == 1 and text.count("(default: False") == 1
    bad = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--workdir", str(tmp_path / "w"), "--task", "x"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "config.task" in bad.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"spatial_dims": 1}, "loss_overrides.spatial_dims"),
        ({"spatial_dims": 3}, "loss_overrides.spatial_dims"),
        ({"return_map": True}, "loss_overrides.return_map"),
        ({"reduction": "mean"}, "loss_overrides.reduction"),
        ({"reduction": "sum"}, "loss_overrides.reduction"),
    ],
)
def test_loss_overrides_that_change_what_is_trained_are_refused(override, field, tmp_path):
    with pytest.raises(training.ConfigError, match=field.replace(".", r"\.")):
        training.Config(loss_overrides=override).validate()
    with pytest.raises(training.ConfigError, match=field.replace(".", r"\.")):
        training.train_and_evaluate(training.Config(loss_overrides=override), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # refused before any work
    # The values training uses anyway are accepted.
    fixed = {"spatial_dims": 2, "return_map": False, "reduction": "none"}
    training.Config(loss_overrides={k: fixed[k] for k in override}).validate()


def test_loss_override_error_from_the_command_line(tmp_path):
    bad = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--workdir", str(tmp_path / "w"),
         "--loss-overrides", '{"reduction": "mean"}'],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "config.loss_overrides.reduction" in bad.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "value",
    [np.float32(25), np.float64(25), np.int64(25), np.asarray(25.0), jnp.asarray(25.0), 25],
    ids=["np.float32", "np.float64", "np.int64", "np 0-d", "jax 0-d", "int"],
)
def test_concrete_scalars_of_any_type_are_checked_alike(value):
    c = training.Config(noise_sigma=value).validate()
    assert c.noise_sigma == 25.0 and type(c.noise_sigma) in (float, int)
    assert json.loads(c.to_json())["noise_sigma"] == 25
    bad = -value
    with pytest.raises(
        training.ConfigError, match=r"config\.noise_sigma: got -25(\.0)?, expected >= 0"
    ):
        training.Config(noise_sigma=bad).validate()
    steps = training.Config(steps=np.int32(7), phases=[{"name": "a", "fraction": np.float32(1)}])
    assert steps.validate().steps == 7 and steps.phases[0].fraction == 1.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": 2.5}, "steps"),
        ({"steps": np.float64(3.0)}, "steps"),
        ({"noise_sigma": "25"}, "noise_sigma"),
        ({"noise_sigma": True}, "noise_sigma"),
        ({"noise_sigma": np.asarray([25.0])}, "noise_sigma"),
        ({"task": 1}, "task"),
    ],
)
def test_wrong_types_are_type_errors_naming_the_field(changes, field):
    with pytest.raises(TypeError, match=rf"config\.{field}: got"):
        training.Config(**changes).validate()
    with pytest.raises(training.ConfigError):  # still one except clause for every bad value
        training.Config(**changes).validate()


def test_values_beyond_float32_are_refused():
    with pytest.raises(training.ConfigError, match=r"config\.noise_sigma: got 1e\+39.*float32"):
        training.Config(noise_sigma=1e39).validate()


def test_old_phase_spelling_warns_and_keeps_working():
    with pytest.warns(
        DeprecationWarning, match="'ssim_weight' is deprecated; use 'structural_weight'"
    ):
        p = training.Phase("a", 1.0, ssim_weight=0.5)
    assert p.structural_weight == 0.5
    with pytest.warns(DeprecationWarning, match="use 'structural_weight'"):
        assert p.ssim_weight == 0.5
    with pytest.warns(DeprecationWarning, match="use 'structural_weight'"):
        c = training.Config(phases=[{"name": "a", "fraction": 1.0, "ssim_weight": 0.25}])
    assert c.phases[0].structural_weight == 0.25
    assert "ssim_weight" not in c.to_json() and '"structural_weight": 0.25' in c.to_json()
    with pytest.warns(DeprecationWarning), pytest.raises(training.ConfigError, match="only"):
        training.Phase.from_dict(
            {"name": "a", "fraction": 1.0, "ssim_weight": 0.2, "structural_weight": 0.2}
        )


def test_phase_without_learning_rates_uses_the_explicit_config_field():
    c = training.Config(
        steps=10, learning_rate=3e-3, final_lr_fraction=1.0, warmup_fraction=0.0,
        phases=[{"name": "a", "fraction": 1.0}],
    ).validate()  # fmt: skip
    _, rates = training.optimizer_from_config(c)
    assert [float(rates[g](5)) for g in ("body", "head")] == pytest.approx([3e-3, 3e-3])
    assert "learning_rate" in {f.name for f in dataclasses.fields(training.Config)}


@pytest.mark.parametrize(
    ("phase", "field"),
    [
        ({"fraction": "1"}, r"phases\['a'\]\.fraction: got '1', expected a number"),
        ({"mae_weight": "x"}, r"phases\['a'\]\.mae_weight: got 'x'"),
        ({"learning_rates": 0.1}, r"learning_rates must map group -> rate, got 0\.1"),
        ({"learning_rates": {"body": "1", "head": 1.0}}, r"learning_rates\['body'\]: got '1'"),
    ],
)
def test_phase_values_of_the_wrong_type_are_type_errors(phase, field):
    with pytest.raises(TypeError, match=field):
        training.Config(phases=[{"name": "a", "fraction": 1.0, **phase}]).validate()
