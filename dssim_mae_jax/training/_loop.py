"""`train_and_evaluate(config, workdir)`: the whole run, resumable, on all local devices.

Read top to bottom: `_set_up` (validation, mesh, data, state, resume, the compiled step),
`_train` (one loop with periodic logging and checkpointing), `_evaluate` (held-out metrics
and plots). Records go through one `MetricWriter` (`metrics.jsonl`, TensorBoard, progress
bar).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import _distributed, _plots, _workdir
from ._checkpoints import Checkpointer
from ._config import GROUPS, Config, ConfigError
from ._data import (
    BatchSource,
    Prefetcher,
    StreamingData,
    check_same_data,
    find_images,
    open_data,
)
from ._evaluation import (
    check_eval_crop,
    conventions,
    evaluate_dataset,
    format_images,
    make_evaluator,
    make_probe,
    score_images,
)
from ._pipeline import to_float
from ._schedules import optimizer_from_config, schedule_from_config
from ._steps import TrainState, build_loss, create_train_state, train_step
from ._writers import MetricWriter, PeriodicAction, write_json

# Fields that do not change the trajectory: a run may be resumed with other values.
_BOOKKEEPING = frozenset(
    {
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_samples",
        "progress_bar",
        "prefetch",
        "num_devices",
        "distributed",
        "max_nonfinite",
        "data_workers",
    }
)


class NonFiniteLossError(RuntimeError):
    """The run diverged: `max_nonfinite` consecutive steps had a non-finite loss, gradient or
    update, or the held-out metrics of the final model are not finite."""


def train_and_evaluate(config: Config, workdir: str, *, stop_at_step: int | None = None) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), then evaluates.

    A `config.steps` larger than that of the run in `workdir` trains it longer: the run keeps
    its schedule (`config.schedule_steps` is set to its length, recorded in ``config.json`` and
    as an ``"extended"`` event line of ``metrics.jsonl``) and the steps past it continue the
    last phase at its final learning rates.

    Args:
      config: the run's configuration (validated here before any work starts).
      workdir: output folder: ``config.json``, ``data.json`` (with a data folder),
        ``metrics.jsonl``, TensorBoard events under ``tensorboard/``, ``checkpoints/``, and
        at the end ``eval.json``, ``curves.png`` and ``samples.png``. Locked
        (``train.lock``) for the whole call.
      stop_at_step: stop (as an interruption would) once this many steps are done, saving a
        checkpoint: a later call continues from there. A value at or below the step the run
        resumes from trains nothing. For notebooks and tests.

    Returns:
      A dict: ``step`` reached, ``start_step`` (the checkpoint step it resumed from, 0 for a
      new run), ``steps_run`` (``step - start_step``: trained by this call), ``interrupted``
      (a signal number, ``"stop_at_step"`` or ``None``), ``eval`` (as in ``eval.json``, when
      the run completed), ``trace_count`` of the train step, ``train_seconds`` and
      ``steps_per_second`` (of this call's steps), and the final ``state``.

    Raises:
      ValueError: an invalid config or data folder, a workdir that is not a writable folder,
        is in use by another run (its lock is held), or holds another run (another config, or
        checkpoints without their ``config.json``).
      NonFiniteLossError: the run diverged: `max_nonfinite` consecutive non-finite steps (no
        checkpoint written for them; the last good one stays), or non-finite held-out
        metrics (no ``eval.json`` written).
    """
    _check_stop_at_step(stop_at_step)
    with contextlib.ExitStack() as hold:  # the workdir lock, for the whole run
        run = _set_up(config, workdir, hold)
        config = run.config  # an extended run's config keeps the schedule it was trained on
        writer = hold.enter_context(
            MetricWriter(
                workdir,
                start=run.start,
                total=config.steps,
                chief=run.chief,
                progress_bar=config.progress_bar,
            )
        )
        t0 = time.perf_counter()
        try:
            if run.extension is not None:
                writer.write_event(run.extension)
            state, stop_reason = _train(run, writer, stop_at_step)
        finally:
            run.checkpoints.close()
        seconds = time.perf_counter() - t0
        step = int(jax.device_get(state.step))
        result = {
            "step": step,
            "start_step": run.start,
            "steps_run": step - run.start,
            "interrupted": stop_reason,
            "trace_count": run.step_fn.traces,
            "train_seconds": seconds,
            "steps_per_second": (step - run.start) / max(seconds, 1e-9),
            "state": state,
            "eval": None,
        }
        if stop_reason is None:
            result["eval"] = _evaluate(run, state, writer)
    return result


# ------------------------------------------------------------------------------ set-up
@dataclasses.dataclass
class _Run:
    """What `_set_up` hands the train loop."""

    config: Config
    workdir: str
    chief: bool
    dataset: StreamingData  # the index of the training images, the held-out images
    state: TrainState  # restored from the latest checkpoint when resuming
    start: int  # the step `state` is at
    checkpoints: Checkpointer
    step_fn: _Traced  # ``(state, pixels) -> (state, metrics)``, before jit
    train_step: Callable  # `step_fn`, jitted over the mesh
    make_batch: BatchSource  # the sharded (integer) batch of a step
    extension: dict | None  # the `metrics.jsonl` event of a run extended by a larger `steps`


def _set_up(config: Config, workdir: str, hold: contextlib.ExitStack) -> _Run:
    """Everything that can fail on bad input runs before the data loads or a file is written.

    The chief process takes the workdir's lock into `hold` (released when the run ends).
    """
    config.validate()
    check_eval_crop(config)
    if config.distributed:
        _distributed.initialize()  # detected from the cluster (no-op if already started)
    loss_fn, preset_weights = build_loss(config)
    mesh = make_mesh(config)
    chief = jax.process_index() == 0
    if chief:
        hold.enter_context(_workdir.locked(workdir))
    resuming, config, extension = _check_resumable(config, workdir)
    fingerprint = _check_data(config, workdir, resuming=resuming)
    dataset = open_data(config)
    _check_patch_fits(config, dataset)
    check_same_data(dataset.index)
    check_eval_crop(config, dataset.eval, dataset.eval_names)
    if chief:
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
        if fingerprint is not None:
            write_json(os.path.join(workdir, _workdir.DATA_RECORD), fingerprint)

    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    tx, rates = optimizer_from_config(config)
    state = jax.device_put(create_train_state(config, tx), replicated)
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    state, start = checkpoints.restore_newest(state)  # a damaged newest one is set aside
    if start:
        if chief:  # said whether or not the progress bar shows it
            done = " (already finished: evaluating only)" if start >= config.steps else ""
            print(
                f"resuming {workdir} from step {start} of {config.steps}{done}",
                file=sys.stderr,
                flush=True,
            )

    step_fn = _Traced(
        pixel_train_step(config, loss_fn, schedule_from_config(config, rates, preset_weights))
    )
    jitted = jax.jit(
        step_fn,
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=() if jax.default_backend() == "cpu" else (0,),
    )
    make_batch = BatchSource(config, dataset.index, batch_sharding, start)
    if extension is not None:
        extension["step"] = start
    return _Run(
        config,
        workdir,
        chief,
        dataset,
        state,
        start,
        checkpoints,
        step_fn,
        jitted,
        make_batch,
        extension,
    )


def pixel_train_step(config: Config, loss_fn: Callable, schedule: Callable) -> Callable:
    """``(state, pixels) -> (state, metrics)``: `train_step` on an integer batch, converted to
    float on the device (what the loop jits; the lowering tests export it)."""
    step = functools.partial(train_step, config=config, loss_fn=loss_fn, schedule=schedule)
    return lambda state, pixels: step(state, to_float(pixels, channels=config.channels))


class _Traced:
    """Wraps the train step; `traces` counts how often JAX traced it (1 for a whole run)."""

    def __init__(self, fn: Callable):
        self.fn, self.traces = fn, 0

    def __call__(self, state, batch):
        self.traces += 1  # runs only while JAX traces
        return self.fn(state, batch)


def make_mesh(config: Config) -> jax.sharding.Mesh:
    """A 1-D ``data`` mesh over the devices the run uses (all of them by default)."""
    devices = jax.devices()
    n = config.num_devices or len(devices)
    if n > len(devices):
        raise ConfigError(f"config.num_devices: got {n}, but only {len(devices)} device(s) exist")
    if jax.process_count() > 1 and n != len(devices):
        raise ConfigError("config.num_devices: multi-host runs use all devices (set it to 0)")
    if config.batch_size % n:
        raise ConfigError(
            f"config.batch_size: got {config.batch_size}, expected a multiple of the "
            f"{n} device(s) the batch is split over"
        )
    return jax.sharding.Mesh(np.asarray(devices[:n]), ("data",))


EXTENSION_RULE = (
    "steps past schedule_steps continue the last phase: its loss weights, and each group's "
    "learning rate at its final value"
)


def _check_stop_at_step(stop_at_step) -> None:
    if stop_at_step is None:
        return
    if not isinstance(stop_at_step, (int, np.integer)) or isinstance(stop_at_step, bool):
        raise TypeError(f"stop_at_step: got {stop_at_step!r}, expected an integer or None")
    if stop_at_step < 0:
        raise ValueError(f"stop_at_step: got {stop_at_step!r}, expected an integer >= 0")


def read_saved_config(path: str) -> Config:
    """The config in a workdir's `config.json`; a `ConfigError` naming the file if it does
    not read."""
    try:
        with open(path) as f:
            return Config.from_dict(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); the run's config is unreadable") from None
    except (ConfigError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path}: not a config of this version ({e})") from None


def _check_resumable(config: Config, workdir: str) -> tuple[bool, Config, dict | None]:
    """Whether `workdir` holds a run to resume, the config to run it with, and the record of an
    extension (a larger `steps`; else ``None``). Raises if the workdir holds another run.

    A larger `steps` than the saved run's continues it: the config keeps the saved run's
    schedule length (`schedule_steps`), so the steps already trained are not changed.
    """
    path = os.path.join(workdir, "config.json")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    # Only a run with checkpoints is resumed; a workdir without any may take a new config.
    if not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
        return False, config, None
    if not os.path.exists(path):
        raise ConfigError(
            f"workdir {workdir!r} has checkpoints but no config.json: the config they were "
            "trained with is unknown, so they cannot be resumed safely; use another --workdir, "
            "or delete this one to start over"
        )
    saved_config = read_saved_config(path)
    extension = None
    if config.steps >= saved_config.steps and config.schedule_steps == 0:
        # The schedule the saved run was trained on: its own schedule_steps, else its steps.
        keep = saved_config.schedule_steps or (
            saved_config.steps if config.steps > saved_config.steps else 0
        )
        config = config.replace(schedule_steps=keep).validate()
    if config.steps > saved_config.steps:
        extension = {
            "event": "extended",
            "from_steps": saved_config.steps,
            "to_steps": config.steps,
            "schedule_steps": config.schedule_total,
            "rule": EXTENSION_RULE,
        }
    saved, new = saved_config.to_dict(), config.to_dict()
    # What the trajectory depends on is the schedule's length, however it was written.
    saved["schedule_steps"], new["schedule_steps"] = (
        saved_config.schedule_total,
        config.schedule_total,
    )
    ignored = _BOOKKEEPING | ({"steps"} if extension is not None else set())
    diff = sorted(k for k in new if k not in ignored and new[k] != saved.get(k))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {new[k]!r}" for k in diff)
        raise ConfigError(
            f"workdir {workdir!r} holds a run with a different config ({details}); "
            "use another --workdir, or delete this one to start over"
        )
    return True, config, extension


def _check_patch_fits(config: Config, dataset: StreamingData) -> None:
    """Every training image holds a `patch_size` crop (a user folder's smaller images were
    skipped already; the bundled photographs are checked here)."""
    small = [e for e in dataset.index.train if min(e.height, e.width) < config.patch_size]
    if small:
        shown = ", ".join(f"{e.name!r} ({e.width}x{e.height})" for e in small[:3])
        raise ConfigError(
            f"config.patch_size: got {config.patch_size}, larger than training image(s) "
            f"{shown}{' ...' if len(small) > 3 else ''}; use a smaller --patch-size"
        )


def _check_data(config: Config, workdir: str, *, resuming: bool) -> dict | None:
    """The data folder's fingerprint (names, sizes, times), checked against the one recorded
    when the run being resumed started; ``None`` for the bundled photographs."""
    if not config.data_dir:
        return None
    fingerprint = _workdir.data_fingerprint(find_images(config.data_dir), config.data_dir)
    touched = _workdir.check_data(workdir, fingerprint, resuming=resuming)
    if touched:
        warnings.warn(
            f"{len(touched)} data file(s) have a new modification time but the same size since "
            f"this run was checkpointed (e.g. {touched[0]!r}); resuming as if unchanged",
            RuntimeWarning,
            stacklevel=3,
        )
    return fingerprint


# ------------------------------------------------------------------------------ training
class _Stop:
    """Set by SIGINT / SIGTERM; the loop saves a checkpoint and returns at the next step."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        # A second Ctrl-C interrupts at once.
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)


def _train(run: _Run, writer: MetricWriter, stop_at_step: int | None):
    """Steps from `run.start` to `config.steps`; returns ``(state, stop_reason)``.

    A record is logged every `log_every` steps, at the last step of each phase (so no record
    averages two phases) and at the end; a checkpoint is saved every `checkpoint_every` steps,
    at the end, and when the loop stops early (a signal or `stop_at_step`).
    """
    c = run.config
    if stop_at_step is not None and stop_at_step <= run.start < c.steps:
        return run.state, "stop_at_step"  # nothing to train before the stop
    ends = (*c.phase_boundaries[1:], c.schedule_total, c.steps)
    log = PeriodicAction(every_steps=c.log_every, on_steps=ends)
    save = PeriodicAction(every_steps=c.checkpoint_every, on_steps=(c.steps,))
    state, stop_reason, pending = run.state, None, []
    rate = _Rate(run.start)
    loader = Prefetcher(run.make_batch, run.start, c.steps, c.prefetch)
    # Held-out PSNR of a few fixed crops at every logged step (the curve in curves.png).
    probe = make_probe(c, state.apply_fn, run.dataset.eval, seed=c.seed + 2)
    try:
        with _Stop() as stop:
            for index, batch in loader:
                state, metrics = run.train_step(state, batch)
                pending.append(metrics)
                step = index + 1
                writer.advance()
                if log(step):
                    record = _record(c, step, pending, state, rate(step))
                    writer.write_record({**record, **probe(state.params)})
                    _stop_if_diverged(c, jax.device_get(pending[-1]), step, run.checkpoints)
                    pending = []
                if _stop_requested(stop, step, log_step=log.every_steps):
                    stop_reason = stop.signum or "peer_signal"
                elif stop_at_step is not None and stop_at_step <= step < c.steps:
                    stop_reason = "stop_at_step"
                if save(step) or stop_reason is not None:
                    if int(jax.device_get(state.nonfinite)) < c.max_nonfinite:
                        run.checkpoints.save(state)
                if stop_reason is not None:
                    break
    finally:
        loader.close()
        run.make_batch.close()
    return state, stop_reason


def _stop_requested(stop: _Stop, step: int, *, log_step: int) -> bool:
    """Whether to stop after `step`. With several processes they agree every `log_step`
    steps, so all stop at the same step: one stopping alone would leave the others blocked."""
    if jax.process_count() == 1:
        return stop.signum is not None
    # JAX's preemption notifier catches a SIGTERM that arrives before `_Stop` is installed.
    preempted = _distributed.preemption_reached(step)  # called at every step, on every host
    return preempted or (step % log_step == 0 and _distributed.any_process(stop.signum is not None))


class _Rate:
    """``rate(step)``: steps per second since the previous call (or since `start`)."""

    def __init__(self, start: int):
        self._time, self._step = time.perf_counter(), start

    def __call__(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self._step) / max(now - self._time, 1e-9)
        self._time, self._step = now, step
        return rate


# The similarity a loss reports, under its function's name.
SIMILARITY_KEYS = ("ssim", "ms_ssim", "multi_sigma_ssim")


def _record(
    config: Config, step: int, pending: list, state: TrainState, steps_per_second: float
) -> dict:
    """One `metrics.jsonl` line: the means of the finite steps since the last line."""
    host = jax.device_get(pending)
    record = {"step": step, "phase": config.phases[int(host[-1]["phase"])].name}
    for k in ("loss", "structural", "mae", "mean", "psnr", *SIMILARITY_KEYS):
        if k not in host[-1]:
            continue  # a similarity the loss does not compute
        vals = [float(m[k]) for m in host if bool(m["finite"])]
        record[k] = float(np.mean(vals)) if vals else float("nan")
    for k in (*[f"lr_{g}" for g in GROUPS], "structural_weight", "mae_weight", "mean_weight"):
        if k in host[-1]:  # (a custom schedule may carry no mean_weight)
            record[k] = float(host[-1][k])
    record["nonfinite_total"] = int(jax.device_get(state.nonfinite_total))
    record["steps_per_second"] = steps_per_second
    return record


def _stop_if_diverged(config: Config, last: dict, step: int, checkpoints: Checkpointer) -> None:
    nonfinite = int(last["nonfinite"])
    if nonfinite >= config.max_nonfinite:
        good = checkpoints.latest_step()
        raise NonFiniteLossError(
            f"training diverged at step {step}: {nonfinite} consecutive steps had a "
            f"non-finite loss, gradient or update (max_nonfinite={config.max_nonfinite}); "
            "their updates were skipped. The last good checkpoint is "
            + (f"step {good} in {checkpoints.directory}" if good else "none")
            + ". Lower the learning rates or check the data."
        )


# ------------------------------------------------------------------------------ evaluation
def _evaluate(run: _Run, state: TrainState, writer: MetricWriter) -> dict:
    """Held-out metrics (`eval.json`, TensorBoard) and the plots, from the final state."""
    config = run.config
    evaluate = make_evaluator(config, state.apply_fn)
    params = jax.device_get(state.params)
    means, shown = evaluate_dataset(
        config, evaluate, params, run.dataset.eval, seed=config.seed + 1
    )
    bad = sorted(f"{w}.{k}" for w, m in means.items() for k, v in m.items() if not np.isfinite(v))
    if bad:
        raise NonFiniteLossError(
            f"the model diverged: its held-out metrics {', '.join(bad)} are not finite; "
            "no eval.json written"
        )
    # Each held-out image by name, with its colour cast (eval.json and the console), and how
    # the numbers were computed.
    means = {
        **means,
        "images": score_images(config, shown, run.dataset.eval_names),
        "conventions": conventions(config, means),
    }
    if run.chief:
        write_json(os.path.join(run.workdir, "eval.json"), means)
        print("held-out images, model (input):\n" + format_images(means["images"]), flush=True)
        writer.write_eval(
            int(jax.device_get(state.step)), {k: means[k] for k in ("input", "model")}
        )
        names = [(s, p.name) for s, p in zip(config.phase_boundaries, config.phases, strict=True)]
        _plots.plot_curves(writer.records, names, os.path.join(run.workdir, "curves.png"))
        if config.num_samples:
            path = os.path.join(run.workdir, "samples.png")
            _plots.plot_samples(shown, path, num=config.num_samples, names=run.dataset.eval_names)
    return means
