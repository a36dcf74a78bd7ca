"""Mergeable metric states: SSIM, MS-SSIM, multi-sigma SSIM, PSNR and MAE over a dataset."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

import dssim_mae_jax as dmj
from dssim_mae_jax import _protocols

from . import _buckets, _scores

_STATE_OPTIONS = ("keep_values", "bucket_growth")
_DEFAULT_GROWTH = 2.0


def _hashable(name, value):
    if isinstance(value, list | tuple | np.ndarray):
        return tuple(_hashable(name, v) for v in np.asarray(value).tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, jax.Array):
        raise TypeError(f"`{name}` must be a Python value (options are static), got an array.")
    hash(value)
    return value


def _neumaier(total, compensation, addend):
    """``total + addend`` with the rounding error kept in `compensation` (elementwise)."""
    s = total + addend
    big = jnp.abs(total) >= jnp.abs(addend)
    err = jnp.where(big, (total - s) + addend, (addend - s) + total)
    # inf or NaN: no error to keep (it would be NaN).
    return s, compensation + jnp.where(jnp.isfinite(s), err, 0.0)


def _is_traced(*values) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(values))


@dataclasses.dataclass(frozen=True)
class _MetricState:
    """Shared machinery of the states (see :class:`SSIM` for the interface)."""

    # Options of the underlying public function and their defaults.
    _FUNCTION_OPTIONS: ClassVar[dict[str, Any]] = {}
    _PROTOCOLS: ClassVar[tuple[str, ...]] = ("y_channel", "crop_border")
    _EXTRA_OPTIONS: ClassVar[dict[str, Any]] = {}
    _SUMS: ClassVar[tuple[str, ...]] = ("value",)

    sums: jax.Array
    compensation: jax.Array
    count: jax.Array
    values: jax.Array
    options: tuple

    # ------------------------------------------------------------ construction

    @classmethod
    def empty(cls, **options):
        """An empty state; `options` as documented by the class."""
        allowed = {
            **cls._FUNCTION_OPTIONS,
            **{p: _PROTOCOL_DEFAULTS[p] for p in cls._PROTOCOLS},
            "keep_values": 0,
            "bucket_growth": _DEFAULT_GROWTH,
            **cls._EXTRA_OPTIONS,
        }
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.empty() got unknown option(s) {unknown}; expected some of "
                f"{sorted(allowed)}."
            )
        merged = {**allowed, **options}
        if merged.get("max_val", 0) is _REQUIRED:
            raise TypeError(f"{cls.__name__}.empty() needs `max_val` (the data range).")
        merged = {k: _hashable(k, v) for k, v in merged.items()}
        cls._check_options(merged)
        capacity = merged["keep_values"]
        k = len(cls._SUMS)
        return cls(
            sums=jnp.zeros((k,), jnp.float32),
            compensation=jnp.zeros((k,), jnp.float32),
            count=jnp.zeros((), jnp.int32),
            values=jnp.full((capacity,), jnp.nan, jnp.float32),
            options=tuple(sorted(merged.items())),
        )

    @classmethod
    def _check_options(cls, o: dict) -> None:
        cap = o["keep_values"]
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ValueError(f"`keep_values` must be an int >= 0 (a capacity), got {cap!r}.")
        _buckets.check_growth(o["bucket_growth"])
        _protocols.check_crop_border(o["crop_border"])
        for name in ("y_channel", "matlab_downsample"):
            if name in o and not isinstance(o[name], bool):
                raise TypeError(f"`{name}` must be a bool, got {o[name]!r}.")
        max_val = o.get("max_val")
        if max_val is not None and (
            isinstance(max_val, bool) or not isinstance(max_val, int | float) or not max_val > 0
        ):
            raise ValueError(f"`max_val` must be a positive number, got {max_val!r}.")
        if o["y_channel"] and max_val is None:
            raise ValueError("`y_channel=True` needs `max_val` (the data range of the RGB input).")

    @property
    def opts(self) -> dict:
        """The options, as a dict."""
        return dict(self.options)

    def reset(self):
        """An empty state with the same options."""
        return type(self).empty(**self.opts)

    # ------------------------------------------------------------ updating

    def update(self, predictions, targets, *, mask: ArrayLike | None = None):
        """A new state with the images of this batch added.

        Args:
          predictions: ``[..., H, W, C]`` images, or a list of ``[H, W, C]``
            images of any sizes (outside ``jit``).
          targets: the same shapes.
          mask: optional weights broadcastable to the images (a list for a
            list of images): 1 valid, 0 invalid, as the function takes it. An
            image whose mask is all zero is not counted (padding of a batch).

        Returns:
          The updated state (this one is unchanged).
        """
        if isinstance(predictions, list | tuple):
            if not isinstance(targets, list | tuple) or len(targets) != len(predictions):
                raise ValueError("`targets` must be a list as long as `predictions`.")
            masks = [None] * len(predictions) if mask is None else list(mask)
            if len(masks) != len(predictions):
                raise ValueError("`mask` must be None or a list as long as `predictions`.")
            if _is_traced(predictions, targets, masks) or self.opts["bucket_growth"] is None:
                state = self
                for p, t, m in zip(predictions, targets, masks, strict=True):
                    state = state.update(p, t, mask=m)
                return state
            return self._update_bucketed(predictions, targets, masks, listed=True)
        if _is_traced(predictions, targets, mask) or self.opts["bucket_growth"] is None:
            return _exact_step(self, predictions, targets, mask)
        return self._update_bucketed(predictions, targets, mask, listed=False)

    def _update_bucketed(self, predictions, targets, mask, *, listed):
        o = self.opts
        items = _host_items(predictions, targets, mask, listed, o)
        keyed = []
        counted = []
        for item in items:
            h, w = item.prediction.shape[:2]
            keyed.append(item._replace(key=self._bucket_key(h, w, o)))
            counted.append(item.mask is None or bool(np.any(item.mask > 0)))
        ranks = np.cumsum(counted) - 1
        base = self.count
        state = self
        quantum = self._quantum(o)
        for packed in _buckets.pack(keyed, growth=o["bucket_growth"], quantum=quantum):
            real = packed.indices >= 0
            idx = np.where(real, packed.indices, 0)
            is_counted = real & np.asarray(counted, bool)[idx]
            slots = np.where(is_counted, ranks[idx], 0).astype(np.int32)
            state = _bucket_step(
                state,
                base,
                packed.predictions,
                packed.targets,
                packed.mask,
                packed.sizes,
                is_counted,
                slots,
                key=packed.key,
            )
        return state

    @classmethod
    def _quantum(cls, o) -> int:
        return _buckets.DEFAULT_QUANTUM

    @classmethod
    def _bucket_key(cls, h: int, w: int, o: dict):
        """Static per-image key (and the size checks done before padding)."""
        fs = cls._filter_size(o)
        if fs and min(h, w) < fs:
            raise ValueError(
                f"`predictions`: an image of {h}x{w} pixels (after crop_border) is smaller "
                f"than the window (filter_size={fs})."
            )
        return None

    @classmethod
    def _filter_size(cls, o) -> int:
        return 0

    def _fold(self, scores: dict, counted, slots):
        """Adds per-image `scores` ({name: [N]}) of the `counted` images, stored at `slots`."""
        per = jnp.stack([scores[name].astype(jnp.float32) for name in self._SUMS], axis=-1)
        batch = jnp.sum(jnp.where(counted[:, None], per, 0.0), axis=0)
        sums, compensation = _neumaier(self.sums, self.compensation, batch)
        values = self.values
        capacity = values.shape[0]
        if capacity:
            idx = jnp.where(counted & (slots < capacity), slots, capacity)
            values = values.at[idx].set(per[:, 0], mode="drop")
        count = self.count + jnp.sum(counted.astype(jnp.int32))
        return dataclasses.replace(
            self, sums=sums, compensation=compensation, count=count, values=values
        )

    # ------------------------------------------------------------ merging and results

    def merge(self, other):
        """The state of both datasets: sums added, per-image values of `other` after these."""
        if type(other) is not type(self) or other.options != self.options:
            raise ValueError(
                f"`other` must be a {type(self).__name__} state with the same options, got "
                f"{type(other).__name__} with options {getattr(other, 'options', None)}."
            )
        sums, compensation = _neumaier(
            self.sums, self.compensation + other.compensation, other.sums
        )
        values = self.values
        capacity = values.shape[0]
        if capacity:
            j = jnp.arange(capacity)
            stored = j < jnp.minimum(other.count, capacity)
            idx = jnp.where(stored, self.count + j, capacity)
            values = values.at[idx].set(other.values, mode="drop")
        return dataclasses.replace(
            self,
            sums=sums,
            compensation=compensation,
            count=self.count + other.count,
            values=values,
        )

    def _sum(self, i: int):
        s = self.sums[i]
        return jnp.where(jnp.isfinite(s), s + self.compensation[i], s)

    def compute(self) -> jax.Array:
        """The dataset value: the mean over counted images (NaN when none)."""
        return self._sum(0) / self.count.astype(jnp.float32)

    def per_image(self) -> jax.Array:
        """The kept per-image values, in update order (outside ``jit``).

        Inside ``jit`` read ``values`` (capacity ``keep_values``; NaN past the
        last image) and ``count`` instead.
        """
        n = min(int(self.count), self.values.shape[0])
        return self.values[:n]


_REQUIRED = object()
_PROTOCOL_DEFAULTS = {"y_channel": False, "crop_border": 0, "matlab_downsample": False}


def _host_items(predictions, targets, mask, listed, o):
    """The images of one eager update as NumPy ``[H, W, C]`` items, border-cropped."""
    if listed:
        preds = [np.asarray(p) for p in predictions]
        targs = [np.asarray(t) for t in targets]
        masks = [None if m is None else np.asarray(m) for m in mask]
    else:
        p, t = np.asarray(predictions), np.asarray(targets)
        if p.shape != t.shape:
            raise ValueError(
                f"`predictions` and `targets` must have the same shape, got {p.shape} and "
                f"{t.shape}."
            )
        if p.ndim < 3:
            raise ValueError(f"`predictions` must be [..., H, W, C], got shape {p.shape}.")
        lead = p.shape[:-3]
        n = int(np.prod(lead))
        preds = list(p.reshape(n, *p.shape[-3:]))
        targs = list(t.reshape(n, *t.shape[-3:]))
        if mask is None:
            masks = [None] * n
        else:
            m = np.asarray(mask)
            channels = m.shape[-1] if m.ndim else 1
            try:
                m = np.broadcast_to(m, (*p.shape[:-1], channels))
            except ValueError:
                raise ValueError(
                    f"`mask` of shape {m.shape} does not broadcast to the images {p.shape}."
                ) from None
            masks = list(m.reshape(n, *m.shape[-3:]))
    border = o["crop_border"]
    items = []
    for i, (p, t, m) in enumerate(zip(preds, targs, masks, strict=True)):
        if p.ndim != 3 or p.shape != t.shape:
            raise ValueError(
                f"image {i}: `predictions` and `targets` must be [H, W, C] images of one shape, "
                f"got {p.shape} and {t.shape}."
            )
        if m is not None:
            if m.ndim == 2:
                m = m[..., None]
            m = np.broadcast_to(m, (*p.shape[:2], m.shape[-1])).astype(np.float32)
            if not np.all(np.isfinite(m)) or np.any(m < 0):
                raise ValueError(f"`mask` (image {i}) must hold finite weights >= 0.")
            if o["y_channel"] and m.shape[-1] != 1:
                raise ValueError(
                    f"`mask` with y_channel=True must have one channel, got shape {m.shape}."
                )
        if o["y_channel"] and p.shape[-1] != 3:
            raise ValueError(f"`predictions` with y_channel=True must be RGB, got {p.shape}.")
        if border:
            if min(p.shape[:2]) <= 2 * border:
                raise ValueError(
                    f"`crop_border`={border} leaves no pixel of image {i} ({p.shape[:2]})."
                )
            cut = (slice(border, -border), slice(border, -border))
            p, t = p[cut], t[cut]
            m = None if m is None else m[cut]
        items.append(_buckets.Item(i, p, t, m, None))
    return items


def _protocol_images(state, x, y, mask):
    """Crop, Y channel (and MATLAB downsampling) of exact-size images, as the options ask."""
    o = state.opts
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.shape != y.shape:
        raise ValueError(
            f"`predictions` and `targets` must have the same shape, got {x.shape} and {y.shape}."
        )
    if x.ndim < 3:
        raise ValueError(f"`predictions` must be [..., H, W, C], got shape {x.shape}.")
    if mask is not None:
        mask = jnp.asarray(mask, jnp.float32)
        mask = jnp.broadcast_to(mask, (*x.shape[:-1], mask.shape[-1] if mask.ndim else 1))
    if o["crop_border"]:
        x, y = (_protocols.crop_border(a, o["crop_border"]) for a in (x, y))
        mask = None if mask is None else _protocols.crop_border(mask, o["crop_border"])
    if o["y_channel"]:
        if mask is not None and mask.shape[-1] != 1:
            raise ValueError(f"`mask` with y_channel=True must have one channel, got {mask.shape}.")
        x, y = (_protocols.rgb_to_y(a, max_val=o["max_val"]) for a in (x, y))
    if o.get("matlab_downsample"):
        if mask is not None:
            raise ValueError("`mask` is not supported with matlab_downsample=True.")
        x, y = _protocols.matlab_downsample(x), _protocols.matlab_downsample(y)
    return x, y, mask


@jax.jit
def _exact_step(state, predictions, targets, mask):
    x, y, mask = _protocol_images(state, predictions, targets, mask)
    scores = state._exact_scores(x, y, mask, state.opts)
    scores = {k: _replicated(v.reshape(-1)) for k, v in scores.items()}
    if mask is None:
        counted = jnp.ones(scores["value"].shape, bool)
    else:
        counted = _replicated((jnp.sum(mask, axis=(-3, -2, -1)) > 0).reshape(-1))
    slots = state.count + jnp.cumsum(counted.astype(jnp.int32)) - 1
    return state._fold(scores, counted, slots)


def _replicated(per_image):
    """`per_image` ([N], one value per image) on every device, where the batch is sharded
    over Explicit mesh axes (`jax.sharding.AxisType.Explicit`): the slot numbering's cumsum
    and the store's scatter need the whole batch axis, and there they raise a
    ``ShardingTypeError`` on a sharded one. Under Auto axes and without a mesh, XLA's
    partitioner does this itself, so `per_image` is returned as it is. [N] values are cheap
    to gather next to the images they summarize."""
    mesh = jax.sharding.get_abstract_mesh()
    explicit = not mesh.empty and jax.sharding.AxisType.Explicit in tuple(mesh.axis_types)
    if explicit and any(axis is not None for axis in jax.typeof(per_image).sharding.spec):
        return jax.sharding.reshard(per_image, jax.sharding.PartitionSpec())
    return per_image


@functools.partial(jax.jit, static_argnames=("key",))
def _bucket_step(state, base, predictions, targets, mask, sizes, counted, slots, *, key):
    o = state.opts
    dtype = jnp.float64 if predictions.dtype == np.float64 else jnp.float32
    x, y = jnp.asarray(predictions, dtype), jnp.asarray(targets, dtype)
    if o["y_channel"]:
        x, y = (_protocols.rgb_to_y(a, max_val=o["max_val"]) for a in (x, y))
    scores = state._bucket_scores(x, y, mask, sizes, key, o)
    return state._fold(scores, counted, base + slots)


def _function_options(cls, o: dict) -> dict:
    return {k: o[k] for k in cls._FUNCTION_OPTIONS}


def _register(cls):
    cls = dataclasses.dataclass(frozen=True)(cls)
    return jax.tree_util.register_dataclass(
        cls, data_fields=["sums", "compensation", "count", "values"], meta_fields=["options"]
    )


_COMMON_DOC = """
    Every state is an immutable pytree (it passes through ``jit``, ``lax.scan``
    and ``jax.device_put``): :meth:`update` and :meth:`merge` return new states.

    All options are keywords of :meth:`empty` and static: the options of the function,
    as it takes them (``max_val`` required), and these:

    Options:
      y_channel: score the BT.601 luma of RGB images (MATLAB ``rgb2ycbcr``,
        BasicSR ``test_y_channel=True``), see ``docs/evaluation.md``.
      crop_border: pixels removed from every side first (SR papers: the scale).
      keep_values: capacity of the per-image store (0: only sums). Images past
        the capacity still count in :meth:`compute`; only their values are not kept.
      bucket_growth: ratio of the shape-bucket ladder used by eager updates
        (None: no buckets, one compile per shape).
"""


@_register
class SSIM(_MetricState):
    """Dataset SSIM: the mean over images of :func:`dssim_mae_jax.ssim`.

    Options: those of :func:`dssim_mae_jax.ssim` (``max_val``, ``filter_size``,
    ``filter_sigma``, ``k1``, ``k2``, ``window``, ``padding``) and
    ``matlab_downsample`` (MATLAB ``ssim.m``'s automatic downsampling, see
    :func:`dssim_mae_jax._protocols.matlab_downsample`).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import dssim_mae_jax as dmj
      >>> from dssim_mae_jax.metrics import SSIM
      >>> x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
      >>> state = SSIM.empty(max_val=1.0, keep_values=4)
      >>> state = state.update(x[:2], x[:2]).update(x[2:], 0.5 * x[2:])
      >>> state.per_image().shape
      (4,)
      >>> whole = dmj.ssim(x, jnp.concatenate([x[:2], 0.5 * x[2:]]), max_val=1.0)
      >>> bool(jnp.abs(state.compute() - whole.mean()) < 1e-6)
      True
    """

    _FUNCTION_OPTIONS: ClassVar[dict[str, Any]] = {
        "max_val": _REQUIRED,
        "filter_size": None,
        "filter_sigma": 1.5,
        "k1": 0.01,
        "k2": 0.03,
        "window": "gaussian",
        "padding": "valid",
    }
    _PROTOCOLS: ClassVar[tuple[str, ...]] = ("y_channel", "crop_border", "matlab_downsample")

    @classmethod
    def _filter_size(cls, o) -> int:
        window = o["window"]
        if isinstance(window, tuple):
            return len(window)
        return 11 if o["filter_size"] is None else o["filter_size"]

    @classmethod
    def _bucket_key(cls, h, w, o):
        factor = _protocols.matlab_downsample_factor(h, w) if o["matlab_downsample"] else 1
        if factor > 1:
            h, w = -(-h // factor), -(-w // factor)
        super()._bucket_key(h, w, o)  # the function rejects smaller images for every padding
        return factor

    @staticmethod
    def _exact_scores(x, y, mask, o):
        return {"value": dmj.ssim(x, y, mask=mask, **_function_options(SSIM, o))}

    @staticmethod
    def _bucket_scores(x, y, mask, sizes, factor, o):
        if factor > 1:
            x, sizes_down = _scores.matlab_downsample(x, sizes, factor)
            y, _ = _scores.matlab_downsample(y, sizes, factor)
            sizes = sizes_down
        options = _function_options(SSIM, o)
        padding = options.pop("padding")
        value = _scores.windowed(
            dmj.ssim,
            x,
            y,
            mask,
            sizes,
            filter_size=SSIM._filter_size(o),
            padding=padding,
            options=options,
        )
        return {"value": value}


@_register
class MultiSigmaSSIM(_MetricState):
    """Dataset multi-sigma SSIM: the mean over images of :func:`dssim_mae_jax.multi_sigma_ssim`.

    Options: those of :func:`dssim_mae_jax.multi_sigma_ssim` (``max_val``,
    ``sigmas``, ``filter_size``, ``k1``, ``k2``, ``padding``).
    """

    _FUNCTION_OPTIONS: ClassVar[dict[str, Any]] = {
        "max_val": _REQUIRED,
        "sigmas": (0.5, 1.0, 2.0, 4.0, 8.0),
        "filter_size": 31,
        "k1": 0.01,
        "k2": 0.03,
        "padding": "valid",
    }

    @classmethod
    def _filter_size(cls, o) -> int:
        return o["filter_size"]

    @staticmethod
    def _exact_scores(x, y, mask, o):
        return {
            "value": dmj.multi_sigma_ssim(x, y, mask=mask, **_function_options(MultiSigmaSSIM, o))
        }

    @staticmethod
    def _bucket_scores(x, y, mask, sizes, key, o):
        options = _function_options(MultiSigmaSSIM, o)
        padding = options.pop("padding")
        value = _scores.windowed(
            dmj.multi_sigma_ssim,
            x,
            y,
            mask,
            sizes,
            filter_size=o["filter_size"],
            padding=padding,
            options=options,
        )
        return {"value": value}


@_register
class MSSSIM(_MetricState):
    """Dataset MS-SSIM: the mean over images of :func:`dssim_mae_jax.ms_ssim`.

    Options: those of :func:`dssim_mae_jax.ms_ssim` (``max_val``,
    ``power_factors``, ``filter_size``, ``filter_sigma``, ``k1``, ``k2``,
    ``window``, ``fit_scales``).
    """

    _FUNCTION_OPTIONS: ClassVar[dict[str, Any]] = {
        "max_val": _REQUIRED,
        "power_factors": dmj.MS_SSIM_WEIGHTS,
        "filter_size": None,
        "filter_sigma": 1.5,
        "k1": 0.01,
        "k2": 0.03,
        "window": "gaussian",
        "fit_scales": False,
    }

    _filter_size = SSIM._filter_size

    @classmethod
    def _quantum(cls, o) -> int:
        return max(_buckets.DEFAULT_QUANTUM, 2 ** (len(o["power_factors"]) - 1))

    @classmethod
    def _bucket_key(cls, h, w, o):
        return _scores.ms_ssim_levels(
            min(h, w), cls._filter_size(o), tuple(o["power_factors"]), o["fit_scales"]
        )

    @staticmethod
    def _exact_scores(x, y, mask, o):
        return {"value": dmj.ms_ssim(x, y, mask=mask, **_function_options(MSSSIM, o))}

    @staticmethod
    def _bucket_scores(x, y, mask, sizes, weights, o):
        options = _function_options(MSSSIM, o)
        for name in ("power_factors", "fit_scales", "filter_size"):
            options.pop(name)
        value = _scores.ms_ssim(
            x, y, mask, sizes, weights=weights, filter_size=MSSSIM._filter_size(o), options=options
        )
        return {"value": value}


@_register
class PSNR(_MetricState):
    """Dataset PSNR, in either of the two conventions of the literature.

    ``reduction="image_mean"`` (default): the mean over images of the per-image
    PSNR (:func:`dssim_mae_jax.psnr`), as most super-resolution and denoising
    papers and BasicSR report it. ``reduction="pooled_mse"``: the PSNR of the
    mean squared error over every pixel of the dataset (larger images weigh
    more). Both are kept; :meth:`compute` returns the chosen one,
    :meth:`image_mean` and :meth:`pooled_mse` either. An identical image has
    PSNR ``inf``, so the image mean is ``inf`` too.
    """

    _FUNCTION_OPTIONS: ClassVar[dict[str, Any]] = {"max_val": _REQUIRED}
    _EXTRA_OPTIONS: ClassVar[dict[str, Any]] = {"reduction": "image_mean"}
    _SUMS: ClassVar[tuple[str, ...]] = ("value", "sse", "weight")

    @classmethod
    def _check_options(cls, o):
        super()._check_options(o)
        if o["reduction"] not in ("image_mean", "pooled_mse"):
            raise ValueError(
                f"`reduction` must be 'image_mean' or 'pooled_mse', got {o['reduction']!r}."
            )

    def image_mean(self) -> jax.Array:
        """The mean over images of the per-image PSNR, in dB."""
        return super().compute()

    def pooled_mse(self) -> jax.Array:
        """``-10 log10`` of the MSE (over ``max_val^2``) pooled over every pixel, in dB."""
        mse = self._sum(1) / self._sum(2)
        zero = mse == 0
        value = -10.0 * jnp.log10(jnp.where(zero, 1.0, mse))
        return jnp.where(self.count > 0, jnp.where(zero, jnp.inf, value), jnp.nan)

    def compute(self) -> jax.Array:
        """The dataset PSNR in the convention of ``reduction``."""
        if self.opts["reduction"] == "pooled_mse":
            return self.pooled_mse()
        return self.image_mean()

    @staticmethod
    def _exact_scores(x, y, mask, o):
        lead = x.shape[:-3]
        flat = x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])
        weights = jnp.ones((*flat[0].shape[:-1], 1), flat[0].dtype)
        if mask is not None:
            weights = mask.reshape(-1, *mask.shape[-3:])
        sse, weight = _scores.pixel_sums(*flat, weights, max_val=o["max_val"])
        value = dmj.psnr(x, y, mask=mask, max_val=o["max_val"])
        return {"value": value, "sse": sse.reshape(lead), "weight": weight.reshape(lead)}

    @staticmethod
    def _bucket_scores(x, y, mask, sizes, key, o):
        weights = _scores.region(sizes, x.shape[1], x.shape[2]).astype(x.dtype)
        if mask is not None:
            weights = weights * mask
        sse, weight = _scores.pixel_sums(x, y, weights, max_val=o["max_val"])
        value = dmj.psnr(x, y, mask=weights, max_val=o["max_val"])
        return {"value": value, "sse": sse, "weight": weight}


@_register
class MAE(_MetricState):
    """Dataset MAE: the mean over images of :func:`dssim_mae_jax.mae`.

    Options: those of :func:`dssim_mae_jax.mae` (``max_val``, optional: None
    keeps the data's units).
    """

    _FUNCTION_OPTIONS: ClassVar[dict[str, Any]] = {"max_val": None}

    @staticmethod
    def _exact_scores(x, y, mask, o):
        return {"value": dmj.mae(x, y, mask=mask, max_val=o["max_val"])}

    @staticmethod
    def _bucket_scores(x, y, mask, sizes, key, o):
        weights = _scores.region(sizes, x.shape[1], x.shape[2]).astype(x.dtype)
        if mask is not None:
            weights = weights * mask
        return {"value": dmj.mae(x, y, mask=weights, max_val=o["max_val"])}


for _cls in (SSIM, MSSSIM, MultiSigmaSSIM, PSNR, MAE):
    _cls.__doc__ = (_cls.__doc__ or "") + _COMMON_DOC


def merge_processes(state):
    """`state` merged over every JAX process (each process gets the same result).

    Call it on every process (a collective) after each has updated its own
    state with its share of the dataset (eager updates need host-local
    images). The states are gathered with
    ``jax.experimental.multihost_utils.process_allgather`` and merged in
    process order, so per-image values are ordered by process index.

    Args:
      state: this process's state (any of the metric states).

    Returns:
      The merged state; `state` itself with one process.

    Examples:
      >>> from dssim_mae_jax.metrics import PSNR, merge_processes
      >>> int(merge_processes(PSNR.empty(max_val=1.0)).count)
      0
    """
    if jax.process_count() == 1:
        return state
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(state, tiled=False)
    merged = None
    for p in range(jax.process_count()):
        part = jax.tree.map(lambda a, i=p: jnp.asarray(a[i]), gathered)
        merged = part if merged is None else merged.merge(part)
    return merged


__all__: Sequence[str] = ("MAE", "MSSSIM", "PSNR", "SSIM", "MultiSigmaSSIM", "merge_processes")
