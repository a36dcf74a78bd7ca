"""A study of DSSIM+MAE recipes for `train.py`'s default task: which structural weight,
schedule, structure and colour-cast remedy gains SSIM over MAE alone without costing PSNR.

``python -m experiments.recipes --out docs/results_recipes.md`` trains the grid (resumable),
and writes the report and the figures. Modules: `losses` (the recipe losses, built from the
public metrics), `grid` (the recipes, in priority order), `run` (one training run and its JSON
record), `report` (tables, intervals, Pareto front, colour cast, convergence, figures).
"""
