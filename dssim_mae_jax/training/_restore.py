"""Applying a trained model: `load_restorer(workdir)` restores images of any size.

The model is rebuilt from the run's ``config.json`` and its newest checkpoint is restored by
the same code a resumed run uses (`Checkpointer.restore_newest`). Images larger than a pixel
budget are restored in overlapping tiles: the models are fully convolutional, so an output
pixel depends only on input pixels within the model's receptive field (one pixel per 3x3
convolution, plus the bicubic kernel's reach for super-resolution). Each tile carries a margin
wider than that field and only its centre is kept, so the tiled result is the untiled one up to
float rounding.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._checkpoints import Checkpointer
from ._config import Config, ConfigError
from ._schedules import make_optimizer
from ._steps import create_train_state

# BT.601 luma, as `to_channels` reduces colour to gray for a one-channel model.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


class Restorer:
    """``restorer(image) -> restored``: a trained model applied to one image of any size.

    Built by :func:`load_restorer`. The model runs under `jax.jit` (compiled once per tile
    shape); images larger than `max_pixels` are restored in overlapping tiles.

    Attributes:
      config: the run's :class:`Config` (``config.task``, ``config.scale``, ...).
      step: the training step of the restored checkpoint.
      scale: output size / input size (``config.scale`` for super-resolution, else 1).
      margin: input pixels of context each tile carries beyond the part it keeps.
      max_pixels: input pixels restored in one call; larger images are tiled.
    """

    def __init__(self, config: Config, params, apply_fn: Callable, step: int, *, max_pixels):
        self.config = config
        self.step = step
        self.scale = config.scale if config.task == "sr" else 1
        # Receptive field, in input pixels: one per 3x3 convolution, and for SR the reach of
        # the bicubic kernel (2 pixels); rounded up with room to spare.
        reach = config.depth + (2 if config.task == "sr" else 0)
        self.margin = 4 * math.ceil((reach + 2) / 4)
        side = math.isqrt(max_pixels) if max_pixels > 0 else 0
        if side - 2 * self.margin < 16:
            raise ValueError(
                f"max_pixels: got {max_pixels}, expected at least {(2 * self.margin + 16) ** 2} "
                f"(a tile of {2 * self.margin + 16} pixels a side: 16 kept and the "
                f"{self.margin}-pixel margins)"
            )
        self.max_pixels = max_pixels
        self._tile = side
        self._params = params
        self._model = jax.jit(lambda p, x: apply_fn(p, x).astype(jnp.float32))

    def __call__(self, image: jax.typing.ArrayLike) -> np.ndarray:
        """Restores `image`.

        Args:
          image: [H, W] or [H, W, C] with 1 (gray) or 3 (RGB) channels: uint8 or uint16
            pixels, or floats in [0, 1]. A gray image given to a colour model is replicated to
            3 channels and the result reduced to its BT.601 luma; a colour image given to a
            gray model is restored one channel at a time.

        Returns:
          float32 [H * scale, W * scale, C] (the input's channels), not clipped to [0, 1].

        Raises:
          ValueError: another rank or channel count, or an image smaller than 1x1.
          TypeError: a dtype that is neither unsigned integer nor floating point.
        """
        x = _as_float(image)
        c, want = x.shape[-1], self.config.channels
        if c == want:
            return self._restore(x[None])[0]
        if want == 3:  # gray image, colour model
            out = self._restore(np.repeat(x, 3, axis=-1)[None])[0]
            return (out @ _LUMA)[..., None]
        # colour image, gray model: the channels as a batch of gray images
        out = self._restore(np.moveaxis(x, -1, 0)[..., None])
        return np.moveaxis(out[..., 0], 0, -1)

    def tiles(self, height: int, width: int) -> int:
        """How many tiles an image of `height` x `width` input pixels is restored in."""
        if height * width <= self.max_pixels:
            return 1
        core = self._tile - 2 * self.margin
        return math.ceil(height / core) * math.ceil(width / core)

    def _restore(self, x: np.ndarray) -> np.ndarray:
        """[N, H, W, C] float32 -> [N, H*s, W*s, C], whole or in overlapping tiles."""
        n, h, w, c = x.shape
        if h * w <= self.max_pixels:
            return np.asarray(self._model(self._params, x))
        s, m = self.scale, self.margin
        core = self._tile - 2 * m
        out = np.empty((n, h * s, w * s, c), np.float32)
        for top in range(0, h, core):
            for left in range(0, w, core):
                bottom, right = min(top + core, h), min(left + core, w)
                # The tile: the kept part and up to `m` pixels of context on each side
                # (none beyond the image's own edges, which the model sees as untiled).
                t0, l0 = max(top - m, 0), max(left - m, 0)
                t1, l1 = min(bottom + m, h), min(right + m, w)
                y = np.asarray(self._model(self._params, x[:, t0:t1, l0:l1]))
                out[:, top * s : bottom * s, left * s : right * s] = y[
                    :, (top - t0) * s : (bottom - t0) * s, (left - l0) * s : (right - l0) * s
                ]
        return out


def _as_float(image) -> np.ndarray:
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"image: expected [H, W] or [H, W, C] with 1 (gray) or 3 (RGB) channels, got shape "
            f"{x.shape}"
        )
    if min(x.shape[:2]) < 1:
        raise ValueError(f"image: expected at least 1x1 pixels, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.unsignedinteger):
        return x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise TypeError(f"image: expected uint8/uint16 pixels or floats in [0, 1], got {x.dtype}")


def read_config(workdir: str) -> Config:
    """The :class:`Config` saved in ``<workdir>/config.json``.

    Raises:
      ConfigError: no such file, or one that is not a valid config (the message names it).
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"workdir {workdir!r}: no config.json (not a train.py workdir?)")
    try:
        with open(path) as f:
            return Config.from_dict(json.load(f))
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{path}: not a valid train.py config ({e})") from e


def load_restorer(workdir: str, *, max_pixels: int = 1 << 20) -> Restorer:
    """Loads the newest checkpoint of a `train.py` run as an ``image -> restored`` function.

    A damaged newest checkpoint is set aside with a warning, as a resumed run does, and the
    next newest is used. A checkpoint of a run that did not finish is used with a warning.

    Args:
      workdir: the run's folder (``config.json`` and ``checkpoints/``).
      max_pixels: the memory budget: images with more input pixels are restored in
        overlapping tiles of at most this many pixels. At the default, 2**20, XLA:CPU
        plans 256 MB of temporaries for the default denoiser and 288 MB (plus the 192 MB
        output) for super-resolution x4 (`memory_analysis()` of the compiled call).

    Returns:
      A :class:`Restorer`: ``restorer(image)`` gives the restored float32 image, its
      ``config`` and ``scale`` describe the run.

    Raises:
      ValueError: `workdir` has no valid ``config.json`` or no checkpoint that restores, or
        `max_pixels` leaves no room for a tile.

    Examples:
      >>> from dssim_mae_jax import training
      >>> restore = training.load_restorer("runs/default")  # doctest: +SKIP
      >>> restored = restore(noisy_uint8_image)  # float32 [H, W, 3]  # doctest: +SKIP
    """
    config = read_config(workdir)
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory) or not os.listdir(directory):
        raise ConfigError(f"workdir {workdir!r} has no checkpoint: train it first")
    tx, _ = make_optimizer(config)
    template = create_train_state(config, tx)
    checkpoints = Checkpointer(directory, keep=config.keep_checkpoints)
    try:
        state, step = checkpoints.restore_newest(template)
    finally:
        checkpoints.close()
    if step == 0:
        raise ConfigError(
            f"workdir {workdir!r} has no finished checkpoint that restores (see the warnings "
            "above, if any): train it first"
        )
    if step < config.steps:
        warnings.warn(
            f"workdir {workdir!r}: using the checkpoint of step {step} of {config.steps} "
            "(the run did not finish)",
            RuntimeWarning,
            stacklevel=2,
        )
    return Restorer(config, state.params, state.apply_fn, step, max_pixels=max_pixels)
