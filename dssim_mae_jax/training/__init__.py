"""Training machinery for DSSIM+MAE image restoration: what `train.py` runs, importable.

Import it explicitly (``import dssim_mae_jax`` stays light)::

  from dssim_mae_jax import training

  config = training.Config(steps=200)
  result = training.train_and_evaluate(config, "runs/notebook")

or compose the phased optimizer with any model and loop (no `Config` needed)::

  phases = [training.Phase("mae", 0.3, structural_weight=0.0, mae_weight=1.0,
                           learning_rates={"enc": 2e-3, "dec": 2e-3}),
            training.Phase("dssim_mae", 0.7, learning_rates={"enc": 5e-4, "dec": 1e-3})]
  tx = training.phased_optimizer(
      phases, total_steps=100,
      param_labels=training.label_params([(r"enc/.*", "enc"), (r"dec/.*", "dec")]))
  weights = training.loss_weight_schedule(
      phases, total_steps=100, defaults={"structural_weight": 0.8, "mae_weight": 0.2})

or run `train.py`'s own loop step by step::

  import functools, jax

  tx, rates = training.optimizer_from_config(config)
  state = training.create_train_state(config, tx)
  loss_fn, preset_weights = training.build_loss(config)
  step = jax.jit(functools.partial(
      training.train_step, config=config, loss_fn=loss_fn,
      schedule=training.schedule_from_config(config, rates, preset_weights)))
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

from dssim_mae_jax.training._config import DEFAULT_PHASES, SEED_PHASES, Config, ConfigError, Phase
from dssim_mae_jax.training._data import center_crop, load_dataset, sample_batch
from dssim_mae_jax.training._evaluation import evaluate_dataset, make_evaluator, metric_states
from dssim_mae_jax.training._loop import NonFiniteLossError, train_and_evaluate
from dssim_mae_jax.training._restore import Restorer, load_restorer
from dssim_mae_jax.training._schedules import (
    label_params,
    learning_rate_schedules,
    loss_weight_schedule,
    make_optimizer,
    make_schedule,
    optimizer_from_config,
    param_path,
    phase_boundaries,
    phase_index,
    phased_optimizer,
    schedule_from_config,
)
from dssim_mae_jax.training._steps import TrainState, build_loss, create_train_state, train_step

__all__ = (
    "DEFAULT_PHASES",
    "SEED_PHASES",
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
    "label_params",
    "learning_rate_schedules",
    "load_dataset",
    "load_restorer",
    "loss_weight_schedule",
    "make_evaluator",
    "make_optimizer",
    "make_schedule",
    "metric_states",
    "optimizer_from_config",
    "param_path",
    "phase_boundaries",
    "phase_index",
    "phased_optimizer",
    "sample_batch",
    "schedule_from_config",
    "train_and_evaluate",
    "train_step",
)
