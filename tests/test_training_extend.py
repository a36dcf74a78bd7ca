"""Runs that go on: a finished run extended with a larger `steps`, an interrupted run resumed,
and the TensorBoard events of both, read back with TensorBoard's own event reader."""

import json
import shutil

import jax
import numpy as np
import pytest

from dssim_mae_jax import training

TINY = {
    "features": 4, "depth": 2, "batch_size": 2, "patch_size": 16, "eval_crop": 32, "steps": 8,
    "log_every": 2, "checkpoint_every": 4, "num_samples": 0, "progress_bar": False, "prefetch": 0,
    # Two phases switching at step 2 of 8 (the default's shape: MAE alone, then the mix).
    "phases": [
        {"name": "mae", "fraction": 0.3, "structural_weight": 0.0, "mae_weight": 1.0,
         "mean_weight": 0.0, "learning_rates": {"body": 2e-3, "head": 2e-3}},
        {"name": "mix", "fraction": 0.7, "learning_rates": {"body": 5e-4, "head": 1e-3}},
    ],
}  # fmt: skip


def tiny(**kw):
    return training.Config(**{**TINY, **kw})


def _lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _scalars(workdir, tag):
    """``[(step, value)]`` of `tag`, as TensorBoard's reader loads the run's event files."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _same_params(a, b):
    jax.tree.map(np.testing.assert_array_equal, a["state"].params, b["state"].params)


def test_a_finished_run_extended_continues_its_last_phase_at_its_final_rate(tmp_path):
    first = training.train_and_evaluate(tiny(), str(tmp_path / "w"))
    assert first["step"] == 8 and first["eval"] is not None
    more = training.train_and_evaluate(tiny(steps=12), str(tmp_path / "w"))
    assert (more["start_step"], more["step"], more["steps_run"]) == (8, 12, 4)
    assert more["eval"] is not None and more["trace_count"] == 1
    saved = json.loads((tmp_path / "w" / "config.json").read_text())
    assert (saved["steps"], saved["schedule_steps"]) == (12, 8)
    lines = _lines(tmp_path / "w")
    events = [r for r in lines if "event" in r]
    assert events == [
        {
            "step": 8, "event": "extended", "from_steps": 8, "to_steps": 12, "schedule_steps": 8,
            "rule": training._loop.EXTENSION_RULE,
        }
    ]  # fmt: skip
    records = [r for r in lines if "event" not in r]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]  # phase 2 starts at 2
    # Past the schedule: the last phase's weights, each group's rate where the phase ended.
    _, rates = training.optimizer_from_config(tiny())
    for r in records[-2:]:
        assert r["phase"] == "mix" and r["structural_weight"] == pytest.approx(0.2)
        for g in ("body", "head"):
            assert r[f"lr_{g}"] == pytest.approx(float(rates[g](8)), rel=1e-6)
            assert r[f"lr_{g}"] == pytest.approx(0.1 * tiny().phases[1].learning_rates[g])
    # The same as one run of 12 steps on the 8-step schedule, trained in one go.
    direct = training.train_and_evaluate(tiny(steps=12, schedule_steps=8), str(tmp_path / "d"))
    _same_params(more, direct)
    assert more["eval"] == direct["eval"]
    # Extended again: the schedule stays the first run's.
    again = training.train_and_evaluate(tiny(steps=14), str(tmp_path / "w"))
    assert again["start_step"] == 12
    assert json.loads((tmp_path / "w" / "config.json").read_text())["schedule_steps"] == 8
    # Once finished, the same command evaluates only.
    assert training.train_and_evaluate(tiny(steps=14), str(tmp_path / "w"))["steps_run"] == 0


def test_extension_refuses_what_would_change_the_trajectory(tmp_path):
    training.train_and_evaluate(tiny(), str(tmp_path / "w"), stop_at_step=6)
    for changes, shown in [
        ({"steps": 12, "seed": 1}, "seed: 0 -> 1"),
        ({"steps": 6}, "steps: 8 -> 6"),
        ({"steps": 12, "schedule_steps": 12}, "schedule_steps: 8 -> 12"),
    ]:
        with pytest.raises(training.ConfigError, match="different config") as info:
            training.train_and_evaluate(tiny(**changes), str(tmp_path / "w"))
        assert shown in str(info.value)
    # An interrupted run extended: its steps up to 8 follow the 8-step schedule, then on.
    ext = training.train_and_evaluate(tiny(steps=10), str(tmp_path / "w"))
    direct = training.train_and_evaluate(tiny(steps=10, schedule_steps=8), str(tmp_path / "d"))
    assert ext["start_step"] == 6
    _same_params(ext, direct)


def test_tensorboard_has_every_logged_step_once_across_resumes(tmp_path):
    w = tmp_path / "w"
    # Interrupted at a logged step that is also the checkpoint: step 4 must stay.
    training.train_and_evaluate(tiny(steps=12), str(w), stop_at_step=4)
    # Interrupted after steps were logged past the checkpoint it resumes from (as after
    # SIGKILL): the checkpoint of step 8 is removed, so steps 6 and 8 run and are logged again.
    training.train_and_evaluate(tiny(steps=12), str(w), stop_at_step=8)
    shutil.rmtree(w / "checkpoints" / "8")
    training.train_and_evaluate(tiny(steps=12), str(w))
    training.train_and_evaluate(tiny(steps=16), str(w))  # extended
    records = [r for r in _lines(w) if "event" not in r]
    steps = [r["step"] for r in records]
    assert steps == [2, 4, 6, 8, 10, 12, 14, 16]
    for key in ("loss", "structural", "mae", "psnr", "lr_head", "structural_weight"):
        got = _scalars(w, f"train/{key}")
        assert [s for s, _ in got] == steps, key
        np.testing.assert_allclose([v for _, v in got], [r[key] for r in records], rtol=1e-6)
    assert [s for s, _ in _scalars(w, "eval/model/psnr")] == [16]
    assert len(list((w / "tensorboard").iterdir())) == 1  # one event file, rewritten
