"""`train_and_evaluate(config, workdir)`: the whole run, resumable, on all local devices."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import _plots
from ._checkpoints import Checkpointer
from ._config import GROUPS, Config, ConfigError
from ._data import Prefetcher, load_dataset, sample_batch
from ._schedules import phase_boundaries
from ._steps import TrainStep, build_loss, create_train_state, evaluate_dataset, make_evaluator

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


def _read_records(path: str, upto: int) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("step", 0) <= upto]


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


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
    config.validate()
    if config.distributed:
        jax.distributed.initialize()
    loss_fn, weights = build_loss(config)
    mesh = make_mesh(config)
    _check_resumable(config, workdir)
    dataset = load_dataset(config)
    chief = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if chief:
        _write_json(os.path.join(workdir, "config.json"), config.to_dict())

    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))
    state, model_def, tx = create_train_state(config)
    state = jax.device_put(state, replicated)
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    start = checkpoints.latest_step() or 0
    if start:
        state = checkpoints.restore(state, start)
    step_fn = TrainStep(config, model_def, tx, loss_fn, weights)
    train_step = jax.jit(
        step_fn,
        in_shardings=(replicated, data_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=() if jax.default_backend() == "cpu" else (0,),
    )

    global_shape = (config.batch_size, config.patch_size, config.patch_size, config.channels)
    per_process = config.batch_size // jax.process_count()
    lo = jax.process_index() * per_process

    def make_batch(step):
        clean = sample_batch(
            dataset.train,
            seed=config.seed,
            step=step,
            batch_size=config.batch_size,
            patch_size=config.patch_size,
        )
        return jax.make_array_from_process_local_data(
            data_sharding, clean[lo : lo + per_process], global_shape
        )

    phases = config.phase_list
    starts = phase_boundaries(config)
    # A metrics line is also logged at the last step of each phase, so no line averages steps
    # of two phases.
    phase_ends = frozenset(starts[1:])
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    records = _read_records(metrics_path, start)
    writer = None
    if chief:
        # Drop what was logged after the checkpoint we resume from: those steps run again.
        with open(metrics_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(
            os.path.join(workdir, "tensorboard"), purge_step=start if start else None
        )
    from tqdm.auto import tqdm

    if chief and start:
        # Said whether or not the progress bar shows it.
        done = " (already finished: evaluating only)" if start >= config.steps else ""
        print(
            f"resuming {workdir} from step {start} of {config.steps}{done}",
            file=sys.stderr,
            flush=True,
        )

    stop_reason = None
    pending: list[dict] = []
    last_log_time, last_log_step = time.perf_counter(), start
    t_start = time.perf_counter()
    bar = tqdm(
        total=config.steps,
        initial=start,
        disable=not (config.progress_bar and chief),
        dynamic_ncols=True,
        unit="step",
    )
    loader = Prefetcher(make_batch, start, config.steps, config.prefetch)
    step = start
    try:
        with _Stop() as stop:
            for step_index, batch in loader:
                state, metrics = train_step(state, batch)
                pending.append(metrics)
                step = step_index + 1
                bar.update(1)
                last = step == config.steps
                if step % config.log_every == 0 or last or step in phase_ends:
                    host = jax.device_get(pending)
                    pending = []
                    now = time.perf_counter()
                    record = {"step": step, "phase": phases[int(host[-1]["phase"])].name}
                    for k in ("loss", "mae", "dssim", "ssim", "psnr"):
                        vals = [float(m[k]) for m in host if k in m and bool(m["finite"])]
                        record[k] = float(np.mean(vals)) if vals else float("nan")
                    for k in (*[f"lr_{g}" for g in GROUPS], "w_ssim", "w_mae"):
                        record[k] = float(host[-1][k])
                    record["nonfinite_total"] = int(jax.device_get(state.nonfinite_total))
                    record["steps_per_second"] = (step - last_log_step) / max(
                        now - last_log_time, 1e-9
                    )
                    last_log_time, last_log_step = now, step
                    records.append(record)
                    if chief:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(record) + "\n")
                        for k, v in record.items():
                            if k not in ("step", "phase"):
                                writer.add_scalar(f"train/{k}", v, step)
                        writer.add_text("train/phase", record["phase"], step)
                    bar.set_description(record["phase"])
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        psnr=f"{record['psnr']:.2f}",
                        ssim=f"{record['ssim']:.3f}",
                    )
                    nonfinite = int(host[-1]["nonfinite"])
                    if nonfinite >= config.max_nonfinite:
                        good = checkpoints.latest_step()
                        raise NonFiniteLossError(
                            f"stopped at step {step}: {nonfinite} consecutive steps had a "
                            f"non-finite loss or gradient (max_nonfinite={config.max_nonfinite}); "
                            "their updates were skipped. The last good checkpoint is "
                            + (f"step {good} in {checkpoints.directory}" if good else "none")
                            + ". Lower the learning rates or check the data."
                        )
                interrupt = stop.signum is not None
                at_stop = stop_at_step is not None and step >= stop_at_step and not last
                if step % config.checkpoint_every == 0 or last or interrupt or at_stop:
                    if int(jax.device_get(state.nonfinite)) < config.max_nonfinite:
                        checkpoints.save(state)
                if interrupt or at_stop:
                    stop_reason = stop.signum if interrupt else "stop_at_step"
                    break
    finally:
        loader.close()
        bar.close()
        checkpoints.close()
        if writer is not None:
            writer.flush()

    train_seconds = time.perf_counter() - t_start
    result = {
        "step": step,
        "start_step": start,
        "steps_run": step - start,
        "interrupted": stop_reason,
        "trace_count": step_fn.traces,
        "train_seconds": train_seconds,
        "steps_per_second": (step - start) / max(train_seconds, 1e-9),
        "state": state,
        "eval": None,
    }
    if stop_reason is not None:
        if writer is not None:
            writer.close()
        return result

    evaluate = make_evaluator(config, model_def)
    params = jax.device_get(state.params)
    means, shown = evaluate_dataset(config, evaluate, params, dataset.eval, seed=config.seed + 1)
    result["eval"] = means
    if chief:
        _write_json(os.path.join(workdir, "eval.json"), means)
        for which, m in means.items():
            for k, v in m.items():
                writer.add_scalar(f"eval/{which}/{k}", v, step)
        writer.close()
        names = [(s, p.name) for s, p in zip(starts, phases, strict=True)]
        _plots.plot_curves(records, names, os.path.join(workdir, "curves.png"))
        if config.num_samples:
            _plots.plot_samples(shown, os.path.join(workdir, "samples.png"), num=config.num_samples)
    return result
