"""Does DSSIM+MAE beat MAE? One denoiser, one schedule, one budget, several seeds.

Every strategy is the *same* `training.Config` (model, data, steps, phase fractions, learning
rates, seeds) with different loss weights per phase, so the only thing that changes between
rows is the objective:

* ``mae``: MAE only (``structural_weight=0, mae_weight=1`` in every phase);
* ``dssim``: DSSIM only (``1, 0``);
* ``dssim_mae``: DSSIM+MAE throughout (``alpha, 1 - alpha``; Zhao et al.'s alpha = 0.84);
* ``phased``: MAE in the first phase, then DSSIM+MAE (Zhao et al.'s switch).

`runs` trains them (`compare_strategies`), `report` summarises them (tables, the verdict, the
Markdown report); ``python -m experiments.strategies --help`` (from the repository root) runs
the whole comparison and writes the report.
"""

from experiments.strategies.report import (
    comparison_report,
    differences_table,
    paired_differences,
    per_seed_table,
    results_table,
    summarize_runs,
    verdict,
)
from experiments.strategies.runs import (
    STRATEGIES,
    Strategy,
    StrategyRun,
    compare_strategies,
    comparison_config,
    default_strategies,
    read_metrics,
    restored_crops,
    strategy_config,
)

__all__ = (
    "STRATEGIES",
    "Strategy",
    "StrategyRun",
    "compare_strategies",
    "comparison_config",
    "comparison_report",
    "default_strategies",
    "differences_table",
    "paired_differences",
    "per_seed_table",
    "read_metrics",
    "restored_crops",
    "results_table",
    "strategy_config",
    "summarize_runs",
    "verdict",
)
