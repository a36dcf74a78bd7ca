"""Deterministic real-photograph test cases (no pytest import: the reference
generator in tests/data/ uses this module too)."""

import numpy as np
from scipy import ndimage
from skimage import data


def photos() -> dict[str, np.ndarray]:
    """Crops of photographs bundled with scikit-image, float64 in [0, 1]."""
    return {
        "astronaut": data.astronaut()[100:292, 150:342].astype(np.float64) / 255.0,  # 192x192x3
        "coffee": data.coffee()[80:280, 200:420].astype(np.float64) / 255.0,  # 200x220x3
        "chelsea": data.chelsea()[50:227, 100:293].astype(np.float64) / 255.0,  # 177x193x3, odd
        "camera": data.camera()[::2, ::2][:, :, None].astype(np.float64) / 255.0,  # 256x256x1
    }


def distortions(image: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Distorted versions of `image` (float64 in [0, 1])."""
    rng = np.random.default_rng(seed)
    blur_sigma = (1.5, 1.5) + (0,) * (image.ndim - 2)
    return {
        "noise": np.clip(image + rng.normal(0.0, 0.08, image.shape), 0.0, 1.0),
        "blur": ndimage.gaussian_filter(image, sigma=blur_sigma),
        "contrast": 0.5 * image + 0.25,
        "brightness": np.clip(image + 0.15, 0.0, 1.0),
        "shift": np.roll(image, 1, axis=1),
        "quantized": np.round(image * 7.0) / 7.0,
        "inverse": 1.0 - image,
    }


def cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, distorted, reference) for every photo and distortion."""
    out = []
    for photo_name, image in photos().items():
        for kind, distorted in distortions(image).items():
            out.append((f"{photo_name}-{kind}", distorted, image))
    return out
