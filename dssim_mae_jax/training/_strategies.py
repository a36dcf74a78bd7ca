"""A fair comparison of loss strategies: one denoiser, one schedule, one budget, several seeds.

Every strategy is the *same* :class:`Config` (model, data, steps, phase fractions, learning
rates, seeds) with different loss weights per phase, so the only thing that changes between
rows is the objective:

* ``mae``: MAE only (``ssim_weight=0, mae_weight=1`` in every phase);
* ``dssim``: DSSIM only (``1, 0``);
* ``dssim_mae``: DSSIM+MAE throughout (``alpha, 1 - alpha``; Zhao et al.'s alpha = 0.84);
* ``phased``: MAE in the first phase, then DSSIM+MAE (Zhao et al.'s switch).

The base config's phases are kept as they are (fractions, learning rates, frozen groups);
a strategy only rewrites their ``ssim_weight`` / ``mae_weight``: the first phase gets the
strategy's ``first`` weights, every later phase its ``rest`` weights. With the default phases
(30% at 2e-3, then 70% at 5e-4 / 1e-3) every strategy sees the same learning-rate schedule.

Command line (writes the Markdown report, e.g. ``docs/results.md``)::

  python benchmarks/compare_strategies.py --steps 500 --seeds 0 1 --out docs/results.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ._config import DEFAULT_PHASES, Config, ConfigError
from ._loop import train_and_evaluate

METRICS = ("psnr", "ssim", "ms_ssim", "mae")
# Two PSNRs closer than this (dB, mean over seeds) count as "equal" in the verdict.
PSNR_TOLERANCE_DB = 0.05


@dataclasses.dataclass(frozen=True)
class Strategy:
    """Loss weights of one strategy, as ``(ssim_weight, mae_weight)`` pairs.

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


def comparison_config(**fields: Any) -> Config:
    """The shared base config of a comparison: `Config` defaults plus `fields`.

    The default phases (30% then 70%, with their learning rates) give every strategy the same
    schedule; checkpoints are written only at the end (one kept) and the progress bar is off.

    Examples:
      >>> comparison_config(steps=100, features=8).checkpoint_every
      100
    """
    fields = {
        "phases": tuple(p.to_dict() for p in DEFAULT_PHASES),
        "progress_bar": False,
        "keep_checkpoints": 1,
        **fields,
    }
    fields.setdefault("checkpoint_every", max(int(fields.get("steps", Config().steps)), 1))
    return Config(**fields).validate()


def strategy_config(base: Config, strategy: Strategy, *, seed: int | None = None) -> Config:
    """`base` with the phase loss weights of `strategy` (and `seed`, when given).

    Raises:
      ConfigError: the base schedule has a single phase but the strategy switches weights.
    """
    phases = [dict(p) for p in base.phases]
    if len(phases) < 2 and strategy.first != strategy.rest:
        raise ConfigError(
            f"strategy {strategy.name!r} switches losses after the first phase, but the base "
            f"config has {len(phases)} phase(s); give it at least two"
        )
    for i, p in enumerate(phases):
        p["ssim_weight"], p["mae_weight"] = strategy.first if i == 0 else strategy.rest
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
    config: Config
    workdir: str
    eval: dict
    train_seconds: float
    params: Any = dataclasses.field(repr=False, default=None)


def compare_strategies(
    base: Config,
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
      strategies: names from :data:`STRATEGIES` or :class:`Strategy` objects.
      seeds: seeds to repeat every strategy with.
      log: called with one line per finished run (e.g. ``print``).

    Returns:
      One :class:`StrategyRun` per (strategy, seed), strategies outermost.
    """
    resolved = [_resolve(s) for s in strategies]
    if not resolved:
        raise ValueError("strategies: expected at least one strategy")
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    configs = {
        (s.name, k): strategy_config(base, s, seed=int(k)) for s in resolved for k in seeds
    }  # validate every config before the first (long) run starts
    runs = []
    for s in resolved:
        for k in seeds:
            run_dir = os.path.join(workdir, s.name, f"seed{int(k)}")
            config = configs[(s.name, k)]
            result = train_and_evaluate(config, run_dir)
            run = StrategyRun(
                strategy=s.name,
                spec=s,
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
                    f"{s.name:>10} seed {int(k)}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, "
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


# ------------------------------------------------------------------------------ summaries
def summarize_runs(runs: Sequence[StrategyRun]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per strategy and metric: ``(mean, spread)`` over seeds of the model's held-out metrics.

    The spread is the sample standard deviation (0 for a single seed). The noisy input is
    reported under the name ``"input"`` (it does not depend on the strategy).
    """
    by_strategy: dict[str, list[StrategyRun]] = {}
    for r in runs:
        by_strategy.setdefault(r.strategy, []).append(r)
    out = {}
    first = next(iter(by_strategy.values()))
    for name, group, which in [("input", first, "input")] + [
        (n, g, "model") for n, g in by_strategy.items()
    ]:
        stats = {}
        for k in METRICS:
            vals = [r.eval[which][k] for r in group if k in r.eval[which]]
            if len(vals) == len(group):
                stats[k] = _mean_spread(vals)
        out[name] = stats
    return out


def _mean_spread(vals: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(vals, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def paired_differences(
    runs: Sequence[StrategyRun], *, reference: str = "mae"
) -> dict[str, dict[str, list[float]]]:
    """Per strategy and metric, the per-seed differences ``strategy - reference``."""
    ref = {r.seed: r.eval["model"] for r in runs if r.strategy == reference}
    out: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        if r.strategy == reference or r.seed not in ref:
            continue
        d = out.setdefault(r.strategy, {})
        for k in METRICS:
            if k in r.eval["model"] and k in ref[r.seed]:
                d.setdefault(k, []).append(r.eval["model"][k] - ref[r.seed][k])
    return out


def verdict(runs: Sequence[StrategyRun], strategy: str, *, reference: str = "mae") -> str:
    """One sentence: does `strategy` beat `reference` on SSIM at equal or better PSNR?

    "Beats" means: SSIM higher for every seed, and mean PSNR no more than
    ``PSNR_TOLERANCE_DB`` below the reference's.
    """
    diffs = paired_differences(runs, reference=reference).get(strategy)
    if not diffs:
        return f"`{strategy}`: no paired runs with `{reference}` to compare."
    ds, dp = np.asarray(diffs["ssim"]), np.asarray(diffs["psnr"])
    n = ds.size
    ssim_wins = int((ds > 0).sum())
    psnr_ok = float(dp.mean()) >= -PSNR_TOLERANCE_DB
    beats = ssim_wins == n and psnr_ok
    head = "**yes**" if beats else "**no**"
    return (
        f"{head} — `{strategy}` vs `{reference}`: SSIM {ds.mean():+.4f} "
        f"(higher in {ssim_wins}/{n} seeds), PSNR {dp.mean():+.2f} dB "
        f"(higher in {int((dp > 0).sum())}/{n} seeds)"
        + ("" if psnr_ok else f", more than {PSNR_TOLERANCE_DB} dB below on average")
        + "."
    )


def _fmt(k: str, mean: float, spread: float, n: int) -> str:
    digits = {"psnr": 2, "ssim": 4, "ms_ssim": 4, "mae": 4}[k]
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def results_table(runs: Sequence[StrategyRun]) -> str:
    """A Markdown table: held-out metrics per strategy, mean ± sample std over seeds."""
    stats = summarize_runs(runs)
    labels = {r.strategy: r.spec.label for r in runs}
    labels["input"] = "noisy input (no model)"
    n = len({r.seed for r in runs})
    cols = [k for k in METRICS if all(k in s for s in stats.values())]
    names = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "ms_ssim": "MS-SSIM ↑", "mae": "MAE ↓"}
    lines = [
        "| strategy | " + " | ".join(names[k] for k in cols) + " |",
        "| --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for name, s in stats.items():
        cells = [_fmt(k, *s[k], n) for k in cols]
        lines.append(f"| {labels.get(name, name)} (`{name}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(runs: Sequence[StrategyRun]) -> str:
    """A Markdown table with one row per run (strategy, seed)."""
    cols = [k for k in METRICS if all(k in r.eval["model"] for r in runs)]
    lines = [
        "| strategy | seed | " + " | ".join(cols) + " | train s |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " | --- |",
    ]
    for r in runs:
        m = r.eval["model"]
        cells = [_fmt(k, m[k], 0.0, 1) for k in cols]
        lines.append(
            f"| `{r.strategy}` | {r.seed} | " + " | ".join(cells) + f" | {r.train_seconds:.0f} |"
        )
    return "\n".join(lines)


def differences_table(runs: Sequence[StrategyRun], *, reference: str = "mae") -> str:
    """A Markdown table of paired per-seed differences to `reference`, mean ± std."""
    diffs = paired_differences(runs, reference=reference)
    if not diffs:
        return ""
    cols = [k for k in METRICS if all(k in d for d in diffs.values())]
    lines = [
        "| strategy − `" + reference + "` | " + " | ".join(f"Δ {k}" for k in cols) + " |",
        "| --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for name, d in diffs.items():
        cells = []
        for k in cols:
            mean, spread = _mean_spread(d[k])
            digits = 2 if k == "psnr" else 4
            cells.append(
                f"{mean:+.{digits}f} ± {spread:.{digits}f}" if len(d[k]) > 1 else f"{mean:+.4f}"
            )
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def restored_crops(
    runs: Sequence[StrategyRun], *, crop: int = 64, index: int = 0
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(noisy, restored, clean) center crops of held-out image `index`, one triple per run.

    The images are those behind ``eval.json`` (same noise: seed + 1). The runs must share
    the model architecture and data (as the runs of one comparison do); the evaluator is
    compiled once for all of them.
    """
    from ._data import load_dataset
    from ._steps import create_train_state, evaluate_dataset, make_evaluator

    if not runs:
        return []
    first = runs[0].config
    _, model_def, _ = create_train_state(first)
    dataset = load_dataset(first)
    evaluate = make_evaluator(first, model_def)
    out = []
    for run in runs:
        _, shown = evaluate_dataset(
            run.config, evaluate, run.params, dataset.eval, seed=run.config.seed + 1
        )
        noisy, restored, clean = shown[index]
        h, w = clean.shape[:2]
        c = min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        out.append(tuple(a[top : top + c, left : left + c] for a in (noisy, restored, clean)))
    return out


# ------------------------------------------------------------------------------ report
def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    device = jax.devices()[0]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{cpu}, {os.cpu_count()} cores visible, JAX {jax.__version__} on "
        f"{getattr(device, 'device_kind', device.platform)}; "
        f"load average at the end (1, 5, 15 min): {load}"
    )


def comparison_report(runs: Sequence[StrategyRun], *, command: str, wall_seconds: float) -> str:
    """The Markdown report written by :func:`main`."""
    base = runs[0].config
    seeds = sorted({r.seed for r in runs})
    phases = base.phase_list
    schedule = "; ".join(
        f"{p.name}: {p.fraction:.0%} of steps, lr body {p.learning_rates['body']:g} / "
        f"head {p.learning_rates['head']:g}"
        for p in phases
    )
    strategies = list({r.strategy: r.spec for r in runs}.values())
    weights = "\n".join(
        f"| `{s.name}` | {s.label} | {s.first[0]:g} / {s.first[1]:g} | {s.rest[0]:g} / "
        f"{s.rest[1]:g} |"
        for s in strategies
    )
    names = {s.name for s in strategies}
    verdicts = "\n".join(
        f"- {verdict(runs, n)}" for n in ("dssim_mae", "phased", "dssim") if n in names
    )
    m, s = divmod(round(wall_seconds), 60)
    reused = sum(r.train_seconds < 1.0 for r in runs)
    wall = f"{m} min {s} s ({len(runs)} runs" + (
        f"; {reused} finished runs were reused from the workdir, not retrained)" if reused else ")"
    )
    return f"""# Does DSSIM+MAE beat MAE? Measured.

Generated by `dssim_mae_jax.training.compare_strategies` — regenerate with the command below.

```bash
{command}
```

- Machine: {_machine()}.
- Wall time of the whole command: {wall}. Finished runs in the workdir are reused (only
  re-evaluated): use a new `--workdir` to train from scratch.
- Task: `{base.task}` (Gaussian noise σ = {base.noise_sigma:g}/255), model: DnCNN-style,
  {base.depth} convolutions × {base.features} features; {base.steps} steps of batch
  {base.batch_size}, {base.patch_size}×{base.patch_size} patches of the bundled scikit-image
  photographs; seeds {", ".join(map(str, seeds))} (parameters, batches, noise).
- Held-out evaluation: `chelsea` and `coffee`, center-cropped to {base.eval_crop}, fresh noise
  (seed + 1, identical for every strategy of a seed), outputs clipped to [0, 1]; the mean over
  the two images, then mean ± sample standard deviation over seeds.
- Loss: preset `{base.preset}` (structural term `D = 1 - SSIM`, 11-tap Gaussian, valid; MAE
  divided by the data range 1), weights set per phase as below. Every strategy shares the same
  phases and learning rates ({schedule}); only the loss weights differ.

| name | strategy | first phase: w_ssim / w_mae | later phases: w_ssim / w_mae |
| --- | --- | --- | --- |
{weights}

## Held-out metrics

{results_table(runs)}

Paired differences to MAE only (same seed, same noise), mean ± std over seeds:

{differences_table(runs)}

## Verdict: better SSIM at equal or better PSNR than MAE only?

Rule: SSIM higher for every seed, and mean PSNR at most {PSNR_TOLERANCE_DB} dB below.

{verdicts}

## Caveats

- Two held-out images: a small test set. Read the paired differences against their spread
  over seeds before the means.
- A short CPU budget ({base.steps} steps, {base.features}-feature model): Zhao et al. trained
  far longer, and their mix uses MS-SSIM with a Gaussian-weighted L1 (`zhao-mix`, which needs
  161-pixel patches); here the structural term is single-scale SSIM on
  {base.patch_size}-pixel patches.
- The learning rates are those of `train.py`'s default phased recipe, shared by every
  strategy; no strategy was tuned on its own. Gradients are clipped to a global norm of
  {base.grad_clip_norm:g}, which acts on each loss's own gradient scale.

## Every run

{per_seed_table(runs)}
"""


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Command line: train every strategy and seed, print and write the Markdown report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "python -m dssim_mae_jax.training._strategies"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    d = Config()
    parser.add_argument("--steps", type=int, default=d.steps, help="steps per run (%(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="(%(default)s)")
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES)
    )
    parser.add_argument("--alpha", type=float, default=0.84, help="DSSIM weight of the mix")
    parser.add_argument("--features", type=int, default=d.features, help="(%(default)s)")
    parser.add_argument("--depth", type=int, default=d.depth, help="(%(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="(%(default)s)")
    parser.add_argument("--patch-size", type=int, default=d.patch_size, help="(%(default)s)")
    parser.add_argument("--eval-crop", type=int, default=d.eval_crop, help="(%(default)s)")
    parser.add_argument("--workdir", default="runs/strategies", help="(%(default)s)")
    parser.add_argument("--out", default="", help="write the Markdown report here")
    args = parser.parse_args(argv)
    chosen = default_strategies(alpha=args.alpha)
    try:
        base = comparison_config(
            steps=args.steps,
            features=args.features,
            depth=args.depth,
            batch_size=args.batch_size,
            patch_size=args.patch_size,
            eval_crop=args.eval_crop,
        )
    except ConfigError as e:
        parser.error(str(e))
    t0 = time.perf_counter()
    runs = compare_strategies(
        base,
        args.workdir,
        strategies=[chosen[n] for n in args.strategies],
        seeds=args.seeds,
        log=lambda line: print(line, flush=True),
    )
    wall = time.perf_counter() - t0
    text = comparison_report(runs, command=f"{prog} {shlex.join(argv)}".strip(), wall_seconds=wall)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
