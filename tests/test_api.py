"""The public surface: names, keyword-only hyperparameters, docstrings, no private imports."""

import inspect

import pytest

import dssim_mae_jax

PUBLIC_FUNCTIONS = [
    name for name in dssim_mae_jax.__all__ if inspect.isfunction(getattr(dssim_mae_jax, name))
]


def test_all_names_exist_once():
    for name in dssim_mae_jax.__all__:
        assert hasattr(dssim_mae_jax, name), name
    assert len(set(dssim_mae_jax.__all__)) == len(dssim_mae_jax.__all__)  # order: ruff RUF022
    for core in ("ssim", "ms_ssim", "dssim", "mae", "psnr"):
        assert core in PUBLIC_FUNCTIONS


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_hyperparameters_are_keyword_only(name):
    """Every parameter with a default must be keyword-only (no positional defaults)."""
    signature = inspect.signature(getattr(dssim_mae_jax, name))
    for param in signature.parameters.values():
        if param.default is not inspect.Parameter.empty:
            assert param.kind is inspect.Parameter.KEYWORD_ONLY, (name, param.name)


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_docstrings_have_the_standard_sections(name):
    fn = getattr(dssim_mae_jax, name)
    doc = inspect.getdoc(fn)
    assert doc, name
    sections = ["Returns:", "Examples:"]
    if inspect.signature(fn).parameters:
        sections.append("Args:")
    for section in sections:
        assert section in doc, (name, section)


def test_package_ships_type_marker():
    import pathlib

    assert (pathlib.Path(dssim_mae_jax.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize("name", ["ssim", "dssim", "ms_ssim", "mae", "psnr"])
def test_metrics_are_compiled_once_wrappers_keeping_their_signature(name):
    fn = getattr(dssim_mae_jax, name)
    assert hasattr(fn, "_jitted"), name  # dssim_mae_jax._jit.jit_public
    assert fn.__module__.startswith("dssim_mae_jax."), name  # doctests are found
    assert "max_val" in inspect.signature(fn).parameters
