"""Uses the public API as a user's typed code would; checked by mypy (`make lint`), never run.

If a public signature loses or breaks its annotations (an argument that no longer accepts an
array, a result that is no longer a `jax.Array`), mypy reports it here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import dssim_mae_jax as dmj
from dssim_mae_jax import training


def metrics(x: jax.Array, y: np.ndarray) -> list[jax.Array]:
    return [
        dmj.ssim(x, y, max_val=1.0),
        dmj.ms_ssim(x, y, max_val=1.0),
        dmj.multi_sigma_ssim(x, y, max_val=1.0),
        dmj.dssim(x, y, max_val=1.0),
        dmj.mae(x, y, max_val=1.0),
        dmj.psnr(x, y, max_val=255.0),
    ]


def loss_and_gradient(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    loss_fn = dmj.make_loss("seed-naive")
    per_image, aux = loss_fn(x, y)
    gradient: jax.Array = jax.grad(lambda p: loss_fn(p, y)[0].mean())(x)
    assert isinstance(aux, dict)
    return per_image, gradient


def presets() -> dmj.LossConfig:
    return dmj.PRESETS["zhao-mix"]


def configs() -> training.Config:
    return training.Config(steps=10)


if __name__ == "__main__":
    raise SystemExit("checked by mypy, not run")


_ = (metrics, loss_and_gradient, presets, configs, jnp)
