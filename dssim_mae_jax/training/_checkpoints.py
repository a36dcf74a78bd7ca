"""Checkpoints with orbax: atomic saves (written to a temporary directory, then renamed), the
last k kept, restore of the latest onto the current device layout."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """A thin wrapper around `orbax.checkpoint.CheckpointManager` for a `TrainState`.

    Args:
      directory: where step directories (``checkpoints/<step>``) go; created if missing.
      keep: how many of the latest checkpoints to keep.
    """

    def __init__(self, directory: str, *, keep: int):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, state) -> None:
        """Saves `state` under its step (asynchronously; `wait` or `close` to finish)."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, target, step: int | None = None):
        """Restores `step` (default: the latest) with the structure, dtypes and shardings of
        `target` (a state of concrete or abstract arrays)."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
