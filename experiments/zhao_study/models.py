"""The restoration network: a small fully-convolutional net in the spirit of Zhao et al.

Zhao et al. train one small fully-convolutional network (three convolutions with PReLU
activations) for every task and loss, so that only the loss changes. Here: three convolutions
(``kernels`` sizes, ``features`` wide) with PReLU between them, zero "same" padding so that a
patch or a full image goes in and the same size comes out.

With ``residual=True`` (the default here, not in the paper) the net predicts a correction that
is added to its input, and its last layer starts near zero: an untrained net returns its input.
That lets a CPU budget of a few thousand steps converge; it is a deviation, stated in the report.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class PReLU(nnx.Module):
    """Parametric ReLU with one learned slope per channel (He et al. 2015), slopes start at 0.25."""

    def __init__(self, features: int):
        self.slope = nnx.Param(jnp.full((features,), 0.25, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.slope[...].reshape((1,) * (x.ndim - 1) + (-1,))
        return jnp.where(x >= 0, x, slope * x)


class ZhaoNet(nnx.Module):
    """conv(k0) -> PReLU -> conv(k1) -> PReLU -> conv(k2), optionally plus the input."""

    def __init__(
        self,
        *,
        features: int = 32,
        kernels: tuple[int, int, int] = (5, 3, 3),
        residual: bool = True,
        rngs: nnx.Rngs,
    ):
        k0, k1, k2 = kernels
        self.residual = residual
        last_init = nnx.initializers.variance_scaling(
            0.01 if residual else 1.0, "fan_in", "truncated_normal"
        )
        self.conv0 = nnx.Conv(3, features, (k0, k0), padding="SAME", rngs=rngs)
        self.act0 = PReLU(features)
        self.conv1 = nnx.Conv(features, features, (k1, k1), padding="SAME", rngs=rngs)
        self.act1 = PReLU(features)
        self.conv2 = nnx.Conv(
            features, 3, (k2, k2), padding="SAME", kernel_init=last_init, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.act1(self.conv1(self.act0(self.conv0(x))))
        out = self.conv2(h)
        return x + out if self.residual else out
