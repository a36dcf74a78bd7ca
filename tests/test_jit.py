"""The compile-once wrapper of the public functions (dssim_mae_jax._jit)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dssim_mae_jax import _filters, _jit


def _checked_max_val(value):
    if isinstance(value, float | int) and value <= 0:
        raise ValueError(f"`max_val` must be positive, got {value}.")


def _make_counted():
    """A decorated toy function and the list its traces are recorded in."""
    traces = []

    @_jit.jit_public(("scale", "taps", "mode"), checks={"max_val": _checked_max_val})
    def toy(x, *, max_val, scale=2, taps=(1.0,), mode="a", mask=None):
        """Toy docstring.

        Examples:
          >>> 1
          1
        """
        traces.append((type(scale), scale, taps, mode, _filters.resolve_method()))
        if not isinstance(scale, int):
            raise TypeError(f"`scale` must be an int, got {scale!r}.")
        out = x * scale * sum(taps) / max_val
        return out if mask is None else out * mask

    return toy, traces


def test_traces_once_per_shape_and_options():
    toy, traces = _make_counted()
    x = jnp.ones((3,))
    for _ in range(3):
        np.testing.assert_allclose(toy(x, max_val=2.0), 1.0)
    assert len(traces) == 1
    toy(x, max_val=4.0)  # a new max_val value: same compilation (dynamic)
    assert len(traces) == 1
    toy(jnp.ones((4,)), max_val=1.0)  # new shape
    toy(x, max_val=1.0, scale=3)  # new option value
    assert len(traces) == 3


def test_numpy_scalars_and_concrete_arrays_become_python_values():
    toy, traces = _make_counted()
    x = jnp.ones((2,))
    out = toy(x, max_val=1.0, scale=np.int64(3), taps=jnp.asarray([0.5, 0.5]))
    np.testing.assert_allclose(out, 3.0)
    toy(x, max_val=1.0, scale=jnp.asarray(3), taps=[0.5, 0.5])
    toy(x, max_val=1.0, scale=3, taps=(np.float64(0.5), 0.5))
    assert len(traces) == 1
    assert traces[0][:3] == (int, 3, (0.5, 0.5))


def test_equal_options_of_different_types_are_traced_separately():
    toy, _ = _make_counted()
    x = jnp.ones((2,))
    toy(x, max_val=1.0, scale=2)
    with pytest.raises(TypeError, match=r"`scale` must be an int, got 2\.0"):
        toy(x, max_val=1.0, scale=2.0)  # 2.0 == 2 and hash(2.0) == hash(2)


def test_traced_static_option_is_a_type_error_naming_it():
    toy, _ = _make_counted()

    @jax.jit
    def user(x, s):
        return toy(x, max_val=1.0, scale=s)

    with pytest.raises(TypeError, match="`scale` is a static option"):
        user(jnp.ones((2,)), 3)


def test_unhashable_static_option_is_a_type_error():
    toy, _ = _make_counted()
    with pytest.raises(TypeError, match="`mode` must be a number, string, sequence"):
        toy(jnp.ones((2,)), max_val=1.0, mode={1, 2})


def test_checks_see_concrete_values_and_let_tracers_through():
    toy, _ = _make_counted()
    x = jnp.ones((2,))
    with pytest.raises(ValueError, match=r"`max_val` must be positive, got -1\.0"):
        toy(x, max_val=-1.0)
    toy(x, max_val=1.0)  # compiled now: the check still runs before the cached call
    with pytest.raises(ValueError, match="`max_val` must be positive"):
        toy(x, max_val=0)
    np.testing.assert_allclose(jax.jit(lambda m: toy(x, max_val=m))(4.0), 0.5)


def test_dynamic_arguments_of_non_numeric_dtype_are_type_errors():
    toy, _ = _make_counted()
    with pytest.raises(TypeError, match="`x` must hold real numbers"):
        toy(np.array(["a"]), max_val=1.0)
    np.testing.assert_allclose(toy([1.0, 2.0], max_val=1.0), [2.0, 4.0])
    np.testing.assert_allclose(toy(jnp.ones(2, jnp.bfloat16), max_val=1.0), [2.0, 2.0])
    np.testing.assert_allclose(toy(jnp.ones(2), max_val=1.0, mask=[True, False]), [2.0, 0.0])


def test_works_under_grad_vmap_and_user_jit():
    toy, _ = _make_counted()
    grad = jax.grad(lambda v: jnp.sum(toy(v, max_val=2.0)))(jnp.ones((3,)))
    np.testing.assert_allclose(grad, 1.0)
    batched = jax.vmap(lambda v: toy(v, max_val=1.0))(jnp.ones((4, 3)))
    assert batched.shape == (4, 3)
    np.testing.assert_allclose(jax.jit(lambda v: toy(v, max_val=1.0))(jnp.ones(3)), 2.0)


def test_filter_method_override_is_part_of_the_cache_key():
    toy, traces = _make_counted()
    x = jnp.ones((2,))
    toy(x, max_val=1.0)
    with _filters.method_override("conv"):
        toy(x, max_val=1.0)
    assert [t[-1] for t in traces] == [_filters.default_method(), "conv"]


def test_keeps_name_docstring_and_keyword_only_signature():
    toy, _ = _make_counted()
    assert toy.__name__ == "toy"
    assert "Toy docstring." in toy.__doc__
    params = inspect.signature(toy).parameters
    assert params["scale"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["scale"].default == 2
    with pytest.raises(TypeError):
        toy(jnp.ones(2), 1.0)  # max_val is keyword-only


def test_unknown_static_names_are_rejected_at_decoration():
    with pytest.raises(ValueError, match="no parameters"):
        _jit.jit_public(("nope",))(lambda x: x)
