"""Flax NNX restoration models, each split into two parameter groups: ``body`` and ``head``.

Both models share one body (3x3 convolutions with ReLU) and one head (a last convolution that
predicts a residual); they differ only in how the residual is combined with the input. The
group is the first attribute name of every parameter, which is how the optimizer labels them
(`param_labels`): a phase may give the body a lower learning rate, or freeze it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ._color import bicubic_upsample
from ._config import Config


def _conv(cin, cout, *, dtype, rngs, kernel_init=None):
    kw = {} if kernel_init is None else {"kernel_init": kernel_init}
    return nnx.Conv(
        cin, cout, (3, 3), padding="SAME", dtype=dtype, param_dtype=jnp.float32, rngs=rngs, **kw
    )


# The last convolution of a residual model starts small so that the untrained model is close to
# the identity (denoiser) or to bicubic upsampling (SR): training starts from the input's PSNR.
_small_init = nnx.initializers.variance_scaling(0.1, "fan_in", "truncated_normal")


class _ResidualCNN(nnx.Module):
    """``depth - 1`` convolutions with ReLU (``body``), then one convolution (``head``)."""

    def __init__(self, *, channels: int, out_channels: int, features: int, depth: int, dtype, rngs):
        convs = [_conv(channels, features, dtype=dtype, rngs=rngs)]
        convs += [_conv(features, features, dtype=dtype, rngs=rngs) for _ in range(depth - 2)]
        self.body = nnx.List(convs)
        self.head = _conv(features, out_channels, dtype=dtype, rngs=rngs, kernel_init=_small_init)

    def residual(self, x: jax.Array) -> jax.Array:
        h = x
        for conv in self.body:
            h = nnx.relu(conv(h))
        return self.head(h)


class DnCNN(_ResidualCNN):
    """A DnCNN-style residual denoiser (Zhang et al., IEEE TIP 2017), without batch norm.

    ``depth`` 3x3 convolutions (ReLU between them) predict the noise, which is subtracted from
    the input: ``y = x - head(body(x))``.

    Args:
      channels: image channels in and out.
      features: width of the hidden convolutions.
      depth: number of convolutions, at least 2 (``depth - 1`` in the body, 1 in the head).
      dtype: computation dtype of the convolutions (parameters are float32).
      rngs: NNX random streams for initialisation.
    """

    def __init__(self, *, channels: int, features: int, depth: int, dtype=jnp.float32, rngs):
        super().__init__(
            channels=channels,
            out_channels=channels,
            features=features,
            depth=depth,
            dtype=dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return x - self.residual(x).astype(x.dtype)


def pixel_shuffle(x: jax.Array, scale: int) -> jax.Array:
    """Sub-pixel rearrangement [..., H, W, C*s*s] -> [..., H*s, W*s, C] (Shi et al., 2016)."""
    *lead, h, w, c = x.shape
    cout = c // (scale * scale)
    x = x.reshape(*lead, h, w, scale, scale, cout)
    n = len(lead)
    x = jnp.moveaxis(x, n + 2, n + 1)  # [..., h, s, w, s, c]
    return x.reshape(*lead, h * scale, w * scale, cout)


class SRNet(_ResidualCNN):
    """A small super-resolution network with sub-pixel upsampling (ESPCN-like, residual).

    The body works at low resolution; the head maps to ``channels * scale**2`` features that
    `pixel_shuffle` turns into the high-resolution residual, added to the bicubic upsampling.

    Args:
      channels: image channels in and out.
      scale: upsampling factor.
      features: width of the hidden convolutions.
      depth: number of convolutions, at least 2.
      dtype: computation dtype of the convolutions.
      rngs: NNX random streams for initialisation.
    """

    def __init__(
        self, *, channels: int, scale: int, features: int, depth: int, dtype=jnp.float32, rngs
    ):
        super().__init__(
            channels=channels,
            out_channels=channels * scale * scale,
            features=features,
            depth=depth,
            dtype=dtype,
            rngs=rngs,
        )
        self.scale = scale

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = pixel_shuffle(self.residual(x), self.scale).astype(x.dtype)
        return bicubic_upsample(x, self.scale) + residual


def make_model(config: Config, *, rngs: nnx.Rngs) -> nnx.Module:
    """The model for `config.task`: `DnCNN` for ``denoise``, `SRNet` for ``sr``."""
    dtype = jnp.dtype(config.compute_dtype)
    size = {"channels": config.channels, "features": config.features, "depth": config.depth}
    if config.task == "denoise":
        return DnCNN(**size, dtype=dtype, rngs=rngs)
    return SRNet(**size, scale=config.scale, dtype=dtype, rngs=rngs)
