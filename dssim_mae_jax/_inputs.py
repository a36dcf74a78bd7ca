"""Input preparation, done once per public call: check, cast, mask, flag, scale.

Every public function (:func:`~dssim_mae_jax.ssim`, :func:`~dssim_mae_jax.mae`,
the losses, ...) turns its images into a :class:`Pair` with
:func:`prepare_pair` exactly once, then hands the pair to the unwrapped cores.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from dssim_mae_jax import _filters, _validation


class Pair(NamedTuple):
    """A prediction/target pair ready for the cores.

    Attributes:
      x: predictions divided by ``max_val`` (masked-out pixels 0).
      y: targets divided by ``max_val``, formed as ``x - diff`` so that equal
        inputs give bitwise-equal ``x`` and ``y``.
      diff: ``(predictions - targets) / max_val``, exactly 0 where they are equal.
      mask: the mask broadcast to the images and divided by its largest weight
        in each image (a mask is a set of relative weights), constant; or None.
      bad: per image, True where the result cannot be a score: a NaN or inf
        among the valid pixels, a traced ``max_val`` that is not positive and
        finite, or a traced mask with a negative or non-finite weight.
      max_val: the data range as a constant scalar of the compute dtype (None
        when the caller keeps the data's units).
      spatial_dims: the number of spatial axes.
    """

    x: jax.Array
    y: jax.Array
    diff: jax.Array
    mask: jax.Array | None
    bad: jax.Array
    max_val: jax.Array | None
    spatial_dims: int

    @property
    def axes(self) -> tuple[int, ...]:
        """The spatial and channel axes."""
        return tuple(range(-1 - self.spatial_dims, 0))


def _per_image_any(flags, spatial_dims: int):
    return jnp.any(flags, axis=tuple(range(-1 - spatial_dims, 0)))


def prepare_pair(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val,
    mask,
    spatial_dims: int,
) -> Pair:
    """Checks, casts, masks, flags and scales a pair of images (see :class:`Pair`).

    Masked-out pixels (weight not > 0) are zeroed before any arithmetic, so
    what they hold (NaN and inf included) reaches neither values nor
    gradients. The images are divided by `max_val` (None: not scaled); the
    quotient, unlike a product with ``1 / max_val``, stays normal for every
    float32 `max_val`. Concrete values were checked before the compiled call
    (:mod:`dssim_mae_jax._jit`); here traced impossible values mark the images
    `bad`, so that they get NaN, never a plausible number.
    """
    x, y, max_val, mask = _checked(predictions, targets, max_val, mask, spatial_dims)
    return _scaled(x, y, max_val, mask, spatial_dims)


def per_image(
    fn,
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    max_val,
    mask,
    spatial_dims: int,
):
    """``fn(pair)`` for the :class:`Pair` of the images, computed chunk by chunk.

    The same as ``fn(prepare_pair(...))`` for an `fn` whose results are per
    image (leading batch axes first): the checks and casts run once on the
    whole arrays, then the scaling, masking, flags and `fn` run on sequential
    chunks of the batch (:func:`_filters.over_batch_chunks`: one chunk, i.e. no
    loop, on GPU/TPU, for small batches and for sharded inputs). On XLA:CPU the
    working set of a chunk stays in cache and no full-size prepared image is
    formed, forward or backward.
    """
    x, y, max_val, mask = _checked(predictions, targets, max_val, mask, spatial_dims)
    return _filters.over_batch_chunks(
        lambda a, b, m: fn(_scaled(a, b, max_val, m, spatial_dims)), (x, y, mask), spatial_dims
    )


def _checked(predictions, targets, max_val, mask, spatial_dims: int):
    """The images in the compute dtype, `max_val` as a constant scalar, the mask broadcast."""
    _validation.check_spatial_dims(spatial_dims)
    x, y = _validation.as_float_pair(predictions, targets, min_rank=spatial_dims + 1)
    if max_val is not None:
        max_val = jnp.asarray(max_val, x.dtype)
        if max_val.ndim != 0:
            raise ValueError(f"`max_val` must be a scalar, got shape {max_val.shape}.")
        # No gradient flows into the data range.
        max_val = lax.stop_gradient(max_val)
    if mask is not None:
        mask = lax.stop_gradient(_validation.broadcast_mask(mask, x.shape, x.dtype))
    return x, y, max_val, mask


def _scaled(x, y, max_val, mask, spatial_dims: int) -> Pair:
    """The per-image part of :func:`prepare_pair`: mask, flag, scale."""
    bad = jnp.zeros(x.shape[: x.ndim - spatial_dims - 1], jnp.bool_)
    if max_val is not None:
        bad = bad | ~(jnp.isfinite(max_val) & (max_val > 0))
    if mask is not None:
        finite = jnp.isfinite(mask)
        bad = bad | _per_image_any(~finite | (mask < 0), spatial_dims)
        # Relative weights: each image's mask is scaled by a power of two that brings
        # its largest weight into [1, 2), exactly (a uniform mask of any finite c > 0
        # is uniform and normal). Two factors, each a normal float32, and no division:
        # XLA:CPU turns a division by a broadcast into a product with its reciprocal,
        # which flushes to 0 for weights above about 8.5e37.
        axes = tuple(range(-1 - spatial_dims, 0))
        largest = jnp.max(jnp.where(finite, mask, 0.0), axis=axes, keepdims=True)
        _, exponent = jnp.frexp(jnp.where(largest > 0, largest, 1.0))
        # Largest weight into [1, 2): an all-ones mask stays exactly ones (with
        # padding="same" the padding counts as weight 1).
        exponent = exponent - 1
        half = exponent // 2
        one = jnp.ones((), mask.dtype)
        mask = mask * jnp.ldexp(one, -half) * jnp.ldexp(one, half - exponent)
        keep = mask > 0
        x, y = jnp.where(keep, x, 0.0), jnp.where(keep, y, 0.0)
    bad = bad | _per_image_any(~(jnp.isfinite(x) & jnp.isfinite(y)), spatial_dims)
    d = x - y
    if max_val is None:
        return Pair(x, y, d, mask, bad, None, spatial_dims)
    # The difference first, so that x == y gives exactly 0; where the difference of
    # finite inputs overflows (3e38 - (-3e38) in float32), each input is scaled first.
    diff = jnp.where(jnp.isfinite(d), d / max_val, x / max_val - y / max_val)
    xs = x / max_val
    # Materialised behind a barrier, so that XLA does not recompute them inside
    # every consumer (measured: without it, MS-SSIM fwd+bwd was about 20 % slower
    # on CPU). Where x == y the two are bitwise equal whatever XLA contracts.
    # The barrier holds the values only; each input's derivative is carried by a
    # term that is exactly 0, so y's tangent is the targets' alone: a symbolic
    # zero when only the predictions are differentiated, which the SSIM core's
    # rule then skips (one filtered tangent moment fewer, forward and reverse).
    xs, ys = lax.optimization_barrier(lax.stop_gradient((xs, xs - diff)))
    xs = xs + _derivative_carrier(x, max_val)
    ys = ys + _derivative_carrier(y, max_val)
    return Pair(xs, ys, diff, mask, bad, max_val, spatial_dims)


def _derivative_carrier(v, max_val):
    """Exactly 0, with the derivative of ``v / max_val`` (0 at non-finite pixels)."""
    c = jnp.where(jnp.isfinite(v), v, 0.0) / max_val
    return c - lax.stop_gradient(c)


def _concrete_array(value):
    """The NumPy value of `value`, or None if it is traced (or not array-like)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
    except (TypeError, ValueError):
        return None


def check_integer_range(arguments: dict) -> None:
    """Integer images against ``max_val``: an error, or a warning when values are unknown.

    Integer images (uint8 photographs, uint16 scans) are converted to float
    as they are, so ``max_val`` must be their data range. Concrete images
    holding a value above a concrete ``max_val`` (or below ``-max_val``) are
    refused with a ``ValueError``: ``ssim(uint8_a, uint8_b, max_val=1.0)``
    would otherwise score nearly 1. Traced integer images, whose values are
    unknown, get a ``UserWarning`` when their dtype can hold values above
    ``max_val``.
    """
    max_val = arguments.get("max_val")
    if max_val is None:
        return
    limit = _concrete_array(max_val)
    if limit is None or limit.ndim != 0:
        return
    limit = float(limit)
    for name in ("predictions", "targets"):
        value = arguments.get(name)
        dtype = getattr(value, "dtype", None)
        if dtype is None or not jnp.issubdtype(jnp.dtype(dtype), jnp.integer):
            continue
        concrete = _concrete_array(value)
        if concrete is not None and concrete.size:
            largest = float(np.max(np.abs(concrete.astype(np.float64))))
            if largest > limit:
                raise ValueError(
                    f"`{name}` holds integer values up to {largest:g}, above `max_val`={limit:g}: "
                    f"give the data range (max_val={np.iinfo(dtype).max} for {dtype} data), or "
                    "convert the images to float in [0, max_val] first."
                )
        elif concrete is None and np.iinfo(dtype).max > limit:
            warnings.warn(
                f"`{name}` is a traced {dtype} array and `max_val`={limit:g} is below its dtype's "
                f"range ({np.iinfo(dtype).max}); integer images are used as they are, so "
                "max_val must be their data range.",
                UserWarning,
                stacklevel=4,
            )


def check_concrete(arguments: dict, *, max_val_required: bool = True) -> None:
    """The checks that need concrete values, before a compiled call (see ``_jit``).

    ``max_val`` positive, finite and representable in the compute dtype
    (float32 unless an input is float64 with x64 enabled), the mask's weights
    finite and >= 0, integer images within ``max_val``. Traced values pass
    here; :func:`prepare_pair` turns impossible ones into NaN.
    """
    max_val = arguments.get("max_val")
    _validation.check_positive("max_val", max_val, allow_none=not max_val_required)
    limit = _concrete_array(max_val) if max_val is not None else None
    if limit is not None and limit.ndim == 0:
        dtypes = [
            getattr(arguments.get(n), "dtype", np.float32) for n in ("predictions", "targets")
        ]
        dtype = _validation.compute_dtype(*dtypes)
        if float(limit) > float(np.finfo(dtype).max):
            raise ValueError(
                f"`max_val` must be finite in {np.dtype(dtype).name} (at most "
                f"{float(np.finfo(dtype).max):g}), got {float(limit):g}."
            )
    _validation.check_mask_values(arguments.get("mask"))
    check_integer_range(arguments)
