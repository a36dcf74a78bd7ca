"""Trace-time argument checks shared by the public functions.

Every check runs on static information (shapes, dtypes, Python numbers), so it
raises while a function is being traced, never on values inside ``jit``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

WINDOWS = ("gaussian", "uniform")
PADDINGS = ("valid", "same", "reflect")


def compute_dtype(*dtypes) -> np.dtype:
    """The floating dtype statistics are computed in: float64 stays, the rest is float32.

    Half precision (bf16/f16) is promoted because E[x^2] - E[x]^2 cancels badly in
    it; integers are promoted because images are usually uint8 with max_val=255.
    """
    if any(jnp.dtype(d) == jnp.float64 for d in dtypes):
        # float64 only where JAX has it enabled (jax_enable_x64); float32 otherwise.
        return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    return jnp.dtype(jnp.float32)


def as_float_pair(
    predictions: ArrayLike, targets: ArrayLike, *, min_rank: int, what: str = "spatial_dims"
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Checks a prediction/target pair and returns both in the compute dtype."""
    arrays = []
    for name, value in (("predictions", predictions), ("targets", targets)):
        if not hasattr(value, "dtype"):
            value = np.asarray(value)
        dtype = jnp.dtype(value.dtype)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise TypeError(
                f"`{name}` must hold real floating-point or integer values, got dtype {dtype}."
            )
        arrays.append(value)
    x, y = arrays
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(
            f"`predictions` and `targets` must have the same shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}."
        )
    if x.ndim < min_rank:
        raise ValueError(
            f"`predictions` must have at least {min_rank} dimensions ({what}, then channels), "
            f"got shape {tuple(x.shape)}."
        )
    if 0 in tuple(x.shape[x.ndim - min_rank :]):
        raise ValueError(
            f"The spatial and channel axes of `predictions` (the last {min_rank}) must not be "
            f"empty, got shape {tuple(x.shape)}."
        )
    dtype = compute_dtype(x.dtype, y.dtype)
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def check_positive(name: str, value, *, allow_none: bool = False, integer: bool = False):
    """Positive Python, NumPy or concrete JAX numbers; traced arrays pass through unchecked."""
    value = concrete_scalar(value)
    if value is None:
        if allow_none:
            return
        raise ValueError(f"`{name}` is required, got None.")
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number, got a bool ({value}).")
    if integer:
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r}).")
        if value <= 0:
            raise ValueError(f"`{name}` must be a positive int, got {value}.")
        return
    if isinstance(value, numbers.Real):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"`{name}` must be a positive finite number, got {value}.")
        return
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if not jnp.issubdtype(jnp.dtype(value.dtype), jnp.number):
            raise TypeError(f"`{name}` must be numeric, got dtype {value.dtype}.")
        try:
            concrete = np.asarray(value)
        except jax.errors.TracerArrayConversionError:
            return  # traced: its value is unknown while tracing
        if not (np.all(np.isfinite(concrete)) and np.all(concrete > 0)):
            raise ValueError(f"`{name}` must be positive and finite, got {concrete}.")
        return
    raise TypeError(f"`{name}` must be a positive number, got {type(value).__name__} ({value!r}).")


def concrete_scalar(value):
    """A concrete 0-d NumPy or JAX array as a Python scalar; anything else unchanged."""
    if isinstance(value, np.ndarray | np.generic | jax.Array) and np.ndim(value) == 0:
        try:
            return np.asarray(value).item()
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            return value  # traced: checked in the computation (NaN for impossible values)
    return value


def check_nonnegative(name: str, value) -> None:
    """A finite real number >= 0 (Python, NumPy or concrete 0-d JAX scalar)."""
    value = concrete_scalar(value)  # dm_pix's tests pass NumPy scalars
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} ({value!r}).")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value}.")


def check_stabilisers(k1, k2, dtype) -> None:
    """``k1`` and ``k2``: finite, >= 0, their squares finite in `dtype`, not both 0.

    With both 0, identical constant images give SSIM 0/0 (NaN) and a NaN
    gradient, so that is refused. (With ``k1 = 0`` alone, positions whose two
    local means are 0 give NaN; with ``k2 = 0`` alone, flat patches do.)
    """
    for name, k in (("k1", k1), ("k2", k2)):
        check_nonnegative(name, k)
        if float(concrete_scalar(k)) > math.sqrt(float(np.finfo(dtype).max)):
            raise ValueError(f"`{name}` ** 2 must be finite in {np.dtype(dtype).name}, got {k}.")
    if float(concrete_scalar(k1)) == 0 and float(concrete_scalar(k2)) == 0:
        raise ValueError(
            "`k1` and `k2` must not both be 0: identical flat images would give SSIM 0/0 (NaN)."
        )


def check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be True or False, got {type(value).__name__} ({value!r}).")


def check_spatial_dims(spatial_dims) -> None:
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, numbers.Integral):
        raise TypeError(
            f"`spatial_dims` must be the int 1, 2 or 3, got {type(spatial_dims).__name__} "
            f"({spatial_dims!r})."
        )
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"`spatial_dims` must be 1, 2 or 3, got {spatial_dims!r}.")


def check_power_factors(power_factors, length: int | None = None) -> tuple[float, ...]:
    """MS-SSIM scale weights: a non-empty sequence of finite numbers >= 0, not all 0.

    Returns them as a tuple of floats. `length`, when given, is the number of
    scales the caller needs. All-zero weights would make MS-SSIM 1 for any
    input (a product of ``term ** 0``), so they are rejected.
    """
    if isinstance(power_factors, np.ndarray) and power_factors.ndim == 1:
        power_factors = tuple(power_factors.tolist())
    ok = isinstance(power_factors, tuple | list) and len(power_factors) > 0
    if ok:
        values = []
        for w in power_factors:
            if isinstance(w, np.generic | np.ndarray) and np.ndim(w) == 0:
                w = w.item()
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 <= w < np.inf:
                ok = False
                break
            values.append(float(w))
        ok = ok and sum(values) > 0
    if not ok:
        raise ValueError(
            "`power_factors` must be a non-empty sequence of finite numbers >= 0, not all 0, "
            f"got {power_factors!r}."
        )
    if length is not None and len(values) != length:
        raise ValueError(
            f"`power_factors` must have {length} entries (one per scale), got {len(values)}."
        )
    return tuple(values)


def check_window(window) -> str | tuple[float, ...]:
    """A window name, or a 1-D sequence of finite taps >= 0 with a positive sum.

    Returns the name, or the taps as a tuple of floats (not yet normalised).
    """
    if isinstance(window, str):
        check_choice("window", window, WINDOWS)
        return window
    if isinstance(window, np.ndarray | jax.Array):
        window = np.asarray(window).tolist()
    if not isinstance(window, tuple | list):
        raise TypeError(
            f"`window` must be one of {WINDOWS} or a 1-D sequence of taps, got "
            f"{type(window).__name__} ({window!r})."
        )
    taps = []
    for t in window:
        if isinstance(t, np.generic):
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise TypeError(f"`window` taps must be real numbers (a 1-D sequence), got {window!r}.")
        taps.append(float(t))
    if not taps or not all(np.isfinite(t) and t >= 0 for t in taps) or sum(taps) <= 0:
        raise ValueError(
            f"`window` taps must be a non-empty sequence of finite numbers >= 0 with a positive "
            f"sum, got {window!r}."
        )
    return tuple(taps)


def check_mask_values(mask) -> None:
    """A concrete mask must hold finite weights >= 0; traced masks pass through."""
    if mask is None:
        return
    if not hasattr(mask, "dtype"):
        mask = np.asarray(mask)
    dtype = jnp.dtype(mask.dtype)
    real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if not (real or dtype == jnp.bool_):
        raise TypeError(
            f"`mask` must hold real weights (floating-point, integer or bool), got dtype {dtype}."
        )
    try:
        concrete = np.asarray(mask)
    except jax.errors.TracerArrayConversionError:
        return  # traced: its values are unknown while tracing
    if concrete.dtype == np.bool_:
        return
    if not np.all(np.isfinite(concrete)):
        raise ValueError("`mask` must hold finite weights (1 valid, 0 invalid), got NaN or inf.")
    if np.any(concrete < 0):
        raise ValueError("`mask` must hold weights >= 0 (1 valid, 0 invalid), got negative values.")


def check_min_size(shape: tuple[int, ...], spatial_dims: int, min_size: int, why: str) -> None:
    spatial = tuple(shape[-1 - spatial_dims : -1])
    if any(s < min_size for s in spatial):
        raise ValueError(
            f"The spatial size of `predictions` must be at least {min_size} along every spatial "
            f"axis ({why}), got spatial shape {spatial} in shape {tuple(shape)}."
        )


def broadcast_mask(mask: ArrayLike | None, shape: tuple[int, ...], dtype) -> jnp.ndarray | None:
    """Checks that `mask` broadcasts to the image shape and returns it broadcast.

    Its values are checked before the compiled call (:func:`check_mask_values`).
    """
    if mask is None:
        return None
    if not hasattr(mask, "shape"):
        mask = np.asarray(mask)
    dtype = jnp.dtype(mask.dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating) or not (
        dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.number)
    ):
        raise TypeError(f"`mask` must hold real weights or bools, got dtype {dtype}.")
    try:
        out_shape = np.broadcast_shapes(tuple(mask.shape), tuple(shape))
    except ValueError:
        out_shape = None
    if out_shape != tuple(shape):
        raise ValueError(
            f"`mask` must broadcast to the image shape {tuple(shape)} (e.g. [..., H, W, 1] or "
            f"[..., H, W, C]), got shape {tuple(mask.shape)}."
        )
    return jnp.broadcast_to(jnp.asarray(mask, dtype), shape)
