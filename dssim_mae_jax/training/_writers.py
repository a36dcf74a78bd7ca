"""Where a run's records go: one writer for `metrics.jsonl`, TensorBoard and the progress bar,
and the periodic actions that decide at which steps to log and to save.

Small equivalents of `clu.metric_writers.MultiWriter` and `clu.periodic_actions`, without
CLU's TensorFlow dependency.
"""

from __future__ import annotations

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
    """The lines of a `metrics.jsonl` with ``step <= upto`` (none if the file is missing)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("step", 0) <= upto]


class MetricWriter:
    """Sends each record to `metrics.jsonl`, TensorBoard and the tqdm progress bar.

    Only the chief process (process 0) writes files; every process keeps `records` (what
    `curves.png` is drawn from). On a resumed run, the lines logged after the checkpoint
    `start` are dropped from `metrics.jsonl` and TensorBoard: those steps run again.

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
        self.records = read_records(self._jsonl, start)
        self._tensorboard = None
        if chief:
            with open(self._jsonl, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.records)
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(
                os.path.join(workdir, "tensorboard"), purge_step=start if start else None
            )
        self._bar = tqdm(
            total=total,
            initial=start,
            disable=not (progress_bar and chief),
            dynamic_ncols=True,
            unit="step",
        )

    def advance(self) -> None:
        """One more step done (the progress bar)."""
        self._bar.update(1)

    def write_record(self, record: Mapping) -> None:
        """One training record: ``step``, ``phase`` and scalars."""
        self.records.append(dict(record))
        step = record["step"]
        if self.chief:
            with open(self._jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")
            for k, v in record.items():
                if k not in ("step", "phase"):
                    self._tensorboard.add_scalar(f"train/{k}", v, step)
            self._tensorboard.add_text("train/phase", record["phase"], step)
        self._bar.set_description(record["phase"])
        self._bar.set_postfix(
            loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.2f}", ssim=f"{record['ssim']:.3f}"
        )

    def write_eval(self, step: int, means: Mapping[str, Mapping[str, float]]) -> None:
        """Held-out metrics ``{"input": {...}, "model": {...}}`` to TensorBoard."""
        if self._tensorboard is not None:
            for which, m in means.items():
                for k, v in m.items():
                    self._tensorboard.add_scalar(f"eval/{which}/{k}", v, step)

    def close(self) -> None:
        self._bar.close()
        if self._tensorboard is not None:
            self._tensorboard.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
