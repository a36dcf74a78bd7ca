"""Training machinery for DSSIM+MAE image restoration: what `train.py` runs, importable.

Import it explicitly (``import dssim_mae_jax`` stays light)::

  from dssim_mae_jax import training

  config = training.Config(steps=200)
  result = training.train_and_evaluate(config, "runs/notebook")

The pieces are public too: `make_model` (`DnCNN`, `SRNet`), `load_dataset` and
`sample_batch`, `make_optimizer` (`optax.multi_transform` over the ``body`` / ``head`` groups
with per-phase schedules), `TrainStep`, `Checkpointer`, and the evaluation helpers.
"""

from dssim_mae_jax.training._checkpoints import Checkpointer
from dssim_mae_jax.training._color import bicubic_upsample, crop_border, rgb_to_y
from dssim_mae_jax.training._config import (
    DEFAULT_PHASES,
    Config,
    ConfigError,
    Phase,
    add_config_arguments,
    config_from_args,
)
from dssim_mae_jax.training._data import (
    Dataset,
    Prefetcher,
    center_crop,
    degrade,
    find_images,
    load_dataset,
    sample_batch,
)
from dssim_mae_jax.training._loop import NonFiniteLossError, make_mesh, train_and_evaluate
from dssim_mae_jax.training._models import DnCNN, SRNet, make_model, pixel_shuffle
from dssim_mae_jax.training._schedules import (
    learning_rate_schedules,
    loss_weights_fn,
    make_optimizer,
    param_labels,
    phase_boundaries,
    phase_index,
)
from dssim_mae_jax.training._steps import (
    ModelDef,
    TrainState,
    TrainStep,
    build_loss,
    create_train_state,
    evaluate_dataset,
    image_metrics,
    make_evaluator,
    y_metrics,
)
from dssim_mae_jax.training._strategies import (
    STRATEGIES,
    Strategy,
    StrategyRun,
    compare_strategies,
    comparison_config,
    comparison_report,
    default_strategies,
    differences_table,
    paired_differences,
    per_seed_table,
    read_metrics,
    restored_crops,
    results_table,
    strategy_config,
    summarize_runs,
    verdict,
)

__all__ = (
    "DEFAULT_PHASES",
    "STRATEGIES",
    "Checkpointer",
    "Config",
    "ConfigError",
    "Dataset",
    "DnCNN",
    "ModelDef",
    "NonFiniteLossError",
    "Phase",
    "Prefetcher",
    "SRNet",
    "Strategy",
    "StrategyRun",
    "TrainState",
    "TrainStep",
    "add_config_arguments",
    "bicubic_upsample",
    "build_loss",
    "center_crop",
    "compare_strategies",
    "comparison_config",
    "comparison_report",
    "config_from_args",
    "create_train_state",
    "crop_border",
    "default_strategies",
    "degrade",
    "differences_table",
    "evaluate_dataset",
    "find_images",
    "image_metrics",
    "learning_rate_schedules",
    "load_dataset",
    "loss_weights_fn",
    "make_evaluator",
    "make_mesh",
    "make_model",
    "make_optimizer",
    "paired_differences",
    "param_labels",
    "per_seed_table",
    "phase_boundaries",
    "phase_index",
    "pixel_shuffle",
    "read_metrics",
    "restored_crops",
    "results_table",
    "rgb_to_y",
    "sample_batch",
    "strategy_config",
    "summarize_runs",
    "train_and_evaluate",
    "verdict",
    "y_metrics",
)
