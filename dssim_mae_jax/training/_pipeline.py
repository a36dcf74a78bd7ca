"""The streaming training input: integer patches cut on Grain worker processes, floats on the
device.

Batches are a pure function of ``(seed, step)``, whatever the number of workers, hosts or
devices, so a resumed run sees the batches an uninterrupted one would (no iterator state to
checkpoint). The batch of a step is planned from a generator seeded with ``(seed, step)``:

* Images are visited in *pools* of `pool_images` images, each pool serving `pool_steps`
  consecutive steps; pools are consecutive runs of a seeded permutation of the training images
  (a new permutation every pass), so every image is visited equally often. With at most
  `pool_images` training images (the bundled photographs) the pool is all of them and the
  batches are exactly those of :func:`sample_batch` on the in-RAM float images.
* Each patch: an image of the pool with probability proportional to its area, a uniformly
  random crop, one of the 8 flips / rotations of the square.

A pool lets each worker decode each of its images once per pool rather than once per patch;
the workers split a pool's images between them (image ``j`` of the pool goes to part
``j % workers``), so adding workers adds decoding throughput instead of repeating decodes.
Memory is bounded by the pool, not the folder: each worker caches at most
``ceil(pool_images / workers)`` decoded images.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import threading
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._images import ImageEntry, read_image

# Seed tag of the pool permutations (kept apart from the (seed, step) batch streams).
_POOL_TAG = 0x706F6F6C


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Where each patch of a global batch comes from; every array is [batch_size]."""

    image: np.ndarray  # index into the training entries
    slot: np.ndarray  # position of that image in the step's pool
    top: np.ndarray
    left: np.ndarray
    rot: np.ndarray  # quarter turns (np.rot90's k)
    flip: np.ndarray  # 1: mirror left-right after the rotation


def pool_of(block: int, *, num_images: int, pool_images: int, seed: int) -> np.ndarray:
    """Training-image indices of pool `block`: consecutive runs of per-pass permutations."""
    if num_images <= pool_images:
        return np.arange(num_images)
    out: list[int] = []
    perms: dict[int, np.ndarray] = {}
    for pos in range(block * pool_images, (block + 1) * pool_images):
        epoch, i = divmod(pos, num_images)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, _POOL_TAG, epoch]).permutation(num_images)
        out.append(int(perms[epoch][i]))
    return np.asarray(list(dict.fromkeys(out)))  # a pass boundary may repeat an image


def plan_batch(
    heights: np.ndarray,
    widths: np.ndarray,
    *,
    seed: int,
    step: int,
    batch_size: int,
    patch_size: int,
    pool_images: int,
    pool_steps: int,
) -> BatchPlan:
    """The plan of the global batch of `step`: a pure function of ``(seed, step)``."""
    pool = pool_of(step // pool_steps, num_images=len(heights), pool_images=pool_images, seed=seed)
    rng = np.random.default_rng([seed, step])
    areas = heights[pool].astype(np.float64) * widths[pool]
    slot = rng.choice(len(pool), size=batch_size, p=areas / areas.sum())
    image = pool[slot]
    top, left, rot, flip = (np.empty(batch_size, np.int64) for _ in range(4))
    for b, i in enumerate(image):  # the draw order of `sample_batch`
        top[b] = rng.integers(0, heights[i] - patch_size + 1)
        left[b] = rng.integers(0, widths[i] - patch_size + 1)
        rot[b], flip[b] = rng.integers(0, 4), rng.integers(0, 2)
    return BatchPlan(image, slot, top, left, rot, flip)


def cut_patch(img: np.ndarray, top: int, left: int, size: int, rot: int, flip: int) -> np.ndarray:
    """The `size` square at (`top`, `left`) of `img`, rotated `rot` quarter turns, mirrored."""
    patch = np.rot90(img[top : top + size, left : left + size], rot)
    return patch[:, ::-1] if flip else patch


@dataclasses.dataclass
class PatchMaker:
    """Element ``e`` of the Grain dataset -> ``(step, positions, patches)``: the patches of
    one part (of `parts`) of this process's share of step ``start + e // parts``.

    Runs on the worker processes (it is pickled there without its cache). `positions` index
    the process-local batch; `patches` are uint8/uint16 [n, P, P, wire_channels].
    """

    entries: tuple[ImageEntry, ...]
    seed: int
    batch_size: int
    patch_size: int
    lo: int  # this process's share of the global batch: [lo, lo + count)
    count: int
    parts: int
    start: int
    pool_images: int
    pool_steps: int
    wire_channels: int
    wire_dtype: np.dtype
    cache_size: int = 0  # decoded images kept (0: enough for this part of a pool)

    def __post_init__(self):
        self._heights = np.asarray([e.height for e in self.entries])
        self._widths = np.asarray([e.width for e in self.entries])
        if not self.cache_size:
            pool = min(self.pool_images, len(self.entries))
            self.cache_size = math.ceil(pool / self.parts)
        self._cache: collections.OrderedDict = collections.OrderedDict()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = collections.OrderedDict()
        return state

    def image(self, i: int) -> np.ndarray:
        """Training image `i`, decoded (least recently used ones are dropped)."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = read_image(self.entries[i])
        self._cache[i] = img
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return img

    def __call__(self, element: int) -> tuple[int, np.ndarray, np.ndarray]:
        step, part = self.start + element // self.parts, element % self.parts
        plan = plan_batch(
            self._heights,
            self._widths,
            seed=self.seed,
            step=step,
            batch_size=self.batch_size,
            patch_size=self.patch_size,
            pool_images=self.pool_images,
            pool_steps=self.pool_steps,
        )
        mine = [
            b for b in range(self.lo, self.lo + self.count) if plan.slot[b] % self.parts == part
        ]
        p, c = self.patch_size, self.wire_channels
        out = np.empty((len(mine), p, p, c), self.wire_dtype)
        for n, b in enumerate(mine):
            img = self.image(int(plan.image[b]))
            patch = cut_patch(img, plan.top[b], plan.left[b], p, plan.rot[b], plan.flip[b])
            if patch.dtype != out.dtype:  # 8-bit image in a 16-bit batch: v * 257 is exact
                patch = patch.astype(out.dtype) * np.asarray(257, out.dtype)
            out[n] = patch  # broadcasts gray over 3 channels
        return step, np.asarray(mine, np.int64) - self.lo, out


class PatchStream:
    """The process-local integer batches of steps ``start, ..., stop - 1``, in order.

    Args:
      entries: the training images.
      wire_channels, wire_dtype: channels and dtype of the batches (see `ImageIndex`).
      seed, batch_size, patch_size: as in the config; `batch_size` is the global batch.
      start, stop: the steps to produce.
      process_index, process_count: this process's share is the `process_index`-th of
        `process_count` equal slices of every global batch.
      workers: Grain worker processes decoding and cutting (0: in this process).
      buffer: elements each worker prepares ahead.
      pool_images, pool_steps: see the module docstring.

    Iterating yields ``(step, batch)`` with `batch` [batch_size / process_count, P, P, C].
    """

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        *,
        wire_channels: int,
        wire_dtype,
        seed: int,
        batch_size: int,
        patch_size: int,
        start: int,
        stop: int,
        process_index: int = 0,
        process_count: int = 1,
        workers: int = 0,
        buffer: int = 2,
        pool_images: int = 16,
        pool_steps: int = 32,
    ):
        import grain

        count = batch_size // process_count
        self._parts = max(workers, 1)
        self._shape = (count, patch_size, patch_size, wire_channels)
        self._dtype = np.dtype(wire_dtype)
        self._step, self._stop = start, stop
        maker = PatchMaker(
            entries=tuple(entries),
            seed=seed,
            batch_size=batch_size,
            patch_size=patch_size,
            lo=process_index * count,
            count=count,
            parts=self._parts,
            start=start,
            pool_images=pool_images,
            pool_steps=pool_steps,
            wire_channels=wire_channels,
            wire_dtype=self._dtype,
        )
        self._iter = None
        if stop > start:
            ds = grain.MapDataset.range((stop - start) * self._parts).map(maker)
            ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
            # Patches travel pickled through a pipe, not through shared memory: Grain frees
            # shared blocks from a background thread, and blocks still pending at exit make
            # Python's resource tracker warn of leaks. The 512x512 benchmark
            # (docs/benchmarks.md) runs through it.
            options = grain.experimental.DatasetOptions(min_shm_size=1 << 62)
            ds = grain.experimental.WithOptionsIterDataset(ds, options)
            if workers:
                _absl_flags_parsed()
                options = grain.MultiprocessingOptions(
                    num_workers=workers, per_worker_buffer_size=max(buffer, 1)
                )
                # Workers end when this process dies, even by SIGKILL (no cleanup runs).
                ds = ds.mp_prefetch(
                    options, worker_init_fn=functools.partial(exit_with_parent, os.getpid())
                )
            self._iter = iter(ds)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._step >= self._stop:
            raise StopIteration
        out = np.empty(self._shape, self._dtype)
        filled = 0
        for _ in range(self._parts):
            step, positions, patches = next(self._iter)
            if step != self._step:
                raise RuntimeError(
                    f"input pipeline out of order: got step {step}, not {self._step}"
                )
            out[positions] = patches
            filled += len(positions)
        if filled != self._shape[0]:
            raise RuntimeError(f"input pipeline: step {self._step} got {filled} patches")
        self._step += 1
        return step, out

    def close(self) -> None:
        """Stops the worker processes."""
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()
        self._iter = None


def exit_with_parent(
    parent_pid: int, worker_index: int = 0, worker_count: int = 1, *, interval: float = 0.2
) -> None:
    """Makes this (worker) process exit within `interval` seconds of `parent_pid` dying.

    Passed to Grain as the workers' ``worker_init_fn`` (hence the unused index and count).
    A killed parent runs no cleanup, so its workers would live on; and since each worker
    holds the write end of multiprocessing's resource-tracker pipe, the tracker too would
    wait for ever. A daemon thread polls ``os.getppid()``: when the parent dies the worker is
    re-parented (to init or a subreaper) and exits at once; the tracker then sees the pipe
    close and exits as well. Polling is used instead of Linux's ``PR_SET_PDEATHSIG``, which
    fires when the *thread* that started the worker ends (Grain starts workers from whichever
    thread first asks for a batch, e.g. a prefetch thread), and which exists only on Linux.

    Args:
      parent_pid: the process whose death ends this one (the one that started the workers).
      worker_index: Grain's worker index (unused).
      worker_count: Grain's number of workers (unused).
      interval: seconds between two checks.
    """
    del worker_index, worker_count

    def orphaned() -> bool:
        return os.getppid() != parent_pid

    if orphaned():  # the parent died before this worker got here
        os._exit(1)

    def watch():
        while not orphaned():
            time.sleep(interval)
        os._exit(1)  # no cleanup: the pipes to the dead parent are gone

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _absl_flags_parsed() -> None:
    # Grain 0.2.x reads absl flags when it starts workers and fails if no absl app parsed them
    # (`UnparsedFlagAccessError`); marking them parsed keeps every default.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def to_float(batch: jax.typing.ArrayLike, *, channels: int) -> jax.Array:
    """Integer patches [..., C] -> float32 in [0, 1] with `channels` channels (traceable).

    Runs on the device: the host sends 1 or 2 bytes per sample, not 4. A gray batch is
    replicated to 3 channels; a colour one reduced to BT.601 luma
    (``0.299 R + 0.587 G + 0.114 B``) for ``channels == 1``.
    """
    x = jnp.asarray(batch)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"batch: expected uint8 or uint16 pixels, got dtype {x.dtype}")
    y = x.astype(jnp.float32) / float(jnp.iinfo(x.dtype).max)
    if y.shape[-1] == channels:
        return y
    if channels == 3:
        return jnp.broadcast_to(y, (*y.shape[:-1], 3))
    luma = jnp.asarray([0.299, 0.587, 0.114], jnp.float32)
    return (y @ luma)[..., None]
