"""`train_and_evaluate(config, workdir)`: the whole run, resumable, on all local devices.

Read top to bottom: `_set_up` (validation, mesh, data, state, resume, the compiled step),
`_train` (one loop with periodic logging and checkpointing), `_evaluate` (held-out metrics
and plots). Records go through one `MetricWriter` (`metrics.jsonl`, TensorBoard, progress
bar).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import _plots
from ._checkpoints import Checkpointer
from ._config import GROUPS, Config, ConfigError
from ._data import Dataset, Prefetcher, load_dataset, sample_batch
from ._evaluation import evaluate_dataset, make_evaluator
from ._schedules import make_optimizer, make_schedule
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
    }
)


class NonFiniteLossError(RuntimeError):
    """Raised when `max_nonfinite` consecutive steps had a non-finite loss or gradient."""


def train_and_evaluate(config: Config, workdir: str, *, stop_at_step: int | None = None) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), then evaluates.

    Args:
      config: the run's configuration (validated here before any work starts).
      workdir: output folder: ``config.json``, ``metrics.jsonl``, TensorBoard events under
        ``tensorboard/``, ``checkpoints/``, and at the end ``eval.json``, ``curves.png`` and
        ``samples.png``.
      stop_at_step: stop (as an interruption would) once this many steps are done, saving a
        checkpoint: a later call continues from there. For notebooks and tests.

    Returns:
      A dict: ``step`` reached, ``start_step`` (the checkpoint step it resumed from, 0 for a
      new run), ``steps_run`` (``step - start_step``: trained by this call), ``interrupted``
      (a signal number, ``"stop_at_step"`` or ``None``), ``eval`` (as in ``eval.json``, when
      the run completed), ``trace_count`` of the train step, ``train_seconds`` and
      ``steps_per_second`` (of this call's steps), and the final ``state``.

    Raises:
      ValueError: an invalid config or data folder, or a workdir holding another run.
      NonFiniteLossError: `max_nonfinite` consecutive non-finite steps (no checkpoint written
        for them; the last good one stays).
    """
    run = _set_up(config, workdir)
    writer = MetricWriter(
        workdir,
        start=run.start,
        total=config.steps,
        chief=run.chief,
        progress_bar=config.progress_bar,
    )
    with writer:
        t0 = time.perf_counter()
        try:
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
            "trace_count": run.traces[0],
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
    dataset: Dataset
    state: TrainState  # restored from the latest checkpoint when resuming
    start: int  # the step `state` is at
    checkpoints: Checkpointer
    train_step: Callable  # jitted ``(state, batch) -> (state, metrics)``
    traces: list  # [how often JAX traced `train_step`]
    make_batch: Callable[[int], jax.Array]  # the sharded batch of a step


def _set_up(config: Config, workdir: str) -> _Run:
    """Everything that can fail on bad input runs before the data loads or a file is written."""
    config.validate()
    if config.distributed:
        jax.distributed.initialize()
    loss_fn, preset_weights = build_loss(config)
    mesh = make_mesh(config)
    _check_resumable(config, workdir)
    dataset = load_dataset(config)
    chief = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if chief:
        write_json(os.path.join(workdir, "config.json"), config.to_dict())

    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    tx, rates = make_optimizer(config)
    state = jax.device_put(create_train_state(config, tx), replicated)
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    start = checkpoints.latest_step() or 0
    if start:
        state = checkpoints.restore(state, start)
        if chief:  # said whether or not the progress bar shows it
            done = " (already finished: evaluating only)" if start >= config.steps else ""
            print(
                f"resuming {workdir} from step {start} of {config.steps}{done}",
                file=sys.stderr,
                flush=True,
            )

    traces = [0]
    step = functools.partial(
        train_step,
        config=config,
        loss_fn=loss_fn,
        schedule=make_schedule(config, rates, preset_weights),
    )

    def counted_step(state, batch):
        traces[0] += 1  # runs only while JAX traces
        return step(state, batch)

    jitted = jax.jit(
        counted_step,
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=() if jax.default_backend() == "cpu" else (0,),
    )
    make_batch = functools.partial(_make_batch, config, dataset, batch_sharding)
    return _Run(
        config, workdir, chief, dataset, state, start, checkpoints, jitted, traces, make_batch
    )


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


def _check_resumable(config: Config, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    # Only a run with checkpoints is resumed; a workdir without any may take a new config.
    if not os.path.exists(path) or not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
        return
    with open(path) as f:
        saved = Config.from_dict(json.load(f)).to_dict()
    new = config.to_dict()
    diff = sorted(k for k in new if k not in _BOOKKEEPING and new[k] != saved.get(k))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {new[k]!r}" for k in diff)
        raise ConfigError(
            f"workdir {workdir!r} holds a run with a different config ({details}); "
            "use another --workdir, or delete this one to start over"
        )


def _make_batch(config: Config, dataset: Dataset, sharding: NamedSharding, step: int):
    """The global batch of `step`; each process builds and places its own slice."""
    per_process = config.batch_size // jax.process_count()
    lo = jax.process_index() * per_process
    clean = sample_batch(
        dataset.train,
        seed=config.seed,
        step=step,
        batch_size=config.batch_size,
        patch_size=config.patch_size,
    )
    global_shape = (config.batch_size, config.patch_size, config.patch_size, config.channels)
    return jax.make_array_from_process_local_data(
        sharding, clean[lo : lo + per_process], global_shape
    )


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
    log = PeriodicAction(every_steps=c.log_every, on_steps=(*c.phase_boundaries[1:], c.steps))
    save = PeriodicAction(every_steps=c.checkpoint_every, on_steps=(c.steps,))
    state, stop_reason, pending = run.state, None, []
    clock = [time.perf_counter(), run.start]  # time and step of the last record
    loader = Prefetcher(run.make_batch, run.start, c.steps, c.prefetch)
    try:
        with _Stop() as stop:
            for index, batch in loader:
                state, metrics = run.train_step(state, batch)
                pending.append(metrics)
                step = index + 1
                writer.advance()
                if log(step):
                    writer.write_record(_record(c, step, pending, state, clock))
                    _stop_if_diverged(c, jax.device_get(pending[-1]), step, run.checkpoints)
                    pending = []
                if stop.signum is not None:
                    stop_reason = stop.signum
                elif stop_at_step is not None and stop_at_step <= step < c.steps:
                    stop_reason = "stop_at_step"
                if save(step) or stop_reason is not None:
                    if int(jax.device_get(state.nonfinite)) < c.max_nonfinite:
                        run.checkpoints.save(state)
                if stop_reason is not None:
                    break
    finally:
        loader.close()
    return state, stop_reason


def _record(config: Config, step: int, pending: list, state: TrainState, clock: list) -> dict:
    """One `metrics.jsonl` line: the means of the finite steps since the last line."""
    host = jax.device_get(pending)
    record = {"step": step, "phase": config.phases[int(host[-1]["phase"])].name}
    for k in ("loss", "mae", "dssim", "ssim", "psnr"):
        vals = [float(m[k]) for m in host if k in m and bool(m["finite"])]
        record[k] = float(np.mean(vals)) if vals else float("nan")
    for k in (*[f"lr_{g}" for g in GROUPS], "w_ssim", "w_mae"):
        record[k] = float(host[-1][k])
    record["nonfinite_total"] = int(jax.device_get(state.nonfinite_total))
    now = time.perf_counter()
    record["steps_per_second"] = (step - clock[1]) / max(now - clock[0], 1e-9)
    clock[:] = [now, step]
    return record


def _stop_if_diverged(config: Config, last: dict, step: int, checkpoints: Checkpointer) -> None:
    nonfinite = int(last["nonfinite"])
    if nonfinite >= config.max_nonfinite:
        good = checkpoints.latest_step()
        raise NonFiniteLossError(
            f"stopped at step {step}: {nonfinite} consecutive steps had a "
            f"non-finite loss or gradient (max_nonfinite={config.max_nonfinite}); "
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
    if run.chief:
        write_json(os.path.join(run.workdir, "eval.json"), means)
        writer.write_eval(int(jax.device_get(state.step)), means)
        names = [(s, p.name) for s, p in zip(config.phase_boundaries, config.phases, strict=True)]
        _plots.plot_curves(writer.records, names, os.path.join(run.workdir, "curves.png"))
        if config.num_samples:
            path = os.path.join(run.workdir, "samples.png")
            _plots.plot_samples(shown, path, num=config.num_samples)
    return means
