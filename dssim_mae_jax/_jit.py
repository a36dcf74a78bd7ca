"""Compile-once wrapper for the public functions, eager calls included.

A public function decorated with :func:`jit_public` is compiled by ``jax.jit``
once per input shape/dtype and option values, whether it is called eagerly or
inside a user's ``jit``/``grad``/``vmap``. Called eagerly without it, JAX
would dispatch (and compile) every primitive of the trace on its own, which
costs many times the jitted call (``docs/benchmarks.md``, eager section).

Hyperparameters (``filter_size``, ``k1``, ``window``, ...) are *static*: the
compiled function depends on their values. Before the call they are
normalised so that equal options share one compilation and hash:

* NumPy scalars and concrete 0-d arrays become Python scalars
  (``np.float32(0.01)``, ``jnp.asarray(11)``);
* lists and concrete 1-D (or N-D) arrays become (nested) tuples;
* mappings become hashable dicts.

The cache key holds each option's type as well as its value, so ``11`` and
``11.0`` (equal and of equal hash in Python) are traced separately and
validated each on its own. A traced value (inside ``jit``/``grad``) given for
a static option cannot be made static: that raises a ``TypeError`` naming the
option. Everything else (images, masks, ``max_val``) is a dynamic argument:
it may be traced, and its concrete values are checked before the call by the
`checks` given to the decorator (the checks inside the function only see
tracers). The function body's own validation runs when it is traced, i.e. at
the first call with a given shape and options.

The filtering method and chunk size forced by
:func:`dssim_mae_jax._filters.method_override` and
:func:`~dssim_mae_jax._filters.chunk_override` (tests, benchmarks) are part of
the cache key too, so a forced method is never served a compilation traced
with another.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dssim_mae_jax import _filters

__all__ = ("jit_public",)

# What users of other libraries call our arguments (piq, pytorch_msssim,
# scikit-image, torchmetrics): a TypeError says what it is called here.
_OTHER_NAMES = {"data_range": "max_val", "win_size": "filter_size", "sigma": "filter_sigma"}


class _HashableDict(dict):
    """A dict that hashes by its (sorted) items; built only from normalised values."""

    def __hash__(self):  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: repr(kv[0]))))


def _concrete(name: str, value):
    """The concrete NumPy value of a JAX array given for a static option."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        raise TypeError(
            f"`{name}` is a static option (its value shapes the computation) and must be a "
            f"concrete number, string or sequence, got a traced array ({value}). Pass it as "
            "a Python value, or mark it static in your own `jax.jit` (static_argnames)."
        ) from None


def normalize_static(name: str, value):
    """`value` as a hashable Python value (see the module docstring)."""
    if isinstance(value, jax.Array):
        value = _concrete(name, value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else normalize_static(name, value.tolist())
    if isinstance(value, list | tuple):
        return tuple(normalize_static(name, v) for v in value)
    if isinstance(value, Mapping):
        return _HashableDict((k, normalize_static(name, v)) for k, v in value.items())
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a number, string, sequence or other hashable value, got "
            f"{type(value).__name__} ({value!r})."
        ) from None
    return value


def _type_key(value):
    """The types inside a normalised static value (part of the cache key)."""
    if isinstance(value, tuple):
        return tuple(_type_key(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted(((repr(k), _type_key(v)) for k, v in value.items())))
    return type(value).__qualname__


def normalize_dynamic(name: str, value):
    """An array argument as something ``jax.jit`` takes, or a clear ``TypeError``.

    Mappings, tuples and NamedTuples (loss weights, a balance state) are
    normalised leaf by leaf.
    """
    if isinstance(value, Mapping):
        return {k: normalize_dynamic(f"{name}['{k}']", v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(
            *(
                normalize_dynamic(f"{name}.{f}", v)
                for f, v in zip(value._fields, value, strict=True)
            )
        )
    if value is None or isinstance(value, jax.Array | np.ndarray | np.generic):
        array = value
    elif isinstance(value, bool | int | float):
        return value
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"`{name}` must be an array or a number, got {type(value).__name__}."
            ) from error
    if array is not None:
        dtype = jnp.dtype(array.dtype)
        # (jnp: bfloat16 and the other ML dtypes count as numbers.)
        if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.number)):
            raise TypeError(
                f"`{name}` must hold real numbers (floating-point, integer or bool), got dtype "
                f"{dtype}."
            )
    return array


def _bind(fn, signature: inspect.Signature, args, kwargs) -> inspect.BoundArguments:
    """`signature.bind`, with messages for the habits of other libraries' users."""
    for other, ours in _OTHER_NAMES.items():
        if other in kwargs and other not in signature.parameters and ours in signature.parameters:
            raise TypeError(
                f"{fn.__name__}() has no argument `{other}`: it is called `{ours}` here "
                f"(write {ours}=...)."
            )
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(args) > len(positional):
        keyword = [p.name for p in signature.parameters.values() if p.kind == p.KEYWORD_ONLY]
        extra = keyword[: len(args) - len(positional)]
        hint = ", ".join(f"{n}=..." for n in extra)
        raise TypeError(
            f"{fn.__name__}() takes {len(positional)} positional arguments "
            f"({', '.join(p.name for p in positional)}) but {len(args)} were given; its "
            f"options are keyword-only: write {hint or 'them as name=value'}."
        )
    return signature.bind(*args, **kwargs)


def jit_public(
    static: Iterable[str],
    *,
    checks: Mapping[str, Callable[[object], None]] | None = None,
    check_all: Callable[[dict], None] | None = None,
):
    """Decorator: `fn` compiled once per shapes and option values, called eagerly or not.

    Args:
      static: names of the hyperparameters (keyword arguments of `fn`) that are
        static; every other argument is dynamic (an array or ``None``).
      checks: optional ``{argument name: check(value)}`` run on the dynamic
        arguments before the jitted call, where their values are still
        concrete (for example ``max_val > 0``); a check must let traced values
        through.
      check_all: optional ``check(arguments)`` run after `checks` on the dict
        of all (bound, defaulted) arguments, for checks that relate several
        (integer images against ``max_val``).

    Returns:
      A decorator. The wrapped function keeps the name, docstring, module and
      signature of `fn` (``functools.wraps``); ``wrapper.core`` is `fn`
      itself, for internal callers that are already inside a computation.
    """
    static = frozenset(static)
    checks = dict(checks or {})

    def decorate(fn):
        signature = inspect.signature(fn)
        unknown = (static | set(checks)) - set(signature.parameters)
        if unknown:
            raise ValueError(f"{fn.__name__} has no parameters {sorted(unknown)}.")

        @functools.partial(jax.jit, static_argnames=("options",))
        def compiled(arrays, options):
            return fn(**arrays, **{name: value for name, value, _ in options[1:]})

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = _bind(fn, signature, args, kwargs)
            bound.apply_defaults()
            if check_all is not None:
                for name, check in checks.items():
                    check(bound.arguments[name])
                check_all(bound.arguments)
            arrays, options = {}, []
            for name, value in bound.arguments.items():
                if name in static:
                    value = normalize_static(name, value)
                    options.append((name, value, _type_key(value)))
                else:
                    if name in checks and check_all is None:
                        checks[name](value)  # first: it may give the clearer message
                    arrays[name] = normalize_dynamic(name, value)
            return compiled(arrays, (_filters.trace_context(), *options))

        wrapper.core = fn
        wrapper._jitted = compiled  # for tests: cache statistics
        return wrapper

    return decorate
