"""Colour and resizing: luminance (Y of YCbCr, ITU-R BT.601) and bicubic resizing, as
super-resolution papers use them (the degradation, the baseline and the Y metrics)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dssim_mae_jax import _protocols


def rgb_to_y(images: jax.typing.ArrayLike) -> jax.Array:
    """Y channel of RGB images [..., H, W, 3] in [0, 1] -> [..., H, W, 1] in [16/255, 235/255].

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` (ITU-R BT.601 in studio range, as
    MATLAB `rgb2ycbcr`): `dssim_mae_jax._protocols.rgb_to_y` with ``max_val=1``, the
    conversion of the metric states' ``y_channel=True``. Single-channel images are returned
    unchanged (they are their own luminance).

    Examples:
      >>> import jax.numpy as jnp
      >>> float(rgb_to_y(jnp.ones((1, 1, 3)))[0, 0, 0]) * 255  # doctest: +ELLIPSIS
      235.0...
    """
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
        return x
    if x.shape[-1] != 3:
        raise ValueError(f"images: expected 1 or 3 channels in the last axis, got shape {x.shape}")
    return _protocols.rgb_to_y(x, max_val=1.0)


def crop_border(images: jax.Array, border: int) -> jax.Array:
    """Removes `border` pixels from each side of [..., H, W, C] (SR evaluation convention):
    `dssim_mae_jax._protocols.crop_border`, the metric states' ``crop_border``."""
    return _protocols.crop_border(images, border)


def bicubic_resize(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bicubic resize of [..., H, W, C] images (antialiased when shrinking)."""
    shape = (*x.shape[:-3], height, width, x.shape[-1])
    return jax.image.resize(x, shape, method="cubic", antialias=True)


def _keys_cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (Keys, IEEE TASSP 1981), as
    `jax.image.resize` ``method="cubic"`` uses."""
    t = np.abs(t)
    return np.where(
        t <= 1, (1.5 * t - 2.5) * t * t + 1, np.where(t < 2, ((-0.5 * t + 2.5) * t - 4) * t + 2, 0)
    )


def _upsample_axis(x: jax.Array, scale: int, axis: int) -> jax.Array:
    n = x.shape[axis]
    # Output sample s*i + r sits at input coordinate i + d_r (pixel centres aligned, as in
    # `jax.image.resize`): it is the same 5-tap filter of x[i-2 .. i+2] for every i.
    d = (np.arange(scale) + 0.5) / scale - 0.5
    taps = np.arange(-2, 3)
    w = _keys_cubic(d[:, None] - taps[None, :])  # [scale, 5], float64 constants
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    xp = jnp.pad(x, pad)
    valid = jnp.pad(jnp.ones((n,), x.dtype), (2, 2))
    shape = [1] * x.ndim
    shape[axis] = n
    phases = []
    for r in range(scale):
        total = sum(
            float(w[r, k]) * jax.lax.slice_in_dim(xp, k, k + n, axis=axis) for k in range(5)
        )
        # Taps beyond the image edge are dropped and the rest renormalised, as jax does.
        norm = sum(float(w[r, k]) * valid[k : k + n] for k in range(5))
        phases.append(total / norm.reshape(shape))
    out = jnp.stack(phases, axis=axis + 1)  # [..., n, scale, ...]
    new_shape = list(x.shape)
    new_shape[axis] = n * scale
    return out.reshape(new_shape)


def bicubic_upsample(images: jax.Array, scale: int) -> jax.Array:
    """The bicubic baseline: [..., h, w, C] -> [..., h*scale, w*scale, C].

    The result of ``jax.image.resize(..., method="cubic")`` (Keys' kernel, edge taps dropped
    and renormalised), computed as one fixed 5-tap filter per output phase. Unlike
    `jax.image.resize`, whose float32 sample coordinates lose precision as they grow (errors of
    about 1e-5 at coordinate 500), every output pixel is computed the same way wherever it
    lies, so a crop of the image gives the same pixels as the whole image: what makes the
    tiled restoration of `load_restorer` equal the untiled one.
    """
    if scale == 1:
        return images
    x = _upsample_axis(images, scale, images.ndim - 3)
    return _upsample_axis(x, scale, images.ndim - 2)


def bicubic_downsample(images: jax.Array, scale: int) -> jax.Array:
    """The super-resolution degradation: [..., H, W, C] -> [..., H//scale, W//scale, C]."""
    return bicubic_resize(images, images.shape[-3] // scale, images.shape[-2] // scale)
