"""A CPU-scale reproduction of Zhao, Gallo, Frosio and Kautz, "Loss Functions for Image
Restoration with Neural Networks" (IEEE TCI 2017, arXiv:1511.08861).

Run it with ``python experiments/zhao.py``; see ``docs/results_zhao.md``. Modules: `data`
(images, tasks, patches), `models` (the network), `losses` (the compared losses, built from the
public ``dssim_mae_jax`` functions), `run` (train and evaluate one run), `stats` (paired
differences with intervals), `report` (tables, figures, markdown).
"""
