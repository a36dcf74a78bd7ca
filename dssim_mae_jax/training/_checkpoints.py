"""Checkpoints with orbax: atomic saves (written to a temporary directory, then renamed), the
last k kept, and a resume that survives a damaged checkpoint.

Two guarantees on top of orbax: a state whose parameters are not all finite is never saved,
and a checkpoint that does not restore (truncated files, missing metadata, an empty folder,
non-finite parameters) is moved aside, never deleted, and the next newest one is tried.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

DAMAGED_DIR = "checkpoints-damaged"


class NonFiniteStateError(ValueError):
    """A state with non-finite parameters was about to be saved."""


def params_finite(state) -> bool:
    """Whether every parameter of `state` is finite (reads them back to the host)."""
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(state.params))


_UNAWAITED_ORBAX_READ = r"coroutine 'Store\._get_array_metadatas' was never awaited"


def _drop_closed_event_loop_errors() -> None:
    """Drops, from now on, the noise a failed orbax restore leaves: "Event loop is closed"
    errors and "never awaited" warnings of orbax's metadata reads.

    When one read of a damaged checkpoint fails, orbax closes its event loop while other
    tensorstore reads are still pending; each of their callbacks later reports
    ``RuntimeError: Event loop is closed`` through `sys.unraisablehook` (a traceback apiece on
    stderr), from another thread and at no predictable time, so a filter that is removed when
    the restore returns misses some of them. They are noise of the attempt, already reported as
    one warning, so the filter stays for the rest of the process; it passes every other error
    on to the hook it replaced. Installed once (unless something replaced it since).
    """
    # The same early close leaves orbax's un-started metadata reads behind; each is reported,
    # when collected, as "coroutine ... was never awaited". Only that orbax coroutine is named
    # (`filterwarnings` replaces an identical filter, so calling again adds none).
    warnings.filterwarnings(
        "ignore", message=_UNAWAITED_ORBAX_READ, category=RuntimeWarning, append=False
    )
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_event_loop", False):
        return

    def hook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and "Event loop is closed" in str(error)):
            previous(unraisable)

    hook._drops_closed_event_loop = True
    sys.unraisablehook = hook


class Checkpointer:
    """A thin wrapper around `orbax.checkpoint.CheckpointManager` for a `TrainState`.

    Args:
      directory: where step directories (``checkpoints/<step>``) go; created if missing.
      keep: how many of the latest checkpoints to keep.
    """

    def __init__(self, directory: str, *, keep: int):
        self.directory = os.path.abspath(directory)
        self._keep = keep
        self._set_aside_non_directories()
        self._manager = self._open()

    def _set_aside_non_directories(self) -> None:
        """A step entry that is not a folder (a regular file, a link, ...) is not a checkpoint:
        moved aside like a damaged one, so a later save does not silently replace it."""
        if not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.isdigit() and (os.path.islink(path) or not os.path.isdir(path)):
                self._move_aside(name, "not a folder", reopen=False)

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, state) -> None:
        """Saves `state` under its step (asynchronously; `wait` or `close` to finish).

        Raises:
          NonFiniteStateError: a parameter is NaN or infinite (nothing is written).
        """
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return
        if not params_finite(state):
            raise NonFiniteStateError(f"step {step}: the parameters are not all finite")
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, target, step: int | None = None):
        """Restores `step` (default: the latest) with the structure, dtypes and shardings of
        `target` (a state of concrete or abstract arrays)."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_newest(self, target):
        """The newest checkpoint that restores with finite parameters: ``(state, step)``.

        A checkpoint that fails is reported (a `RuntimeWarning` naming its step and the
        reason), moved to ``<workdir>/checkpoints-damaged/<step>`` (kept for inspection, and
        out of the way of the step that will be saved again), and the next newest is tried.
        Returns ``(target, 0)`` when none restores.
        """
        steps = sorted(self.all_steps(), reverse=True)
        if steps:
            _drop_closed_event_loop_errors()  # before a read can fail
        for step in steps:
            try:
                state = self.restore(target, step)
                if not params_finite(state):
                    raise NonFiniteStateError("its parameters are not all finite")
            except Exception as e:  # any failure means "does not restore"
                self._set_aside(step, e)
                continue
            return state, step
        return target, 0

    def _set_aside(self, step: int, error: Exception) -> None:
        lines = str(error).strip().splitlines() or [""]
        self._move_aside(str(step), f"{type(error).__name__}: {lines[0][:300]}", reopen=True)

    def _move_aside(self, step: str, reason: str, *, reopen: bool) -> None:
        parent = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
        os.makedirs(parent, exist_ok=True)
        dest = os.path.join(parent, step)
        n = 1
        while os.path.lexists(dest):
            dest, n = os.path.join(parent, f"{step}.{n}"), n + 1
        shutil.move(os.path.join(self.directory, step), dest)
        if reopen:
            # A failed restore can leave the manager's cached layout wrong: start a fresh one.
            self._manager.close()
            self._manager = self._open()
        warnings.warn(
            f"checkpoint step {step} does not restore ({reason}); moved to {dest}, "
            "trying the next newest",
            RuntimeWarning,
            stacklevel=3,
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
