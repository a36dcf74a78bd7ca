"""Shape buckets: mixed-size images packed into a few padded shapes (host side, NumPy).

An image of ``h x w`` pixels goes to the bucket whose sides are the smallest
sizes of a geometric ladder (``quantum * growth**k``, rounded up to a multiple
of ``quantum``) that hold it; a portrait image is transposed first (every
metric here is symmetric under transposition), so only buckets with
``height <= width`` occur. The batch axis is padded to a power of two (at most
``max_batch``), so a bucket compiles once per batch size used. The real sizes
travel with the batch and the scores weight every padded position out
(:mod:`dssim_mae_jax.metrics._scores`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import numpy as np

# Bucket sides are multiples of this: MS-SSIM's 5-scale pyramid halves a bucket
# four times, and each level must stay even for its 2x2 pooling.
DEFAULT_QUANTUM = 16
DEFAULT_MAX_BATCH = 8


def check_growth(growth) -> None:
    """Raises unless `growth` is None or a number > 1."""
    if growth is None:
        return
    if isinstance(growth, bool) or not isinstance(growth, int | float) or not growth > 1:
        raise ValueError(f"`bucket_growth` must be None or a number > 1, got {growth!r}.")


def ladder_side(n: int, *, growth: float, quantum: int) -> int:
    """The smallest ladder size ``>= n``: ``quantum * ceil(growth**k)`` rounded up to ``quantum``.

    Examples:
      >>> [ladder_side(n, growth=2.0, quantum=16) for n in (1, 16, 17, 300, 513)]
      [16, 16, 32, 512, 1024]
    """
    k = 0
    while True:
        side = quantum * math.ceil(growth**k - 1e-9)
        if side >= n:
            return side
        k += 1


class Item(NamedTuple):
    """One image as packed: its index in the call, arrays (H, W, C) and key."""

    index: int
    prediction: np.ndarray
    target: np.ndarray
    mask: np.ndarray | None
    key: Hashable  # extra static key (e.g. the MATLAB downsampling factor)


class Packed(NamedTuple):
    """One padded batch of a bucket."""

    key: Hashable
    predictions: np.ndarray  # [B, H, W, C]
    targets: np.ndarray
    mask: np.ndarray | None  # [B, H, W, 1 or C] (zeros outside each image)
    sizes: np.ndarray  # [B, 2] int32: real (height, width)
    present: np.ndarray  # [B] bool: a real image (not batch padding)
    indices: np.ndarray  # [B] int32: index in the call (-1 for padding)


def pack(
    items: Sequence[Item],
    *,
    growth: float,
    quantum: int = DEFAULT_QUANTUM,
    max_batch: int = DEFAULT_MAX_BATCH,
    min_side: Callable[[Hashable], int] | None = None,
) -> list[Packed]:
    """Groups `items` by bucket and returns the padded batches, in a fixed order.

    Args:
      items: the images (``[H, W, C]`` each, prediction and target alike).
      growth: ratio between consecutive bucket sides (> 1).
      quantum: bucket sides are multiples of it.
      max_batch: largest batch of one compiled call.
      min_side: optional smallest bucket side for an item key.

    Returns:
      One :class:`Packed` batch per bucket and chunk of `max_batch` images.
    """
    groups: dict[tuple, list[tuple[Item, bool]]] = {}
    for item in items:
        h, w = item.prediction.shape[:2]
        transpose = h > w
        a, b = (w, h) if transpose else (h, w)
        floor = 0 if min_side is None else min_side(item.key)
        shape = tuple(ladder_side(max(n, floor), growth=growth, quantum=quantum) for n in (a, b))
        dtypes = (item.prediction.dtype.str, item.target.dtype.str)
        mask_shape = None if item.mask is None else item.mask.shape[-1]
        group = (shape, item.key, item.prediction.shape[2], dtypes, mask_shape)
        groups.setdefault(group, []).append((item, transpose))
    out = []
    for (shape, key, channels, _, mask_channels), members in sorted(
        groups.items(), key=lambda kv: repr(kv[0])
    ):
        for start in range(0, len(members), max_batch):
            chunk = members[start : start + max_batch]
            size = 1 << (len(chunk) - 1).bit_length()
            out.append(_pad_chunk(chunk, size, shape, channels, mask_channels, key))
    return out


def _pad_chunk(chunk, size, shape, channels, mask_channels, key) -> Packed:
    first = chunk[0][0]
    preds = np.zeros((size, *shape, channels), first.prediction.dtype)
    targets = np.zeros((size, *shape, channels), first.target.dtype)
    mask = None if mask_channels is None else np.zeros((size, *shape, mask_channels), np.float32)
    # Batch padding gets the full bucket as its size (it is never counted).
    sizes = np.tile(np.asarray(shape, np.int32), (size, 1))
    present = np.zeros((size,), bool)
    indices = np.full((size,), -1, np.int32)
    for i, (item, transpose) in enumerate(chunk):
        arrays = [item.prediction, item.target] + ([item.mask] if mask is not None else [])
        if transpose:
            arrays = [np.swapaxes(a, 0, 1) for a in arrays]
        h, w = arrays[0].shape[:2]
        preds[i, :h, :w] = arrays[0]
        targets[i, :h, :w] = arrays[1]
        if mask is not None:
            mask[i, :h, :w] = arrays[2]
        sizes[i] = (h, w)
        present[i] = True
        indices[i] = item.index
    return Packed(key, preds, targets, mask, sizes, present, indices)
