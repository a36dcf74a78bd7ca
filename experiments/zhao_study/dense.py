"""Dense supervision check: Mix and l1 trained on larger crops, beside the 31x31 study.

On a crop of side S each loss is the mean of its released per-patch value over all
(S - 30)^2 31x31 sub-patch positions (``experiments/zhao.py --crop S``). The crop-31 runs and
the dense runs share seeds (initial weights) and held-out images with their noise, so their
differences are paired across crops too.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from . import report, run, stats

PSNR = report.METRICS[0]


def load_runs(runs_dir: str, task: str) -> dict:
    """``{(task, loss, seed): result}`` of the finished per-budget JSON files under
    ``runs_dir/task``, each cell at the budget `run.run_cell` picks (trains nothing)."""
    base = {}
    for path in glob.glob(os.path.join(runs_dir, task, "*.json")):
        with open(path) as f:
            cfg = json.load(f)["config"]
        key = (cfg["loss"], cfg["seed"])
        if key not in base or cfg["steps"] < base[key]["steps"]:
            base[key] = cfg
    cells = {}
    for (loss, _), cfg in sorted(base.items()):
        cfg = {**cfg, "kernels": tuple(cfg["kernels"])}
        cells.setdefault(loss, []).append(run.RunConfig(**cfg))
    out = {}
    for loss, cfgs in cells.items():
        picked = run.run_cell(
            cfgs, None, runs_dir, max_doublings=4, train=False, log=lambda m: None
        )
        out.update({(task, loss, seed): r for seed, r in picked.items()})
    return out


def _seconds(res: dict) -> float:
    """Training and evaluation time of a run over every budget tried."""
    return res.get("all_budgets_seconds", res["train_seconds"])


def _columns(sets, task, seeds):
    """(label, results, loss) for every loss complete in every set, crop by crop."""
    cols = []
    for crop, results in sets:
        for name in report.complete_losses(results, task, ("l1", "mix", "phased"), seeds):
            cols.append((f"{report.LABELS[name]}, {crop}×{crop}", results, name))
    return cols


def metrics_table(cols, task, seeds) -> list[str]:
    """Mean over seeds × held-out images, one column per (loss, crop)."""
    lines = [
        "| metric | " + " | ".join(c[0] for c in cols) + " |",
        "| --- " * (len(cols) + 1) + "|",
    ]
    for key, label, nd in report.METRICS:
        vals = [np.mean(report.grid(r, task, name, key, seeds)) for _, r, name in cols]
        lines.append(f"| {label} | " + " | ".join(report._fmt(v, nd) for v in vals) + " |")
    extra = [
        (
            "PSNR, colour offset removed (dB)",
            lambda r, n: _mean_key(r, task, n, seeds, "psnr_offset_removed"),
        ),
        ("mean colour offset R, G, B (8-bit levels)", lambda r, n: _offset(r, task, n, seeds)),
        ("val. PSNR gain, last 20% of steps (dB)", lambda r, n: _late(r, task, n, seeds)),
        (
            "training and evaluation time per run, all budgets (s)",
            lambda r, n: f"{np.mean([_seconds(r[(task, n, s)]) for s in seeds]):.0f}",
        ),
    ]
    for label, fn in extra:
        lines.append(f"| {label} | " + " | ".join(fn(r, name) for _, r, name in cols) + " |")
    return lines


def _mean_key(results, task, name, seeds, key) -> str:
    return f"{np.mean(report.grid(results, task, name, key, seeds)):.2f}"


def _offset(results, task, name, seeds) -> str:
    offs = [m["offset"] for s in seeds for m in results[(task, name, s)]["per_image"]]
    return ", ".join(f"{v:+.2f}" for v in np.mean(offs, axis=0))


def _late(results, task, name, seeds) -> str:
    return f"{np.mean([stats.late_gain(results[(task, name, s)]['curve']) for s in seeds]):+.2f}"


def _by_metric(a_fn, b_fn) -> dict:
    """{metric: stats.paired(a, b)} with a, b the [seeds, images] grids a_fn(key), b_fn(key)."""
    return {key: stats.paired(a_fn(key), b_fn(key)) for key, _, _ in report.METRICS}


def paired_rows(sets, task, seeds) -> list[tuple[str, dict]]:
    """(label, {metric: stats.paired}) for the comparisons the verdict rests on."""
    g = lambda r, loss: lambda key: report.grid(r, task, loss, key, seeds)
    gap = lambda r: lambda key: g(r, "mix")(key) - g(r, "l1")(key)
    rows = []
    for crop, r in sets:
        for loss in ("mix", "phased"):
            if report.complete_losses(r, task, (loss, "l1"), seeds) == [loss, "l1"]:
                label = f"{report.LABELS[loss]} − ℓ1, both {crop}×{crop}"
                rows.append((label, _by_metric(g(r, loss), g(r, "l1"))))
    if not all(
        report.complete_losses(r, task, ("l1", "mix"), seeds) == ["l1", "mix"] for _, r in sets
    ):
        return rows
    (c0, r0), (c1, r1) = sets
    rows.append(
        (
            f"(Mix − ℓ1 at {c1}) − (Mix − ℓ1 at {c0}): change of the gap",
            _by_metric(gap(r1), gap(r0)),
        )
    )
    for loss in ("mix", "l1"):
        label = f"{report.LABELS[loss]} at {c1} − {report.LABELS[loss]} at {c0}"
        rows.append((label, _by_metric(g(r1, loss), g(r0, loss))))
    return rows


def paired_table(rows) -> list[str]:
    lines = ["| difference | " + " | ".join(f"Δ {m[1]}" for m in report.METRICS) + " |"]
    lines.append("| --- " * (len(report.METRICS) + 1) + "|")
    for label, by_key in rows:
        cells = []
        for key, _, nd in report.METRICS:
            p = by_key[key]
            cells.append(f"{report.interval(p, nd)} ({p['positive']}/{p['n']})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def verdict(rows, crop: int) -> str:
    """A plain reading of the PSNR intervals: does the Mix − l1 gap close at the large crop?"""
    by = dict(rows)
    dense = next(
        (v["psnr"] for k, v in by.items() if k.startswith("Mix − ℓ1, both " + f"{crop}×")), None
    )
    change = next((v["psnr"] for k, v in by.items() if k.startswith("(Mix − ℓ1")), None)
    if dense is None or change is None:
        return "Incomplete: the l1 and Mix runs of both crops are needed for a verdict."
    gap = f"Mix − ℓ1 at {crop}×{crop}: {report.interval(dense, 2)} dB"
    shift = f"change of the gap from 31×31: {report.interval(change, 2)} dB"
    if dense["hi"] >= 0:
        answer = "Supported: with dense supervision Mix is no longer worse than ℓ1 in PSNR"
    elif change["lo"] > 0:
        answer = "Partly supported: dense supervision narrows the gap, but Mix stays behind ℓ1"
    else:
        answer = "Not supported: dense supervision does not narrow the PSNR gap between Mix and ℓ1"
    return f"{answer} ({gap}; {shift}; 95% two-way bootstrap intervals over seeds × images)."


def write(out: str, *, sets, task: str, seeds, setup: list[str]) -> None:
    """The markdown report: `setup` lines, the metrics, paired differences, the verdict.

    Args:
      out: markdown path to write.
      sets: ``[(crop, results), ...]``, the 31x31 study first, then the dense crop.
      task: the task compared.
      seeds: the seeds every run of the tables has.
      setup: markdown lines describing the runs (commands, machine, wall time).
    """
    rows = paired_rows(sets, task, seeds)
    lines = ["# Zhao et al. reproduction: dense supervision (Mix vs ℓ1 on larger crops)", ""]
    lines += [
        *setup,
        "",
        f"## {report.TASK_TITLES[task]}: held-out images, mean over seeds × images",
        "",
    ]
    lines += metrics_table(_columns(sets, task, seeds), task, seeds)
    lines += ["", "## Paired differences: mean [95% interval] (pairs > 0 / pairs)", ""]
    lines += paired_table(rows)
    lines += ["", "## Verdict", "", verdict(rows, sets[-1][0])]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
