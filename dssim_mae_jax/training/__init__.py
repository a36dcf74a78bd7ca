"""Training machinery for DSSIM+MAE image restoration: what `train.py` runs, importable.

Import it explicitly (``import dssim_mae_jax`` stays light)::

  from dssim_mae_jax import training

  config = training.Config(steps=200)
  result = training.train_and_evaluate(config, "runs/notebook")

or write your own loop from the same pieces::

  import functools, jax

  tx, rates = training.make_optimizer(config)
  state = training.create_train_state(config, tx)
  loss_fn, preset_weights = training.build_loss(config)
  step = jax.jit(functools.partial(
      training.train_step, config=config, loss_fn=loss_fn,
      schedule=training.make_schedule(config, rates, preset_weights)))
  dataset = training.load_dataset(config)
  for i in range(config.steps):
      batch = training.sample_batch(dataset.train, seed=config.seed, step=i,
                                    batch_size=config.batch_size, patch_size=config.patch_size)
      state, metrics = step(state, batch)
  evaluate = training.make_evaluator(config, state.apply_fn)
  means, images = training.evaluate_dataset(config, evaluate, state.params, dataset.eval,
                                            seed=config.seed + 1)

The modules behind these names (`_config`, `_schedules`, `_steps`, `_data`, `_evaluation`,
`_loop`, ...) hold more helpers; tests import them directly.
"""

from dssim_mae_jax.training._config import Config, ConfigError, Phase
from dssim_mae_jax.training._data import center_crop, load_dataset, sample_batch
from dssim_mae_jax.training._evaluation import evaluate_dataset, make_evaluator
from dssim_mae_jax.training._loop import NonFiniteLossError, train_and_evaluate
from dssim_mae_jax.training._restore import Restorer, load_restorer
from dssim_mae_jax.training._schedules import make_optimizer, make_schedule
from dssim_mae_jax.training._steps import TrainState, build_loss, create_train_state, train_step

__all__ = (
    "Config",
    "ConfigError",
    "NonFiniteLossError",
    "Phase",
    "Restorer",
    "TrainState",
    "build_loss",
    "center_crop",
    "create_train_state",
    "evaluate_dataset",
    "load_dataset",
    "load_restorer",
    "make_evaluator",
    "make_optimizer",
    "make_schedule",
    "sample_batch",
    "train_and_evaluate",
    "train_step",
)
