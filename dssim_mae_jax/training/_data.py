"""Images in, batches out: the data of a run (an index of the files, the held-out images),
the streamed training batches placed on the mesh, the in-RAM loader for notebooks, a
background prefetcher, and the (on-device) degradations of each task.

Batches are a pure function of ``(seed, step)``: a resumed run sees the same batches as an
uninterrupted one, whatever the number of devices, hosts or input workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _distributed
from ._color import bicubic_downsample
from ._config import Config, ConfigError
from ._images import (
    ImageEntry,
    ImageIndex,
    candidate_files,
    index_bundled,
    index_folder,
    read_image,
)
from ._pipeline import PatchStream


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Training and held-out images as float32 arrays in [0, 1], each [H, W, C]."""

    train: tuple[np.ndarray, ...]
    eval: tuple[np.ndarray, ...]
    train_names: tuple[str, ...]
    eval_names: tuple[str, ...]


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8/bool/float [H, W(, C)] -> float32 [H, W, channels] in [0, 1] (alpha dropped)."""
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.float32)
    elif np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float32) / float(np.iinfo(img.dtype).max)
    else:
        img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ValueError(f"expected a [H, W] or [H, W, C] image, got shape {img.shape}")
    if img.shape[-1] in (2, 4):  # gray + alpha, RGBA
        img = img[..., :-1]
    if img.shape[-1] == channels:
        return np.ascontiguousarray(img)
    if channels == 3:
        return np.repeat(img[..., :1], 3, axis=-1)
    # BT.601 luma for RGB -> 1 channel.
    return (img[..., :3] @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None]


def find_images(data_dir: str) -> list[str]:
    """The image files under `data_dir` (recursive, sorted), regular files only."""
    return candidate_files(data_dir)[0]


def index_images(config: Config) -> ImageIndex:
    """The training and held-out images of `config`, from the file headers (nothing decoded).

    Files that are not regular, unreadable, smaller than a training patch or larger than
    `max_image_pixels` are skipped with one warning naming each.

    Raises:
      ValueError: `data_dir` is not a directory or holds no usable image.
    """
    if not config.data_dir:
        return index_bundled()
    return index_folder(
        config.data_dir,
        min_side=config.patch_size,
        max_pixels=config.max_image_pixels,
        num_eval=config.num_eval_images,
    )


def decode_all(entries: Sequence[ImageEntry], channels: int) -> tuple[np.ndarray, ...]:
    """Decodes `entries` to float32 [H, W, channels] in [0, 1] (for the held-out images)."""
    return tuple(to_channels(read_image(e), channels) for e in entries)


def load_dataset(config: Config) -> Dataset:
    """Loads every image named by `config.data_dir` (or the bundled photographs) into RAM.

    The in-memory form of :func:`index_images` (same files, skips and held-out split), for
    notebooks and small folders; `train.py` streams the training images instead.

    Raises:
      ValueError: `data_dir` is not a directory, holds no usable image, or an image's data is
        truncated or incomplete.
    """
    index = index_images(config)
    return Dataset(
        decode_all(index.train, config.channels),
        decode_all(index.eval, config.channels),
        tuple(e.name for e in index.train),
        tuple(e.name for e in index.eval),
    )


# ------------------------------------------------------------------ streamed training data
@dataclasses.dataclass(frozen=True)
class StreamingData:
    """What a training run holds in memory: the index, and the held-out images decoded."""

    index: ImageIndex
    eval: tuple[np.ndarray, ...]  # float32 [H, W, C] in [0, 1]

    @property
    def eval_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.index.eval)


def open_data(config: Config) -> StreamingData:
    """Indexes the data of `config` and decodes only its held-out images."""
    index = index_images(config)
    return StreamingData(index, decode_all(index.eval, config.channels))


def resolve_workers(config: Config, index: ImageIndex) -> int:
    """`config.data_workers`, with -1 (auto) resolved: 0 (decode in this process) when every
    training image fits in one pool (each is decoded once), else half the CPUs, 1 to 8."""
    if config.data_workers >= 0:
        return config.data_workers
    if len(index.train) <= config.pool_images:
        return 0
    return min(8, max(1, (os.cpu_count() or 2) // 2))


class BatchSource:
    """``source(step)`` -> the global integer batch of `step` on `sharding` (steps in order).

    Each process streams its own slice of every global batch (`PatchStream`) and
    `jax.make_array_from_process_local_data` assembles the global array across processes.
    Pixels stay uint8 / uint16 until the jitted step converts them (`to_float`).
    """

    def __init__(self, config: Config, index: ImageIndex, sharding, start: int):
        self._sharding = sharding
        p = config.patch_size
        self._shape = (config.batch_size, p, p, index.wire_channels)
        self._stream = PatchStream(
            index.train,
            wire_channels=index.wire_channels,
            wire_dtype=index.wire_dtype,
            seed=config.seed,
            batch_size=config.batch_size,
            patch_size=p,
            start=start,
            stop=config.steps,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            workers=resolve_workers(config, index),
            buffer=max(config.prefetch, 1),
            pool_images=config.pool_images,
            pool_steps=config.pool_steps,
        )

    def __call__(self, step: int) -> jax.Array:
        got, local = next(self._stream)
        if got != step:
            raise RuntimeError(f"batches requested out of order: step {step}, stream at {got}")
        return jax.make_array_from_process_local_data(self._sharding, local, self._shape)

    def close(self) -> None:
        self._stream.close()


def check_same_data(index: ImageIndex) -> None:
    """Refuses a multi-host run whose hosts see different images: each host reads its own
    slices of every batch from its own view of the data folder.

    Raises:
      ValueError: names, file sizes or image sizes differ between processes.
    """
    layout = json.dumps([(e.name, e.size, e.height, e.width) for e in index.train + index.eval])
    if not _distributed.same_on_all_processes(layout):
        raise ConfigError(
            "config.data_dir: the processes see different training images (names, file "
            "sizes or image sizes differ between hosts); give every host the same data"
        )


def center_crop(img: np.ndarray, size: int, multiple: int = 1) -> np.ndarray:
    """Center crop to at most ``size`` per side, each side a multiple of `multiple`."""
    h, w = img.shape[:2]
    th = min(h, size) // multiple * multiple
    tw = min(w, size) // multiple * multiple
    top, left = (h - th) // 2, (w - tw) // 2
    return img[top : top + th, left : left + tw]


def sample_batch(
    images: Sequence[np.ndarray], *, seed: int, step: int, batch_size: int, patch_size: int
) -> np.ndarray:
    """The clean training batch of `step`: [B, P, P, C] float32, a pure function of (seed, step).

    Each element: an image chosen with probability proportional to its area, a uniformly random
    crop, and one of the 8 flips/rotations of the square.
    """
    rng = np.random.default_rng([seed, step])
    areas = np.asarray([im.shape[0] * im.shape[1] for im in images], np.float64)
    which = rng.choice(len(images), size=batch_size, p=areas / areas.sum())
    out = np.empty((batch_size, patch_size, patch_size, images[0].shape[-1]), np.float32)
    for b, i in enumerate(which):
        im = images[i]
        top = rng.integers(0, im.shape[0] - patch_size + 1)
        left = rng.integers(0, im.shape[1] - patch_size + 1)
        patch = im[top : top + patch_size, left : left + patch_size]
        k, flip = rng.integers(0, 4), rng.integers(0, 2)
        patch = np.rot90(patch, k)
        out[b] = patch[:, ::-1] if flip else patch
    return out


class Prefetcher:
    """Prepares the batches of steps ``start, start+1, ...`` in a background thread.

    `make(step)` builds the host batch and places it on the devices (`jax.device_put` of a
    sharded array runs asynchronously), so the accelerator does not wait on the host. With
    ``size == 0`` batches are built inline.
    """

    def __init__(self, make: Callable[[int], jax.Array], start: int, stop: int, size: int):
        self._make, self._next, self._stop, self._size = make, start, stop, size
        self._queue: queue.Queue = queue.Queue(maxsize=max(size, 1))
        self._halt = threading.Event()
        self._thread = None
        if size > 0:
            self._thread = threading.Thread(target=self._work, daemon=True, name="prefetch")
            self._thread.start()

    def _work(self):
        step = self._next
        while step < self._stop and not self._halt.is_set():
            try:
                item = (step, self._make(step), None)
            except BaseException as e:  # re-raised in the consumer
                item = (step, None, e)
            while not self._halt.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += 1

    def __iter__(self) -> Iterator[tuple[int, jax.Array]]:
        return self

    def __next__(self) -> tuple[int, jax.Array]:
        if self._thread is None:
            if self._next >= self._stop:
                raise StopIteration
            step, self._next = self._next, self._next + 1
            return step, self._make(step)
        if self._next >= self._stop:
            raise StopIteration
        step, batch, err = self._queue.get()
        if err is not None:
            raise err
        self._next = step + 1
        return step, batch

    def close(self):
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ------------------------------------------------------------------ degradations (on device)
def degrade(config: Config, clean: jax.Array, key: jax.Array) -> jax.Array:
    """The model input for clean images [..., H, W, C] in [0, 1] (traceable).

    ``denoise``: add Gaussian noise of std `noise_sigma`/255 (not clipped, as in DnCNN).
    ``sr``: bicubic (antialiased) downsampling by `scale`.
    """
    if config.task == "denoise":
        noise = jax.random.normal(key, clean.shape, jnp.float32)
        return clean + (config.noise_sigma / 255.0) * noise
    return bicubic_downsample(clean, config.scale)
