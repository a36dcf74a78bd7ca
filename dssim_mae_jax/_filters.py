"""Separable window filtering: the local statistics behind SSIM.

The windows are normalised 1-D taps applied along each spatial axis in turn
(a separable N-D window is the outer product of the 1-D taps). Filtering is a
*valid* correlation; its adjoint (for gradients) is the full correlation with
the reversed taps.

Several formulations compute the same thing; which one is fastest depends on
the backend, so :func:`filter_valid_many` picks one per platform at trace time
(see ``docs/benchmarks.md`` for the measurements):

* ``"slices"``: a sum of shifted slices (symmetric taps share one multiply).
  Elementwise only, so no matmul/convolution precision mode (TF32 on GPUs,
  bf16 passes on TPUs) can degrade the statistics; XLA fuses the products that
  form the moments into the filtering. The default on GPU and TPU.
* ``"stacked"``: the same slices, arranged for XLA:CPU. The last spatial axis
  is merged with the channels (``[..., W, C] -> [..., W * C]``, a free
  reshape) so the innermost loop runs over ``W * C`` contiguous values, and
  the maps filtered together are concatenated along that axis between the
  first and the last pass. XLA:CPU never fuses a concatenation along the
  minor axis, so each pass is materialised once instead of being recomputed
  for every tap of the next pass (which plain slices suffer on CPU), and the
  last pass filters every map in a single loop. The default on CPU.
* ``"matmul"``: banded-matrix products along each axis, ``precision=HIGHEST``.
* ``"conv"``: depthwise ``lax.conv_general_dilated`` along each axis,
  ``precision=HIGHEST``.

Every method agrees with a float64 reference to float32 rounding on every
backend (``tests/test_filters.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

METHODS = ("slices", "stacked", "matmul", "conv")

# Trace-time override of the per-backend choice, for tests and benchmarks only
# (see `method_override`). A context variable, so threads do not share it.
_OVERRIDE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dssim_mae_jax_filter_method", default=None
)
# The same for the chunk size of `batch_chunks` (elements per chunk).
_CHUNK_OVERRIDE: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "dssim_mae_jax_chunk_elements", default=None
)
# XLA:CPU ("stacked"): process the leading batch in chunks of at most about this
# many elements (2 images of 256x256x3), so temporaries scale with a chunk
# (measured in docs/benchmarks.md: 2 images use the least memory, at no cost in time).
CPU_CHUNK_ELEMENTS = 2**19


def gaussian_taps(size: int, sigma: float) -> tuple[float, ...]:
    """Normalised 1-D Gaussian taps, centred on the middle of the window.

    Matches the window of tf.image.ssim / dm_pix.ssim (``exp(-d^2 / (2 sigma^2))``
    with ``d = i - (size - 1) / 2``, normalised to sum 1), computed in float64.
    """
    d2 = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) ** 2
    # Relative to the taps nearest the centre (exponent 0), so that no sigma,
    # however small or large, underflows every tap or overflows sigma**2: a
    # tiny sigma leaves the nearest tap(s) (a delta, or two halves for an even
    # size), a huge one the box.
    excess = d2 - d2.min()
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scale = 2.0 * np.float64(sigma) ** 2
        g = np.where(excess == 0, 1.0, np.exp(-excess / scale))
    g = np.where(np.isfinite(g), g, 0.0)
    return tuple(float(v) for v in g / g.sum())


def uniform_taps(size: int) -> tuple[float, ...]:
    """Normalised 1-D box taps (all equal to ``1 / size``)."""
    return (1.0 / size,) * size


def unit_sum_taps(taps: Sequence[float], dtype=np.float32) -> tuple[float, ...]:
    """`taps` scaled to sum 1, rounded so that they sum to exactly 1 in `dtype`.

    Each tap is rounded to a multiple of ``2**-(p + 1)`` (``p`` the mantissa
    bits of `dtype`: ``2**-24`` for float32), where every partial sum of taps
    in [0, 1] is exactly representable, and the rounding residual goes to the
    largest tap(s), nearest the centre first. So the filtered ones are exactly
    1 in any summation order,
    whereas ``float32(1/7) * 7 = 1 + 4.5e-8`` would bias local variances by the
    squared distance of the local mean from the image mean (a box of 7 taps
    would put scikit-image's legacy SSIM 2e-6 off). Taps below ``2**-(p + 2)``
    become 0. Computed in integers, exactly.
    """
    t = np.asarray(taps, np.float64)
    t = t / t.sum()
    bits = np.finfo(dtype).nmant + 1
    counts = [round(v) for v in np.ldexp(t, bits)]  # t * 2**bits, exact scaling
    residual = (1 << bits) - sum(counts)
    # The largest taps, nearest the centre first (a symmetric window stays symmetric
    # where the residual allows).
    centre = (len(counts) - 1) / 2.0
    largest = sorted(
        (i for i, c in enumerate(counts) if c == max(counts)), key=lambda i: abs(i - centre)
    )
    share, extra = divmod(residual, len(largest))
    for k, i in enumerate(largest):
        counts[i] += share + (1 if k < extra else 0)
    return tuple(float(np.ldexp(float(c), -bits)) for c in counts)


def window_taps(window, size: int, sigma: float, dtype=np.float32) -> tuple[float, ...]:
    """The 1-D taps of `window` (a name or a sequence of taps), summing to 1 in `dtype`."""
    if window == "gaussian":
        taps = gaussian_taps(size, sigma)
    elif window == "uniform":
        taps = uniform_taps(size)
    elif isinstance(window, str):
        raise ValueError(f"`window` must be 'gaussian' or 'uniform', got {window!r}.")
    else:
        taps = window
    return unit_sum_taps(taps, dtype)


def pad_amounts(size: int) -> tuple[int, int]:
    """(before, after) padding that keeps the output the size of the input."""
    before = (size - 1) // 2
    return before, size - 1 - before


def crop_to_centers(x: jnp.ndarray, axes: Sequence[int], size: int) -> jnp.ndarray:
    """The pixels of `x` at the centres of the valid windows of `size` taps along `axes`."""
    before, _ = pad_amounts(size)
    for axis in axes:
        n = x.shape[axis] - size + 1
        x = lax.slice_in_dim(x, before, before + n, axis=axis % x.ndim)
    return x


def pad_spatial(
    x: jnp.ndarray, axes: Sequence[int], size: int, mode: str, constant: float = 0.0
) -> jnp.ndarray:
    """Pads the spatial axes for a window of `size` taps.

    ``mode="valid"`` returns `x` unchanged; ``"same"`` pads with `constant`;
    ``"reflect"`` mirrors without repeating the edge sample (numpy ``reflect``).
    """
    if mode == "valid":
        return x
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis % x.ndim] = pad_amounts(size)
    if mode == "same":
        return jnp.pad(x, widths, mode="constant", constant_values=constant)
    if mode == "reflect":
        return jnp.pad(x, widths, mode="reflect")
    raise ValueError(f"Unknown padding mode {mode!r}.")


# ------------------------------------------------------------------ method choice


def default_method(backend: str | None = None) -> str:
    """The filtering method used on `backend` (default: JAX's default backend)."""
    backend = jax.default_backend() if backend is None else backend
    return "stacked" if backend == "cpu" else "slices"


def resolve_method(method: str | None = None) -> str:
    """`method`, else the active :func:`method_override`, else the backend default."""
    if method is None:
        method = _OVERRIDE.get()
    if method is None:
        return default_method()
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    return method


@contextlib.contextmanager
def method_override(method: str | None) -> Iterator[None]:
    """Forces a filtering method while functions are *traced* (tests, benchmarks).

    Only tracing inside the ``with`` block sees it: a function already compiled
    by ``jax.jit`` keeps the method it was traced with.
    """
    if method is not None and method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    token = _OVERRIDE.set(method)
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


def trace_context() -> tuple:
    """Trace-time settings that change what a function compiles to (a cache key)."""
    return (_OVERRIDE.get(), _CHUNK_OVERRIDE.get())


def is_sharded(x) -> bool:
    """Whether `x`'s type carries a sharding along some axis (explicit sharding).

    Under ``jax.make_mesh``'s explicit axes a reshape that splits or merges a
    sharded axis is refused, so such inputs are processed without batch
    chunks. Auto-sharded and unsharded arrays have no sharding in their type.
    """
    try:
        spec = jax.typeof(x).sharding.spec
    except AttributeError:
        return False
    return any(entry is not None for entry in spec)


def reshape_trailing(x: jnp.ndarray, shape: Sequence[int], keep: int) -> jnp.ndarray:
    """`x` reshaped to `shape`, where the first `keep` axes are unchanged.

    Under explicit sharding JAX asks for the sharding of a reshape's output:
    the leading (batch) axes keep theirs and the reshaped trailing axes, which
    are never sharded here, get none.
    """
    shape = tuple(shape)
    if not is_sharded(x):
        return x.reshape(shape)
    sharding = jax.typeof(x).sharding
    spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    new = jax.sharding.PartitionSpec(*spec[:keep], *([None] * (len(shape) - keep)))
    return lax.reshape(x, shape, out_sharding=jax.sharding.NamedSharding(sharding.mesh, new))


# ------------------------------------------------------------------ batch chunks


def batch_chunks(n_images: int, image_elements: int, method: str | None = None) -> int:
    """How many sequential chunks a batch of `n_images` images is processed in.

    On XLA:CPU (the ``"stacked"`` method) the temporaries of the filters (the
    concatenated first passes, the maps) are a few times the size of the
    batch; processing chunks of at most :data:`CPU_CHUNK_ELEMENTS` elements in
    a loop makes them scale with a chunk instead, and the smaller working set
    is no slower. The count divides `n_images`; small batches stay in one
    chunk. Other methods (GPU/TPU) keep the whole batch, where a sequential
    loop would cost parallelism.
    """
    limit = _CHUNK_OVERRIDE.get()
    if limit is None:
        if resolve_method(method) != "stacked":
            return 1
        limit = CPU_CHUNK_ELEMENTS
    per_chunk = max(1, limit // max(1, image_elements))
    if per_chunk >= n_images:
        return 1
    # The smallest count whose chunks fit (chunks of equal size).
    for count in range(-(-n_images // per_chunk), n_images + 1):
        if n_images % count == 0:
            return count
    return n_images


def over_batch_chunks(fn, arrays, spatial_dims: int):
    """``fn(*arrays)``, the leading batch processed in sequential chunks.

    `arrays` (None allowed) are ``[..., *spatial, C]`` with the same leading
    batch, and every output of `fn` is per image (its leading axes are the
    batch: maps ``[..., *spatial', C]``, values ``[...]``); :func:`batch_chunks`
    picks the number of chunks from the static shapes (one, i.e. no loop, for
    small batches, on GPU/TPU and for inputs sharded along the batch). Chunks
    are independent, so the result is ``fn(*arrays)``.
    """
    trailing = spatial_dims + 1
    ref = arrays[0]
    lead = ref.shape[: ref.ndim - trailing]
    n = math.prod(lead)
    count = batch_chunks(n, math.prod(ref.shape[ref.ndim - trailing :]))
    if count == 1 or any(is_sharded(a) for a in arrays if a is not None):
        return fn(*arrays)

    def split(a):
        return None if a is None else a.reshape(count, n // count, *a.shape[a.ndim - trailing :])

    out = lax.map(lambda args: fn(*args), tuple(split(a) for a in arrays))
    return jax.tree.map(lambda o: o.reshape(*lead, *o.shape[2:]), out)


@contextlib.contextmanager
def chunk_override(elements: int | None) -> Iterator[None]:
    """Forces the chunk size of :func:`batch_chunks` while tracing (tests, benchmarks)."""
    if elements is not None and (not isinstance(elements, int) or elements < 1):
        raise ValueError(f"`elements` must be a positive integer or None, got {elements!r}.")
    token = _CHUNK_OVERRIDE.set(elements)
    try:
        yield
    finally:
        _CHUNK_OVERRIDE.reset(token)


# ------------------------------------------------------------------ channel constants


def spread_channels(c: jnp.ndarray, shape: Sequence[int], method: str | None = None):
    """Per-channel constants ``[..., 1, ..., 1, C]`` to subtract from maps of `shape`.

    Returns `c` itself except for the ``"stacked"`` method with several
    channels: there the filters read rows of ``W * C`` interleaved values, and
    XLA:CPU would rebuild the channel index (a division per element, breaking
    vectorisation) for every tap that reads the broadcast. So the constants are
    expanded along the last spatial axis first (to ``[..., 1, W, C]``) by a
    gather, which XLA materialises instead of fusing into the filters; the
    broadcast left is along whole rows. Values are unchanged.
    """
    channels = c.shape[-1]
    if resolve_method(method) != "stacked" or channels == 1 or c.shape[-2] != 1:
        return c
    width = shape[-2]
    index = jnp.asarray(np.tile(np.arange(channels), width))
    rows = jnp.take(c, index, axis=-1, mode="clip")
    return reshape_trailing(rows, (*c.shape[:-2], width, channels), c.ndim - 2)


# ------------------------------------------------------------------ shifted slices


def _filter_axis(x: jnp.ndarray, taps: Sequence[float], axis: int, stride: int = 1):
    """Valid correlation along `axis`; tap ``i`` reads offset ``i * stride``.

    ``stride > 1`` filters an axis whose samples are interleaved with
    ``stride`` channels (a merged ``W * C`` axis).
    """
    k = len(taps)
    n = x.shape[axis] - (k - 1) * stride

    def shifted(i):
        return lax.slice_in_dim(x, i * stride, i * stride + n, axis=axis)

    out = None
    for i in range(k // 2):
        j = k - 1 - i
        if taps[i] == taps[j]:
            # Symmetric taps: one multiply for each pair of shifted slices.
            term = (shifted(i) + shifted(j)) * taps[i]
        else:
            term = shifted(i) * taps[i] + shifted(j) * taps[j]
        out = term if out is None else out + term
    if k % 2:
        term = shifted(k // 2) * taps[k // 2]
        out = term if out is None else out + term
    return out


def _pad_axis(x: jnp.ndarray, axis: int, width: int) -> jnp.ndarray:
    widths = [(0, 0)] * x.ndim
    widths[axis % x.ndim] = (width, width)
    return jnp.pad(x, widths)


def filter_valid(x: jnp.ndarray, taps: Sequence[float], axes: Sequence[int]) -> jnp.ndarray:
    """Valid correlation of `x` with the separable window `taps` along `axes`.

    Each listed axis shrinks by ``len(taps) - 1``. Shifted slices, any axes.
    """
    for axis in axes:
        x = _filter_axis(x, taps, axis)
    return x


def filter_valid_transpose(
    g: jnp.ndarray, taps: Sequence[float], axes: Sequence[int]
) -> jnp.ndarray:
    """Adjoint of :func:`filter_valid`: each listed axis grows by ``len(taps) - 1``.

    The adjoint of a valid correlation is a full correlation with the reversed
    taps, i.e. zero padding by ``len(taps) - 1`` on both sides, then valid.
    """
    k = len(taps)
    reversed_taps = tuple(taps[::-1])
    for axis in axes:
        g = _filter_axis(_pad_axis(g, axis, k - 1), reversed_taps, axis)
    return g


def _stacked(arrays, taps: Sequence[float], n_spatial: int, transpose: bool):
    """The ``"stacked"`` method (see the module docstring), valid or adjoint."""
    k = len(taps)
    grow = k - 1 if transpose else 0
    taps = tuple(taps[::-1]) if transpose else tuple(taps)
    channels = arrays[0].shape[-1]
    major_axes = tuple(range(-n_spatial, -1))  # in the merged [..., W * C] layout
    firsts = []
    for a in arrays:
        a = reshape_trailing(a, (*a.shape[:-2], a.shape[-2] * channels), a.ndim - 2)
        for axis in major_axes:
            a = _filter_axis(_pad_axis(a, axis, grow) if grow else a, taps, axis)
        firsts.append(_pad_axis(a, -1, grow * channels) if grow else a)
    width = firsts[0].shape[-1]  # of each piece, in the merged layout
    out_width = width - (k - 1) * channels
    if len(firsts) > 1 and major_axes:
        # One minor-axis pass over all maps (their seams give a few unused
        # columns); the concatenation materialises the first passes once.
        last = _filter_axis(jnp.concatenate(firsts, axis=-1), taps, -1, channels)
        pieces = [
            lax.slice_in_dim(last, i * width, i * width + out_width, axis=-1)
            for i in range(len(firsts))
        ]
    else:
        pieces = [_filter_axis(a, taps, -1, channels) for a in firsts]
    return tuple(
        reshape_trailing(p, (*p.shape[:-1], out_width // channels, channels), p.ndim - 1)
        for p in pieces
    )


def _banded(n_in: int, taps: Sequence[float], dtype) -> jnp.ndarray:
    """The (n_in - k + 1, n_in) matrix of a valid correlation along one axis."""
    k = len(taps)
    m = np.zeros((n_in - k + 1, n_in), np.float64)
    for i in range(n_in - k + 1):
        m[i, i : i + k] = taps
    return jnp.asarray(m, dtype)


def _matmul_axis(x: jnp.ndarray, taps, axis: int, transpose: bool) -> jnp.ndarray:
    axis %= x.ndim
    n_in = x.shape[axis] + (len(taps) - 1 if transpose else 0)
    m = _banded(n_in, taps, x.dtype)
    if transpose:
        m = m.T
    out = jnp.tensordot(m, x, axes=([1], [axis]), precision=lax.Precision.HIGHEST)
    return jnp.moveaxis(out, 0, axis)


def _conv_axis(x: jnp.ndarray, taps, axis: int, n_spatial: int, transpose: bool):
    """Depthwise correlation along one spatial axis of ``[..., *spatial, C]``."""
    lead, tail = x.shape[: x.ndim - n_spatial - 1], x.shape[x.ndim - n_spatial - 1 :]
    channels = tail[-1]
    z = x.reshape((-1, *tail))
    k = len(taps)
    position = axis % x.ndim - len(lead)  # 0 .. n_spatial - 1
    kshape = [1] * n_spatial
    kshape[position] = k
    taps = tuple(taps[::-1]) if transpose else tuple(taps)
    kernel = jnp.asarray(np.asarray(taps, np.float64).reshape((*kshape, 1, 1)), x.dtype)
    kernel = jnp.broadcast_to(kernel, (*kshape, 1, channels))
    padding = [(0, 0)] * n_spatial
    if transpose:
        padding[position] = (k - 1, k - 1)
    spatial = "DHW"[3 - n_spatial :]
    numbers = lax.conv_dimension_numbers(
        z.shape, kernel.shape, (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    )
    out = lax.conv_general_dilated(
        z,
        kernel,
        window_strides=(1,) * n_spatial,
        padding=padding,
        dimension_numbers=numbers,
        feature_group_count=channels,
        precision=lax.Precision.HIGHEST,
    )
    return out.reshape((*lead, *out.shape[1:]))


def _filter_many(arrays, taps, axes, method, transpose):
    arrays = tuple(arrays)
    axes = tuple(axes)
    if not arrays:
        return ()
    method = resolve_method(method)
    ndim = arrays[0].ndim
    n = len(axes)
    # The per-axis methods need the spatial axes right before a channel axis.
    channels_last = tuple(a % ndim for a in axes) == tuple(range(ndim - 1 - n, ndim - 1))
    if method == "slices" or not channels_last:
        one = filter_valid_transpose if transpose else filter_valid
        return tuple(one(a, taps, axes) for a in arrays)
    if method == "stacked":
        return _stacked(arrays, taps, n, transpose)
    out = []
    for a in arrays:
        for axis in axes:
            if method == "matmul":
                a = _matmul_axis(a, taps, axis, transpose)
            else:
                a = _conv_axis(a, taps, axis, n, transpose)
        out.append(a)
    return tuple(out)


def filter_valid_many(
    arrays: Sequence[jnp.ndarray],
    taps: Sequence[float],
    axes: Sequence[int],
    *,
    method: str | None = None,
) -> tuple[jnp.ndarray, ...]:
    """:func:`filter_valid` of each array (same shapes), by the backend's fastest method.

    Filtering the maps together lets the ``"stacked"`` method share its last
    pass. `method` (one of :data:`METHODS`) forces a formulation; by default
    :func:`resolve_method` picks one at trace time.
    """
    return _filter_many(arrays, taps, axes, method, transpose=False)


def filter_valid_transpose_many(
    arrays: Sequence[jnp.ndarray],
    taps: Sequence[float],
    axes: Sequence[int],
    *,
    method: str | None = None,
) -> tuple[jnp.ndarray, ...]:
    """:func:`filter_valid_transpose` of each array, like :func:`filter_valid_many`."""
    return _filter_many(arrays, taps, axes, method, transpose=True)


def filter_valid_linear(
    arrays: Sequence[jnp.ndarray],
    taps: Sequence[float],
    axes: Sequence[int],
    *,
    method: str | None = None,
) -> tuple[jnp.ndarray, ...]:
    """:func:`filter_valid_many` as a linear map whose transpose is the adjoint above.

    For filtering tangents: reverse mode then runs :func:`filter_valid_transpose_many`
    (a full correlation, the same loops as the forward filter) instead of JAX's
    transpose of the slices (sums of pads, measured slower on XLA:CPU in
    ``docs/benchmarks.md``). Forward mode, ``vmap`` and every order of derivative
    work, since the map is linear with constant taps.

    ``lax.custom_linear_solve`` carries the pair (the only JAX API that attaches a
    transpose to a linear function): with the identity as the matrix, its
    "solve" is the filter and its "transpose solve" the adjoint. A solve must
    return its input's shapes, so the filtered maps travel zero-padded at the end
    of each filtered axis, and are cropped back.
    """
    arrays = tuple(arrays)
    if not arrays:
        return ()
    k = len(taps)
    axes = tuple(a % arrays[0].ndim for a in axes)

    def grow(v):
        widths = [(0, 0)] * v.ndim
        for axis in axes:
            widths[axis] = (0, k - 1)
        return jnp.pad(v, widths)

    def shrink(v):
        for axis in axes:
            v = lax.slice_in_dim(v, 0, v.shape[axis] - (k - 1), axis=axis)
        return v

    def solve(_, b):
        return tuple(grow(v) for v in filter_valid_many(b, taps, axes, method=method))

    def transpose_solve(_, ct):
        cut = [shrink(v) for v in ct]
        return filter_valid_transpose_many(cut, taps, axes, method=method)

    padded = lax.custom_linear_solve(lambda v: v, arrays, solve, transpose_solve)
    return tuple(shrink(v) for v in padded)
