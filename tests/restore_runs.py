"""Workdirs of finished runs for the restoration tests, made without training.

The parameters are the initial ones plus Gaussian noise (std 0.2), so the model is far from the
identity and every one of its convolutions matters (an untrained residual model is close to
the identity, which would hide a wrong tile margin).
"""

import os

import jax
import jax.numpy as jnp

from dssim_mae_jax import training
from dssim_mae_jax.training._checkpoints import Checkpointer
from dssim_mae_jax.training._writers import write_json


def make_run(workdir, *, step=None, **config_fields):
    """Writes ``config.json`` and one checkpoint (at `step`, default the run's last) to
    `workdir`; returns ``(config, params)``."""
    config = training.Config(steps=10, features=8, depth=4, **config_fields)
    tx, _ = training.make_optimizer(config)
    state = training.create_train_state(config, tx)
    leaves, tree = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    noisy = [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    params = jax.tree.unflatten(tree, noisy)
    state = state.replace(params=params, step=jnp.asarray(config.steps if step is None else step))
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3)
    checkpoints.save(state)
    checkpoints.close()
    return config, params, state.apply_fn
