"""Reliability of a training run: divergence, damaged checkpoints, the workdir lock, input
validated before any work, and one-line errors from `train.py`. Tiny models keep each run to
seconds."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scripts
from PIL import Image

from dssim_mae_jax import training
from dssim_mae_jax.training import _loop, _workdir
from dssim_mae_jax.training._checkpoints import Checkpointer, NonFiniteStateError, params_finite

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "features": 4, "depth": 2, "batch_size": 2, "patch_size": 16, "eval_crop": 32, "steps": 10,
    "log_every": 2, "checkpoint_every": 4, "num_samples": 0, "progress_bar": False, "prefetch": 0,
}  # fmt: skip


def tiny(**kw):
    return training.Config(**{**TINY, **kw})


def _flags(**kw):
    argv = []
    for k, v in {**TINY, **kw}.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag if v else "--no-" + flag[2:]] if isinstance(v, bool) else [flag, str(v)]
    return argv


def _train_main():
    return scripts.load("train.py").main


def _train_py(*argv, **kw):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=600, **kw,
    )  # fmt: skip


def _params(state):
    return jax.tree.leaves(jax.device_get(state.params))


def _fresh_state(config):
    return training.create_train_state(config, training.optimizer_from_config(config)[0])


# ----------------------------------------------------------------------- divergence
def test_step_whose_update_makes_parameters_nonfinite_is_skipped():
    config = tiny()
    # Finite loss and gradients, but an update that makes every parameter infinite.
    state = training.create_train_state(config, optax.scale(float("inf")))
    loss_fn, weights = training.build_loss(config)
    _, rates = training.optimizer_from_config(config)
    schedule = training.schedule_from_config(config, rates, weights)
    clean = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32))
    new, metrics = jax.jit(
        lambda s, b: training.train_step(s, b, config=config, loss_fn=loss_fn, schedule=schedule)
    )(state, clean)
    assert np.isfinite(float(metrics["loss"])) and not bool(metrics["finite"])
    assert int(new.nonfinite) == 1 and int(new.step) == 1
    jax.tree.map(np.testing.assert_array_equal, new.params, state.params)


def test_checkpointer_refuses_to_save_nonfinite_parameters(tmp_path):
    state = _fresh_state(tiny())
    bad = state.replace(
        params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.params)
    )
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3)
    with pytest.raises(NonFiniteStateError, match="not all finite"):
        ckpt.save(bad)
    ckpt.close()
    assert ckpt.all_steps() == [] and not params_finite(bad) and params_finite(state)


def test_diverged_run_exits_1_keeps_only_finite_checkpoints_and_prints_no_gain(tmp_path):
    phases = [{"name": "boom", "fraction": 1.0, "learning_rates": {"body": 1e30, "head": 1e30}}]
    workdir = tmp_path / "w"
    argv = _flags(steps=40, warmup_fraction=0.0, grad_clip_norm=0.0, max_nonfinite=3,
                  log_every=1, checkpoint_every=1)  # fmt: skip
    out = _train_py("--workdir", str(workdir), *argv, "--phases", json.dumps(phases))
    assert out.returncode == 1, out.stderr[-2000:]
    assert "training diverged at step" in out.stderr and "Traceback" not in out.stderr
    assert "PSNR gain" not in out.stdout and not (workdir / "eval.json").exists()
    config = tiny(steps=40, phases=phases, warmup_fraction=0.0, grad_clip_norm=0.0,
                  max_nonfinite=3, log_every=1, checkpoint_every=1)  # fmt: skip
    ckpt = Checkpointer(str(workdir / "checkpoints"), keep=3)
    assert ckpt.all_steps(), "the steps before the divergence were checkpointed"
    for step in ckpt.all_steps():  # every checkpoint on disk holds finite parameters
        assert params_finite(ckpt.restore(_fresh_state(config), step)), step
    ckpt.close()


def test_nonfinite_heldout_metrics_are_a_divergence_without_eval_json(tmp_path, monkeypatch):
    def diverged(*args, **kw):
        return {"input": {"psnr": 20.0}, "model": {"psnr": float("inf")}}, []

    monkeypatch.setattr(_loop, "evaluate_dataset", diverged)
    with pytest.raises(training.NonFiniteLossError, match=r"model\.psnr are not finite"):
        training.train_and_evaluate(tiny(steps=2), str(tmp_path))
    assert not (tmp_path / "eval.json").exists()


# ----------------------------------------------------------------------- damaged checkpoints
def _truncate_data(step_dir):
    for path in step_dir.rglob("*"):
        if path.is_file() and path.parent.name == "d":
            with open(path, "r+b") as f:
                f.truncate(10)


DAMAGE = {
    "truncated_data_file": _truncate_data,
    "missing_metadata": lambda d: (d / "default" / "_METADATA").unlink(),
    "empty_step_folder": lambda d: (shutil.rmtree(d), d.mkdir()),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    return training.train_and_evaluate(tiny(), str(workdir))


_STOP_AT_8 = """
import json, sys
from dssim_mae_jax import training
training.train_and_evaluate(training.Config(**json.loads(sys.argv[2])), sys.argv[1], stop_at_step=8)
"""


@pytest.fixture(scope="module")
def stopped_at_8(tmp_path_factory):
    """A workdir with checkpoints 4 and 8 of `tiny()`, written by another process (so that
    no in-process cache of the files can hide the damage done to them)."""
    workdir = tmp_path_factory.mktemp("stopped") / "w"
    out = subprocess.run(
        [sys.executable, "-c", _STOP_AT_8, str(workdir), json.dumps(TINY)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_past_a_damaged_latest_checkpoint(
    tmp_path, damage, stopped_at_8, uninterrupted, capsys
):
    workdir = tmp_path / "w"
    shutil.copytree(stopped_at_8, workdir)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4", "8"]
    DAMAGE[damage](workdir / "checkpoints" / "8")
    with pytest.warns(RuntimeWarning, match=r"checkpoint step 8 does not restore \(\w+"):
        result = training.train_and_evaluate(tiny(), str(workdir))
    assert result["start_step"] == 4 and result["step"] == 10
    assert f"resuming {workdir} from step 4 of 10" in capsys.readouterr().err
    # The damaged checkpoint is kept aside, never deleted.
    assert (workdir / "checkpoints-damaged" / "8").is_dir()
    # The resumed trajectory is the uninterrupted one, bit for bit.
    for a, b in zip(_params(uninterrupted["state"]), _params(result["state"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_noise_of_a_failed_restore_is_dropped_and_nothing_else():
    """After a failed orbax restore, un-started orbax reads warn "never awaited" and pending
    callbacks raise "Event loop is closed" at unpredictable times (dssim_mae_jax/training/
    _checkpoints.py); only those two are silenced, every other warning and error still shows."""
    from dssim_mae_jax.training import _checkpoints

    seen = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            _checkpoints._drop_closed_event_loop_errors()
            for name in ("Store._get_array_metadatas", "train_step"):
                warnings.warn(f"coroutine '{name}' was never awaited", RuntimeWarning, stacklevel=1)
            for error in (RuntimeError("Event loop is closed"), RuntimeError("other")):
                sys.unraisablehook(SimpleNamespace(exc_value=error))
        assert [str(r.message) for r in rec] == ["coroutine 'train_step' was never awaited"]
        assert [str(u.exc_value) for u in seen] == ["other"]
    finally:
        sys.unraisablehook = previous_hook


def test_checkpoints_without_config_json_are_refused(tmp_path):
    training.train_and_evaluate(tiny(), str(tmp_path), stop_at_step=4)
    (tmp_path / "config.json").unlink()
    with pytest.raises(training.ConfigError, match=r"checkpoints but no config\.json"):
        training.train_and_evaluate(tiny(seed=1), str(tmp_path))
    assert not (tmp_path / "config.json").exists()


def test_resume_on_a_changed_data_folder_is_refused_and_a_touched_one_warns(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / name)
    config = tiny(data_dir=str(data), num_eval_images=1)
    workdir = str(tmp_path / "w")
    training.train_and_evaluate(config, workdir, stop_at_step=4)
    record = json.loads((tmp_path / "w" / "data.json").read_text())
    assert sorted(record) == ["a.png", "b.png", "c.png"]
    os.utime(data / "a.png", ns=(1, 1))  # same bytes, new time: a warning only
    with pytest.warns(RuntimeWarning, match="new modification time"):
        training.train_and_evaluate(config, workdir, stop_at_step=6)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / "d.png")
    with pytest.raises(ValueError, match=r"data folder changed .*added 'd\.png'"):
        training.train_and_evaluate(config, workdir)
    (data / "d.png").unlink()
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(data / "b.png")
    with pytest.raises(ValueError, match=r"changed size 'b\.png'"):
        training.train_and_evaluate(config, workdir)


# ----------------------------------------------------------------------- workdir lock
_HOLD_LOCK = """
import sys, time, importlib.util
spec = importlib.util.spec_from_file_location("w", sys.argv[1])
w = importlib.util.module_from_spec(spec); spec.loader.exec_module(w)
with w.locked(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_lock(workdir):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, _workdir.__file__, str(workdir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    proc.stdout.close()
    return proc


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


_REFUSE = """
import runpy, sys
sys.argv = ["train.py", *sys.argv[1:]]
try:
    runpy.run_path("train.py", run_name="__main__")
except SystemExit as e:
    print("exit", e.code, "jax imported:", "jax" in sys.modules)
"""


def test_second_run_on_a_locked_workdir_refuses_before_importing_jax(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        out = subprocess.run(
            [sys.executable, "-c", _REFUSE, "--workdir", str(tmp_path), "--steps", "5"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        _kill(holder)
    # Refused at once: before the seconds of importing JAX, with the holder named.
    assert "exit 2 jax imported: False" in out.stdout, out.stderr
    assert f"in use by another run (pid={holder.pid}" in out.stderr
    assert out.stderr.count("\n") == 1
    # The API refuses too.
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(ValueError, match="in use by another run"):
            training.train_and_evaluate(tiny(), str(tmp_path))
    finally:
        _kill(holder)


def test_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    _kill(_hold_lock(tmp_path))
    assert (tmp_path / _workdir.LOCK_NAME).exists()  # the file stays; the kernel lock is gone
    with _workdir.locked(str(tmp_path)):
        with _workdir.locked(str(tmp_path)):  # re-entrant in one process
            pass


def test_sigkilled_run_resumes_bit_identically(tmp_path, uninterrupted):
    workdir = tmp_path / "w"
    args = ["--workdir", str(workdir), *_flags(checkpoint_every=2)]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ckpts = workdir / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = training.train_and_evaluate(tiny(checkpoint_every=2), str(workdir))
    assert result["step"] == 10
    for a, b in zip(_params(uninterrupted["state"]), _params(result["state"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_workdir_that_is_a_file_is_a_one_line_error_before_loading_data(tmp_path, monkeypatch):
    path = tmp_path / "file"
    path.write_text("")

    def never(config):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(_loop, "open_data", never)
    with pytest.raises(ValueError, match="exists and is not a folder"):
        training.train_and_evaluate(tiny(), str(path))
    out = _train_py("--workdir", str(path / "sub"), *_flags())
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "is not writable" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_workdir_is_a_one_line_error(tmp_path):
    tmp_path.chmod(0o555)
    try:
        out = _train_py("--workdir", str(tmp_path / "w"), *_flags())
    finally:
        tmp_path.chmod(0o755)
    assert out.returncode == 2 and "is not writable" in out.stderr
    assert out.stderr.count("\n") == 1


# ----------------------------------------------------------------------- validation
FLOAT_FIELDS = ["noise_sigma", "warmup_fraction", "final_lr_fraction", "weight_decay",
                "grad_clip_norm"]  # fmt: skip


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -float("inf")])
def test_every_float_field_must_be_finite(field, value):
    with pytest.raises(training.ConfigError, match=f"config.{field}: got .*finite"):
        training.Config(**{field: value}).validate()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"seed": -1}, r"config\.seed: got -1"),
        ({"seed": 2**31}, r"config\.seed"),
        ({"steps": 2.5}, r"config\.steps: got 2\.5, expected an integer"),
        ({"progress_bar": "yes"}, r"config\.progress_bar"),
        ({"phases": [{"name": 1, "fraction": 1.0}]}, r"phases\[0\]\.name: got 1"),
        ({"phases": [{"name": "", "fraction": 1.0}]}, r"phases\[0\]\.name"),
        ({"phases": [{"name": "a", "fraction": True}]}, r"fraction"),
        ({"phases": [{"name": "a", "fraction": 1.0, "frozen": "body"}]}, r"frozen must be a list"),
        ({"phases": [{"name": "a", "fraction": 1.0, "frozen": [1]}]}, r"frozen"),
        ({"phases": [{"name": "a", "fraction": 1.0, "mae_weight": float("nan")}]}, "mae_weight"),
    ],
)
def test_seed_types_and_phase_fields_are_validated(changes, match):
    with pytest.raises(training.ConfigError, match=match):
        training.Config(**changes).validate()


@pytest.mark.parametrize(
    "changes",
    [
        {"patch_size": 12, "eval_crop": 6},
        {"task": "sr", "scale": 4, "patch_size": 12, "eval_crop": 12},
    ],
)
def test_eval_crop_too_small_for_the_ssim_window_is_refused_before_any_work(tmp_path, changes):
    with pytest.raises(training.ConfigError, match=r"config\.eval_crop.*SSIM window"):
        training.train_and_evaluate(tiny(**changes), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_held_out_image_too_small_for_the_ssim_window_is_refused_before_training(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / "a.png")
    # Large enough for a 12-pixel training patch, but super-resolution scores it without a
    # 2-pixel border: 8 pixels are left, fewer than the 11 of the SSIM window.
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(data / "b.png")
    config = tiny(task="sr", scale=2, data_dir=str(data), patch_size=12, num_eval_images=1)
    with pytest.raises(training.ConfigError, match=r"held-out image 'b\.png' \(12x12\)"):
        training.train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "config.seed"),
        (["--weight-decay", "inf"], "config.weight_decay: got inf"),
        (["--patch-size", "12", "--eval-crop", "6"], "config.eval_crop"),
        (["--task", "sr", "--scale", "4", "--eval-crop", "12"], "config.eval_crop"),
        (["--phases", '[{"name": 1, "fraction": 1}]'], "phases[0].name"),
        (["--phases", '"abc"'], "--phases: got 'abc', expected a JSON list"),
        (["--loss-overrides", "[1]"], "--loss-overrides: got [1], expected a JSON object"),
        (["--loss-overrides", '{"k1": 1e30}'], "config.loss_overrides"),
        (["--noise-sigma", "1e39"], "config.noise_sigma: got 1e+39"),
        (["--lr-schedule", "cosine"], "config.lr_schedule: got 'cosine'"),
        (["--schedule-steps", "11"], "config.schedule_steps: got 11"),
    ],
)
def test_user_errors_are_one_line_on_stderr_with_exit_2(tmp_path, capsys, argv, message):
    main = _train_main()
    base = ["--workdir", str(tmp_path / "w"), *_flags(patch_size=12, eval_crop=32)]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1, err
    with pytest.raises(ValueError, match=re.escape(message)):
        main([*base, "--debug", *argv])  # --debug: the exception and its traceback
    assert not (tmp_path / "w").exists()


def test_malformed_flag_is_one_line_on_stderr_with_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        _train_main()(["--steps", "abc"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --steps: invalid int value: 'abc'" in err
    assert err.count("\n") == 1, err


def test_patch_larger_than_every_photo_is_refused_before_any_file_but_the_lock(tmp_path, capsys):
    main = _train_main()
    argv = ["--workdir", str(tmp_path / "w"), *_flags(patch_size=5000, eval_crop=5000)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "config.patch_size: got 5000, larger than training image(s) 'astronaut'" in err
    assert err.count("\n") == 1, err
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["train.lock"]


@pytest.mark.parametrize("name", ["config.json", "data.json"])
def test_corrupt_run_record_is_an_error_naming_the_file(tmp_path, capsys, name):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for n in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"{n}.png")
    config = tiny(data_dir=str(data), num_eval_images=1, steps=4)
    w = tmp_path / "w"
    training.train_and_evaluate(config, str(w), stop_at_step=2)
    (w / name).write_text('{"steps": 4,')  # cut short
    with pytest.raises(ValueError, match=re.escape(str(w / name))):
        training.train_and_evaluate(config, str(w))
    flags = _flags(data_dir=str(data), num_eval_images=1, steps=4)
    assert _train_main()(["--workdir", str(w), *flags]) == 2
    err = capsys.readouterr().err
    assert f"error: {w / name}: " in err and err.count("\n") == 1, err


def test_checkpoint_step_replaced_by_a_file_is_set_aside_with_a_warning(tmp_path):
    w = tmp_path / "w"
    training.train_and_evaluate(tiny(steps=8), str(w), stop_at_step=6)  # checkpoints 4, 6
    shutil.rmtree(w / "checkpoints" / "6")
    (w / "checkpoints" / "6").write_text("not a checkpoint")
    with pytest.warns(RuntimeWarning, match=r"checkpoint step 6 does not restore \(not a folder"):
        result = training.train_and_evaluate(tiny(steps=8), str(w))
    assert result["start_step"] == 4 and result["step"] == 8
    assert (w / "checkpoints-damaged" / "6").read_text() == "not a checkpoint"
    assert (w / "checkpoints" / "8").is_dir()


def test_stop_at_step_at_or_below_the_start_trains_nothing(tmp_path):
    result = training.train_and_evaluate(tiny(), str(tmp_path / "w"), stop_at_step=0)
    assert (result["step"], result["steps_run"], result["interrupted"]) == (0, 0, "stop_at_step")
    assert not (tmp_path / "w" / "checkpoints").exists() or not any(
        (tmp_path / "w" / "checkpoints").iterdir()
    )
    with pytest.raises(ValueError, match="stop_at_step: got -1"):
        training.train_and_evaluate(tiny(), str(tmp_path / "w"), stop_at_step=-1)
    with pytest.raises(TypeError, match=r"stop_at_step: got 2\.0"):
        training.train_and_evaluate(tiny(), str(tmp_path / "w"), stop_at_step=2.0)
