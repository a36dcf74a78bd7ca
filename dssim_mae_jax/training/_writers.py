"""Where a run's records go: one writer for `metrics.jsonl`, TensorBoard and the progress bar,
and the periodic actions that decide at which steps to log and to save.

Small equivalents of `clu.metric_writers.MultiWriter` and `clu.periodic_actions`, without
CLU's TensorFlow dependency.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping


class PeriodicAction:
    """``action(step)`` is true every `every_steps` steps and at each step of `on_steps`."""

    def __init__(self, *, every_steps: int, on_steps: Iterable[int] = ()):
        self.every_steps = every_steps
        self.on_steps = frozenset(on_steps)

    def __call__(self, step: int) -> bool:
        return step % self.every_steps == 0 or step in self.on_steps


def write_json(path: str, obj) -> None:
    """Writes `obj` as indented JSON, atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_records(path: str, upto: int) -> list[dict]:
    """The lines of a `metrics.jsonl` with ``step <= upto`` (none if the file is missing).

    A line that is not JSON (the end of a line cut short by a killed run) is skipped.
    """
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                if line.strip():
                    records.append(json.loads(line))
    return [r for r in records if isinstance(r, dict) and r.get("step", 0) <= upto]


TENSORBOARD_DIR = "tensorboard"
_EVENTS_PREFIX = "events.out.tfevents"


def is_training_record(record: Mapping) -> bool:
    """Whether a `metrics.jsonl` line is a training record (not an ``event`` line)."""
    return "event" not in record


class MetricWriter:
    """Sends each record to `metrics.jsonl`, TensorBoard and the tqdm progress bar.

    Only the chief process (process 0) writes files; every process keeps `records` (the
    training records, what `curves.png` is drawn from). On a resumed run, the lines logged
    after the checkpoint `start` are dropped from `metrics.jsonl` (those steps run again), and
    the TensorBoard events are rewritten from the lines that stay: a new event file holds every
    kept record, the earlier event files are removed once it is written. So TensorBoard shows
    each logged step exactly once, however often the run was interrupted and resumed (its reader
    never sees a step go back, and no purge drops a step that was kept).

    Args:
      workdir: the run's folder.
      start: the step the run starts (or resumes) from.
      total: the run's total number of steps.
      chief: whether this process writes files.
      progress_bar: whether to show the progress bar (on the chief only).
    """

    def __init__(self, workdir: str, *, start: int, total: int, chief: bool, progress_bar: bool):
        from tqdm.auto import tqdm

        self.chief = chief
        self._jsonl = os.path.join(workdir, "metrics.jsonl")
        kept = read_records(self._jsonl, start)
        self.records = [r for r in kept if is_training_record(r)]
        self._tensorboard = None
        if chief:
            with open(self._jsonl, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            self._open_tensorboard(os.path.join(workdir, TENSORBOARD_DIR), kept)
        self._bar = tqdm(
            total=total,
            initial=start,
            disable=not (progress_bar and chief),
            dynamic_ncols=True,
            unit="step",
        )

    def _open_tensorboard(self, directory: str, kept: list[dict]) -> None:
        from tensorboardX import SummaryWriter

        os.makedirs(directory, exist_ok=True)
        old = {n for n in os.listdir(directory) if n.startswith(_EVENTS_PREFIX)}
        # A suffix of its own, so the new file never shares a name with an old one.
        suffix = f".{os.getpid()}.{len(old)}"
        self._tensorboard = SummaryWriter(directory, filename_suffix=suffix)
        for record in kept:
            self._emit(record)
        self._tensorboard.flush()
        for name in old:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))

    def _emit(self, record: Mapping) -> None:
        step = record["step"]
        if not is_training_record(record):
            self._tensorboard.add_text(f"run/{record['event']}", json.dumps(record), step)
            return
        for k, v in record.items():
            if k not in ("step", "phase"):
                self._tensorboard.add_scalar(f"train/{k}", v, step)
        self._tensorboard.add_text("train/phase", record["phase"], step)

    def advance(self) -> None:
        """One more step done (the progress bar)."""
        self._bar.update(1)

    def write_event(self, event: Mapping) -> None:
        """A line that is not a training record: ``{"step", "event", ...}`` (e.g. the run was
        extended), to `metrics.jsonl` and as TensorBoard text."""
        if self.chief:
            with open(self._jsonl, "a") as f:
                f.write(json.dumps(dict(event)) + "\n")
            self._emit(event)

    def write_record(self, record: Mapping) -> None:
        """One training record: ``step``, ``phase`` and scalars."""
        self.records.append(dict(record))
        if self.chief:
            with open(self._jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")
            self._emit(record)
        self._bar.set_description(record["phase"])
        shown = {"loss": f"{record['loss']:.4f}", "psnr": f"{record['psnr']:.2f}"}
        for k in ("ssim", "ms_ssim", "multi_sigma_ssim"):
            if k in record:
                shown[k] = f"{record[k]:.3f}"
        self._bar.set_postfix(**shown)

    def write_eval(self, step: int, means: Mapping[str, Mapping[str, float]]) -> None:
        """Held-out metrics ``{"input": {...}, "model": {...}}`` to TensorBoard."""
        if self._tensorboard is not None:
            for which, m in means.items():
                for k, v in m.items():
                    if isinstance(v, (int, float)):
                        self._tensorboard.add_scalar(f"eval/{which}/{k}", v, step)

    def close(self) -> None:
        self._bar.close()
        if self._tensorboard is not None:
            self._tensorboard.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
