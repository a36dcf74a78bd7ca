"""Test configuration: strict JAX, float64 helpers, shared test images."""

import contextlib

import jax
import numpy as np
import pytest

# Implicit rank promotion hides shape bugs; our code must never rely on it.
jax.config.update("jax_numpy_rank_promotion", "raise")


@contextlib.contextmanager
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture
def x64():
    """Runs a test body with float64 enabled (for float64 references and check_grads)."""
    with _x64():
        yield


@pytest.fixture(scope="session")
def photos():
    """Real photographs bundled with scikit-image (no network), as float64 in [0, 1]."""
    from skimage import data

    astronaut = data.astronaut()[100:292, 150:342].astype(np.float64) / 255.0  # 192x192x3
    coffee = data.coffee()[80:280, 200:420].astype(np.float64) / 255.0  # 200x220x3, even/odd mix
    camera = data.camera()[::2, ::2][:, :, None].astype(np.float64) / 255.0  # 256x256x1
    return {"astronaut": astronaut, "coffee": coffee, "camera": camera}


def distortions(image: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Distorted versions of `image` (float64 in [0, 1]) used across tests."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    blur_sigma = (1.5, 1.5) + (0,) * (image.ndim - 2)
    return {
        "noise": np.clip(image + rng.normal(0.0, 0.08, image.shape), 0.0, 1.0),
        "blur": ndimage.gaussian_filter(image, sigma=blur_sigma),
        "contrast": 0.5 * image + 0.25,
        "brightness": np.clip(image + 0.15, 0.0, 1.0),
        "shift": np.roll(image, 1, axis=1),
        "inverse": 1.0 - image,
    }
