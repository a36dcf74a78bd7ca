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


# Modules of end-to-end tests (training runs, subprocesses, notebooks, experiments, kernels in
# interpret mode, lowering and multi-device meshes): marked `slow` as a whole, so `make test`
# (``-m "not slow"``) stays a few minutes on two cores; `make test-slow` runs them, and CI
# runs both (.ci/run).
SLOW_MODULES = frozenset(
    {
        "test_distributed.py",
        "test_lowering.py",
        "test_metric_sharding.py",
        "test_notebooks.py",
        "test_pallas.py",
        "test_pipeline.py",
        "test_predict.py",
        "test_recipes_experiment.py",
        "test_restore.py",
        "test_sharding.py",
        "test_strategies.py",
        "test_training_extend.py",
        "test_training_loop.py",
        "test_training_reliability.py",
        "test_zhao_dense.py",
        "test_zhao_experiment.py",
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
