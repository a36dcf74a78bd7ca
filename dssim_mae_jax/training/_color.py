"""Colour and resizing: luminance (Y of YCbCr, ITU-R BT.601) and bicubic resizing, as
super-resolution papers use them (the degradation, the baseline and the Y metrics)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# ITU-R BT.601 "studio swing" luma: Y in [16, 235] for 8-bit RGB in [0, 255]; the coefficients
# MATLAB's rgb2ycbcr uses, which is what SR papers (SRCNN, EDSR, ...) evaluate on.
_BT601 = (65.481, 128.553, 24.966)


def rgb_to_y(images: jax.typing.ArrayLike) -> jax.Array:
    """Y channel of RGB images [..., H, W, 3] in [0, 1] -> [..., H, W, 1] in [16/255, 235/255].

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` (ITU-R BT.601, as MATLAB `rgb2ycbcr`).
    Single-channel images are returned unchanged (they are their own luminance).

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
    w = jnp.asarray(_BT601, jnp.float32).reshape((1,) * (x.ndim - 1) + (3,))
    y = 16.0 + jnp.sum(x * w, axis=-1, keepdims=True)
    return y / 255.0


def crop_border(images: jax.Array, border: int) -> jax.Array:
    """Removes `border` pixels from each side of [..., H, W, C] (SR evaluation convention)."""
    if border == 0:
        return images
    return images[..., border:-border, border:-border, :]


def bicubic_resize(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bicubic resize of [..., H, W, C] images (antialiased when shrinking)."""
    shape = (*x.shape[:-3], height, width, x.shape[-1])
    return jax.image.resize(x, shape, method="cubic", antialias=True)


def bicubic_upsample(images: jax.Array, scale: int) -> jax.Array:
    """The bicubic baseline: [..., h, w, C] -> [..., h*scale, w*scale, C]."""
    return bicubic_resize(images, images.shape[-3] * scale, images.shape[-2] * scale)


def bicubic_downsample(images: jax.Array, scale: int) -> jax.Array:
    """The super-resolution degradation: [..., H, W, C] -> [..., H//scale, W//scale, C]."""
    return bicubic_resize(images, images.shape[-3] // scale, images.shape[-2] // scale)
