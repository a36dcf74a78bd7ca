"""Test configuration: strict JAX, float64 helpers, shared test images."""

import pathlib
import sys

import jax
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import images

# Implicit rank promotion hides shape bugs; our code must never rely on it.
jax.config.update("jax_numpy_rank_promotion", "raise")


# Reference generators that need libraries outside the test dependencies.
collect_ignore = ["data"]


@pytest.fixture
def x64():
    """Runs a test body with float64 enabled (for float64 references and check_grads)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def photos():
    """Crops of real photographs bundled with scikit-image (float64 in [0, 1])."""
    return images.photos()


@pytest.fixture(scope="session")
def photo_cases():
    """(name, distorted, reference) for every photo and distortion, float64."""
    return images.cases()
