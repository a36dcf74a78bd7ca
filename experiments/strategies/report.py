"""Summaries of a comparison: tables, the verdict, and the Markdown report.

The report states only what it read: the configs of the runs, the names of the images the
data folder (or the bundled photographs) gave, the loss configuration `make_loss` built, the
measured metrics, and the machine as Python and JAX describe it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence

import jax
import numpy as np

from dssim_mae_jax import training
from experiments.strategies.runs import StrategyRun

METRICS = ("psnr", "ssim", "ms_ssim", "mae")
# Two PSNRs closer than this (dB, mean over seeds) count as "equal" in the verdict.
PSNR_TOLERANCE_DB = 0.05


def summarize_runs(runs: Sequence[StrategyRun]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per strategy and metric: ``(mean, spread)`` over seeds of the model's held-out metrics.

    The spread is the sample standard deviation (0 for a single seed). The degraded input is
    reported under the name ``"input"`` (it does not depend on the strategy).
    """
    by_strategy: dict[str, list[StrategyRun]] = {}
    for r in runs:
        by_strategy.setdefault(r.strategy, []).append(r)
    first = next(iter(by_strategy.values()))
    groups = [("input", first, "input")] + [(n, g, "model") for n, g in by_strategy.items()]
    out = {}
    for name, group, which in groups:
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
    head = "**yes**" if ssim_wins == n and psnr_ok else "**no**"
    return (
        f"{head} — `{strategy}` vs `{reference}`: SSIM {ds.mean():+.4f} "
        f"(higher in {ssim_wins}/{n} seeds), PSNR {dp.mean():+.2f} dB "
        f"(higher in {int((dp > 0).sum())}/{n} seeds)"
        + ("" if psnr_ok else f", more than {PSNR_TOLERANCE_DB} dB below on average")
        + "."
    )


_DIGITS = {"psnr": 2, "ssim": 4, "ms_ssim": 4, "mae": 4}


def _fmt(k: str, mean: float, spread: float, n: int) -> str:
    d = _DIGITS[k]
    return f"{mean:.{d}f} ± {spread:.{d}f}" if n > 1 else f"{mean:.{d}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def results_table(runs: Sequence[StrategyRun]) -> str:
    """A Markdown table: held-out metrics per strategy, mean ± sample std over seeds."""
    stats = summarize_runs(runs)
    labels = {r.strategy: r.spec.label for r in runs}
    baseline = "noisy" if runs[0].config.task == "denoise" else "bicubic"
    labels["input"] = f"{baseline} input (no model)"
    n = len({r.seed for r in runs})
    cols = [k for k in METRICS if all(k in s for s in stats.values())]
    names = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "ms_ssim": "MS-SSIM ↑", "mae": "MAE ↓"}
    rows = [
        [f"{labels.get(name, name)} (`{name}`)", *(_fmt(k, *s[k], n) for k in cols)]
        for name, s in stats.items()
    ]
    return _table(["strategy", *(names[k] for k in cols)], rows)


def per_seed_table(runs: Sequence[StrategyRun]) -> str:
    """A Markdown table with one row per run (strategy, seed)."""
    cols = [k for k in METRICS if all(k in r.eval["model"] for r in runs)]
    rows = [
        [f"`{r.strategy}`", str(r.seed)]
        + [_fmt(k, r.eval["model"][k], 0.0, 1) for k in cols]
        + [f"{r.train_seconds:.0f}"]
        for r in runs
    ]
    return _table(["strategy", "seed", *cols, "train s"], rows)


def differences_table(runs: Sequence[StrategyRun], *, reference: str = "mae") -> str:
    """A Markdown table of paired per-seed differences to `reference`, mean ± std."""
    diffs = paired_differences(runs, reference=reference)
    if not diffs:
        return ""
    cols = [k for k in METRICS if all(k in d for d in diffs.values())]
    rows = []
    for name, d in diffs.items():
        cells = []
        for k in cols:
            mean, spread = _mean_spread(d[k])
            digits = 2 if k == "psnr" else 4
            many = len(d[k]) > 1
            cells.append(f"{mean:+.{digits}f} ± {spread:.{digits}f}" if many else f"{mean:+.4f}")
        rows.append([f"`{name}`", *cells])
    return _table([f"strategy − `{reference}`", *(f"Δ {k}" for k in cols)], rows)


def machine() -> str:
    """The machine as Python and JAX describe it, and the load average now."""
    device = jax.devices()[0]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{platform.platform()} ({platform.machine()}), {os.cpu_count()} cores visible, "
        f"JAX {jax.__version__} on {getattr(device, 'device_kind', device.platform)}; "
        f"load average at the end (1, 5, 15 min): {load}"
    )


def _setup_lines(base: training.Config, train_names, eval_names) -> str:
    """The facts of the shared config, read from it and from the loaded data."""
    task = (
        f"`denoise` (Gaussian noise σ = {base.noise_sigma:g}/255)"
        if base.task == "denoise"
        else f"`sr` (bicubic downsampling ×{base.scale})"
    )
    data = f"`{base.data_dir}`" if base.data_dir else "the photographs bundled with scikit-image"
    loss = training.build_loss(base)[0].config
    schedule = "; ".join(
        f"{p.name}: {p.fraction:.0%} of steps, lr body {p.learning_rates['body']:g} / "
        f"head {p.learning_rates['head']:g}" + (f", frozen {list(p.frozen)}" if p.frozen else "")
        for p in base.phases
    )
    return f"""\
- Task: {task}; model: {base.depth} convolutions × {base.features} features, compute dtype
  {base.compute_dtype}; {base.steps} steps of batch {base.batch_size},
  {base.patch_size}×{base.patch_size} patches of {len(train_names)} training image(s) from
  {data}: {", ".join(f"`{n}`" for n in train_names)}.
- Held-out evaluation: {", ".join(f"`{n}`" for n in eval_names)}, center-cropped to at most
  {base.eval_crop} pixels, degraded with seed + 1 (identical for every strategy of a seed),
  outputs clipped to [0, 1]; the mean over the {len(eval_names)} image(s), then mean ± sample
  standard deviation over seeds.
- Loss: preset `{base.preset}` with overrides {base.loss_overrides or "none"}: structural term
  `{loss.structure}` ({loss.dssim_form} DSSIM form, {loss.window} window of
  {loss.filter_size} taps, σ = {loss.filter_sigma:g}, padding `{loss.padding}`), absolute term
  MAE (normalised by the data range: {loss.normalize_mae}); weights set per phase as below.
  Every strategy shares the same phases and learning rates ({schedule}); only the loss
  weights differ. Gradients are clipped to a global norm of {base.grad_clip_norm:g}."""


def _pair(weights: tuple[float, float]) -> str:
    return f"{weights[0]:g} / {weights[1]:g}"


def comparison_report(
    runs: Sequence[StrategyRun],
    *,
    command: str,
    wall_seconds: float,
    train_names: Sequence[str],
    eval_names: Sequence[str],
) -> str:
    """The Markdown report: set-up, held-out metrics, verdicts, every run.

    `train_names` / `eval_names` are the training and held-out image names of the data the
    runs used (``training.load_dataset(config)``).
    """
    base, seeds = runs[0].config, sorted({r.seed for r in runs})
    strategies = list({r.strategy: r.spec for r in runs}.values())
    weights = _table(
        [
            "name",
            "strategy",
            "first phase: structural / MAE weight",
            "later phases: structural / MAE weight",
        ],
        [[f"`{s.name}`", s.label, _pair(s.first), _pair(s.rest)] for s in strategies],
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

Generated by `python -m experiments.strategies` — regenerate with the command below.

```bash
{command}
```

- Machine: {machine()}.
- Wall time of the whole command: {wall}. Finished runs in the workdir are reused (only
  re-evaluated): use a new `--workdir` to train from scratch.
{_setup_lines(base, train_names, eval_names)}
- Seeds {", ".join(map(str, seeds))} (parameters, batches, noise).

{weights}

## Held-out metrics

{results_table(runs)}

Paired differences to MAE only (same seed, same degradation), mean ± std over seeds:

{differences_table(runs)}

## Verdict: better SSIM at equal or better PSNR than MAE only?

Rule: SSIM higher for every seed, and mean PSNR at most {PSNR_TOLERANCE_DB} dB below.

{verdicts}

## Every run

{per_seed_table(runs)}
"""
