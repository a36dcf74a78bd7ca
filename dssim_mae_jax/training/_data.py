"""Images in, batches out: loading folders or the bundled photographs, deterministic patches,
a background prefetcher, and the (on-device) degradations of each task.

Batches are a pure function of ``(seed, step)``: a resumed run sees the same batches as an
uninterrupted one, whatever the number of devices or hosts.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._color import bicubic_downsample
from ._config import Config, ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# Bundled scikit-image photographs that load offline (no pooch download). `chelsea` and
# `coffee` are held out for evaluation; `cat` is the same photograph as `chelsea`, so unused.
BUNDLED_TRAIN = (
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "camera",
    "moon",
    "coins",
    "clock",
    "brick",
    "gravel",
)
BUNDLED_EVAL = ("chelsea", "coffee")


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


# PIL modes of 16-bit grayscale images ("I" is how some PIL versions open 16-bit PNGs).
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _load_file(path: str) -> np.ndarray:
    """A PNG/JPEG as uint8 (or uint16 for 16-bit files) [H, W(, C)], upright per its EXIF."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        # Phone cameras store the sensor's orientation in EXIF instead of rotating the pixels.
        return _image_array(ImageOps.exif_transpose(im))


def _image_array(im) -> np.ndarray:
    if im.mode in _GRAY16_MODES:
        arr = np.asarray(im)
        if im.mode == "I":  # int32 holding 16-bit values
            arr = np.clip(arr, 0, 65535)
        # Native-endian uint16, so `to_channels` divides by 65535 (not 255).
        return arr.astype(np.uint16)
    # Pillow opens 16-bit RGB(A) PNGs as 8-bit "RGB"/"RGBA" (the high byte of each
    # sample): correct colours at 8-bit precision, handled below.
    if im.mode not in ("L", "RGB", "LA", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    return np.asarray(im)


def find_images(data_dir: str) -> list[str]:
    """PNG/JPEG files under `data_dir`, recursively, sorted."""
    if not os.path.isdir(data_dir):
        raise ConfigError(f"config.data_dir: {data_dir!r} is not a directory")
    out = []
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        out += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(out)


def _bundled(channels: int) -> Dataset:
    import skimage.data

    train = tuple(to_channels(getattr(skimage.data, n)(), channels) for n in BUNDLED_TRAIN)
    ev = tuple(to_channels(getattr(skimage.data, n)(), channels) for n in BUNDLED_EVAL)
    return Dataset(train, ev, BUNDLED_TRAIN, BUNDLED_EVAL)


def load_dataset(config: Config) -> Dataset:
    """Loads the images named by `config.data_dir` (or the bundled photographs).

    Unreadable files and images smaller than a training patch are skipped with a warning
    naming them. Raises ``ValueError`` when no usable image remains.
    """
    min_side = config.patch_size
    if not config.data_dir:
        return _bundled(config.channels)
    paths = find_images(config.data_dir)
    images, names, skipped = [], [], []
    for p in paths:
        try:
            img = to_channels(_load_file(p), config.channels)
        except Exception as e:  # any decoder failure means "unreadable"
            skipped.append(f"{p} ({type(e).__name__}: {e})")
            continue
        if min(img.shape[:2]) < min_side:
            skipped.append(f"{p} (size {img.shape[1]}x{img.shape[0]} < patch_size {min_side})")
            continue
        images.append(img)
        names.append(os.path.relpath(p, config.data_dir))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unusable image file(s): " + "; ".join(skipped),
            RuntimeWarning,
            stacklevel=2,
        )
    if not images:
        raise ConfigError(
            f"config.data_dir: no usable PNG/JPEG image (at least {min_side}x{min_side} "
            f"pixels) under {config.data_dir!r} ({len(paths)} candidate file(s))"
        )
    if len(images) == 1:
        warnings.warn(
            f"only one usable image in {config.data_dir!r}: it is used for training and "
            "evaluation, so the held-out metrics are not held out",
            RuntimeWarning,
            stacklevel=2,
        )
        return Dataset(tuple(images), tuple(images), tuple(names), tuple(names))
    n_eval = min(config.num_eval_images, len(images) - 1)
    if n_eval < config.num_eval_images:
        warnings.warn(
            f"{config.data_dir!r} has {len(images)} usable image(s), fewer than "
            f"num_eval_images + 1 = {config.num_eval_images + 1}: holding out only {n_eval} "
            f"(not {config.num_eval_images}) so that {len(images) - n_eval} remain for training",
            RuntimeWarning,
            stacklevel=2,
        )
    return Dataset(
        tuple(images[:-n_eval]),
        tuple(images[-n_eval:]),
        tuple(names[:-n_eval]),
        tuple(names[-n_eval:]),
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
