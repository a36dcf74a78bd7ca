"""The strategies, their configs, and the training runs of a comparison.

The base config's phases are kept as they are (fractions, learning rates, frozen groups); a
strategy only rewrites their ``structural_weight`` / ``mae_weight``: the first phase gets the
strategy's ``first`` weights, every later phase its ``rest`` weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from dssim_mae_jax import training


@dataclasses.dataclass(frozen=True)
class Strategy:
    """Loss weights of one strategy, as ``(structural_weight, mae_weight)`` pairs.

    Attributes:
      name: short identifier (a workdir name and a table row).
      label: human-readable description for tables and plots.
      first: weights of the first phase of the base schedule.
      rest: weights of every later phase.
    """

    name: str
    label: str
    first: tuple[float, float]
    rest: tuple[float, float]


def default_strategies(*, alpha: float = 0.84) -> dict[str, Strategy]:
    """The four strategies of the comparison, DSSIM+MAE weighted ``alpha : 1 - alpha``.

    Examples:
      >>> [s.rest for s in default_strategies(alpha=0.84).values()]
      [(0.0, 1.0), (1.0, 0.0), (0.84, 0.16), (0.84, 0.16)]
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: got {alpha!r}, expected a number in [0, 1]")
    mix = (float(alpha), round(1.0 - float(alpha), 10))
    return {
        "mae": Strategy("mae", "MAE only", (0.0, 1.0), (0.0, 1.0)),
        "dssim": Strategy("dssim", "DSSIM only", (1.0, 0.0), (1.0, 0.0)),
        "dssim_mae": Strategy("dssim_mae", f"DSSIM+MAE ({alpha:g})", mix, mix),
        "phased": Strategy("phased", f"MAE, then DSSIM+MAE ({alpha:g})", (0.0, 1.0), mix),
    }


STRATEGIES: Mapping[str, Strategy] = default_strategies()


def comparison_config(**fields: Any) -> training.Config:
    """The shared base config of a comparison: `training.Config` defaults with the seed's
    recipe (preset "seed-naive", its phases), plus `fields`.

    Checkpoints are written only at the end (one kept) and the progress bar is off, unless
    `fields` say otherwise.

    Examples:
      >>> comparison_config(steps=100, features=8).checkpoint_every
      100
    """
    fields = {"progress_bar": False, "keep_checkpoints": 1, **fields}
    # The study compares the seed's strategies: its preset and phases, not train.py's default.
    fields.setdefault("preset", "seed-naive")
    fields.setdefault("phases", training.SEED_PHASES)
    fields.setdefault("checkpoint_every", max(int(fields.get("steps", training.Config().steps)), 1))
    return training.Config(**fields).validate()


def strategy_config(
    base: training.Config, strategy: Strategy, *, seed: int | None = None
) -> training.Config:
    """`base` with the phase loss weights of `strategy` (and `seed`, when given).

    Raises:
      ConfigError: the base schedule has a single phase but the strategy switches weights.
    """
    if len(base.phases) < 2 and strategy.first != strategy.rest:
        raise training.ConfigError(
            f"strategy {strategy.name!r} switches losses after the first phase, but the base "
            f"config has {len(base.phases)} phase(s); give it at least two"
        )
    phases = []
    for i, p in enumerate(base.phases):
        structural_weight, mae_weight = strategy.first if i == 0 else strategy.rest
        phases.append(
            dataclasses.replace(p, structural_weight=structural_weight, mae_weight=mae_weight)
        )
    changes: dict[str, Any] = {"phases": tuple(phases)}
    if seed is not None:
        changes["seed"] = seed
    return base.replace(**changes).validate()


@dataclasses.dataclass
class StrategyRun:
    """One trained model of the comparison.

    Attributes:
      strategy: the strategy's name.
      spec: the strategy itself (label and weights).
      seed: the seed of parameters, batches and noise.
      config: the exact config it was trained with.
      workdir: its run folder (``metrics.jsonl``, ``eval.json``, ``curves.png``, ...).
      eval: held-out metrics, ``{"input": {...}, "model": {...}}`` as in ``eval.json``.
      train_seconds: wall time of the training loop (about 0 when an already finished run was
        only re-evaluated).
      params: the trained parameters (host arrays).
    """

    strategy: str
    spec: Strategy
    seed: int
    config: training.Config
    workdir: str
    eval: dict
    train_seconds: float
    params: Any = dataclasses.field(repr=False, default=None)


def compare_strategies(
    base: training.Config,
    workdir: str,
    *,
    strategies: Sequence[str | Strategy] = tuple(STRATEGIES),
    seeds: Sequence[int] = (0,),
    log: Callable[[str], None] | None = None,
) -> list[StrategyRun]:
    """Trains `base` under each strategy and seed, in ``workdir/<strategy>/seed<k>``.

    Every run is ``train_and_evaluate(strategy_config(base, s, seed=k), ...)``: same model,
    data, step budget and learning rates; only the loss weights differ. A folder that already
    holds a finished run with the same config is resumed (i.e. only re-evaluated).

    Args:
      base: the shared config (its ``seed`` is replaced by each of `seeds`).
      workdir: parent folder of the runs.
      strategies: names from `STRATEGIES` or `Strategy` objects.
      seeds: seeds to repeat every strategy with.
      log: called with one line per finished run (e.g. ``print``).

    Returns:
      One `StrategyRun` per (strategy, seed), strategies outermost.
    """
    resolved = [_resolve(s) for s in strategies]
    if not resolved:
        raise ValueError("strategies: expected at least one strategy")
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    # Every config is validated before the first (long) run starts.
    configs = {(s.name, k): strategy_config(base, s, seed=int(k)) for s in resolved for k in seeds}
    runs = []
    for (name, k), config in configs.items():
        run_dir = os.path.join(workdir, name, f"seed{int(k)}")
        result = training.train_and_evaluate(config, run_dir)
        run = StrategyRun(
            strategy=name,
            spec=next(s for s in resolved if s.name == name),
            seed=int(k),
            config=config,
            workdir=run_dir,
            eval=result["eval"],
            train_seconds=float(result["train_seconds"]),
            params=jax.device_get(result["state"].params),
        )
        runs.append(run)
        if log is not None:
            m = run.eval["model"]
            log(
                f"{name:>10} seed {run.seed}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, "
                f"MAE {m['mae']:.4f} ({run.train_seconds:.0f} s)"
            )
    return runs


def _resolve(s: str | Strategy) -> Strategy:
    if isinstance(s, Strategy):
        return s
    if s not in STRATEGIES:
        raise ValueError(f"strategies: unknown strategy {s!r}; expected one of {list(STRATEGIES)}")
    return STRATEGIES[s]


def read_metrics(workdir: str) -> list[dict]:
    """The training log of a run (``metrics.jsonl``), one dict per logged step."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def restored_crops(
    runs: Sequence[StrategyRun], *, crop: int = 64, index: int = 0
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(degraded, restored, clean) center crops of held-out image `index`, one per run.

    The images are those behind ``eval.json`` (same noise: seed + 1). The runs must share
    the model architecture and data (as the runs of one comparison do); the evaluator is
    compiled once for all of them.
    """
    if not runs:
        return []
    first = runs[0].config
    tx, _ = training.make_optimizer(first)
    apply_fn = training.create_train_state(first, tx).apply_fn
    held_out = training.load_dataset(first).eval
    evaluate = training.make_evaluator(first, apply_fn)
    out = []
    for run in runs:
        _, shown = training.evaluate_dataset(
            run.config, evaluate, run.params, held_out, seed=run.config.seed + 1
        )
        degraded, restored, clean = shown[index]
        h, w = clean.shape[:2]
        c = min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        out.append(tuple(a[top : top + c, left : left + c] for a in (degraded, restored, clean)))
    return out
