"""Tables, figures and the markdown report of the Zhao et al. reproduction."""

from __future__ import annotations

import json
import os

import numpy as np

from . import paper, stats

METRICS = (("psnr", "PSNR (dB) ↑", 2), ("ssim", "SSIM ↑", 4), ("ms_ssim", "MS-SSIM ↑", 4))
METRICS += (("l1x1000", "1000 × ℓ1 ↓", 2),)
LABELS = {
    "input": "input (no net)",
    "l2": "ℓ2",
    "l1": "ℓ1",
    "ssim": "SSIM₅",
    "msssim": "MS-SSIM",
    "mix": "Mix",
    "phased": "ℓ1 → Mix",
    "mix_luma": "Mix on luma (remedy)",
    "mix_a50": "Mix α=0.5 (remedy)",
}
TASK_TITLES = {
    "denoise": "Gaussian denoising (σ = 25/255)",
    "sr": "Super-resolution ×2 (bicubic down, bicubic up, then the net)",
    "jpeg": "JPEG deblocking (Pillow, quality 20)",
    "demosaic": "Joint denoising + demosaicking (RGGB Bayer, σ = 10/255)",
}


def grid(results: dict, task: str, loss: str, key: str, seeds) -> np.ndarray:
    """[seeds, images] of one metric; ``loss="input"`` gives the degraded input's."""
    rows = []
    for s in seeds:
        if loss == "input":  # the same inputs in every run of a seed
            r = next(v for (t, _, s2), v in results.items() if t == task and s2 == s)
            rows.append([m[key] for m in r["input_per_image"]])
        else:
            rows.append([m[key] for m in results[(task, loss, s)]["per_image"]])
    return np.asarray(rows, np.float64)


def _fmt(v: float, nd: int) -> str:
    return "—" if not np.isfinite(v) else f"{v:.{nd}f}"


def _sfmt(v: float, nd: int) -> str:
    return "—" if not np.isfinite(v) else f"{v:+.{nd}f}"


def interval(p: dict, nd: int) -> str:
    """A `stats.paired` result as ``mean [lo, hi]``, signed, `nd` decimals."""
    return f"{_sfmt(p['mean'], nd)} [{_sfmt(p['lo'], nd)}, {_sfmt(p['hi'], nd)}]"


def complete_losses(results, task, losses, seeds) -> list[str]:
    return [name for name in losses if all((task, name, s) in results for s in seeds)]


def metrics_table(results, task, losses, seeds) -> list[str]:
    """The paper's layout: one row per metric, one column per loss (mean over seeds × images)."""
    cols = ["input", *losses]
    lines = ["| metric | " + " | ".join(LABELS.get(c, c) for c in cols) + " |"]
    lines.append("| --- " * (len(cols) + 1) + "|")
    for key, label, nd in METRICS:
        vals = [np.mean(grid(results, task, c, key, seeds)) for c in cols]
        cells = [_fmt(v, nd) for v in vals]
        if np.any(np.isfinite(vals[1:])):  # NaN: an image too small for MS-SSIM, or a diverged run
            best = np.nanargmin(vals[1:]) if key == "l1x1000" else np.nanargmax(vals[1:])
            cells[best + 1] = f"**{cells[best + 1]}**"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    steps = ["—"] + [budget_note(results[(task, c, seeds[0])]) for c in cols[1:]]
    lines.append("| training steps (* not converged) | " + " | ".join(steps) + " |")
    return lines


def paired_table(results, task, losses, seeds, ref: str) -> list[str]:
    """Each loss minus `ref`: mean [95% interval] (how many of the seed × image pairs > 0)."""
    others = [name for name in losses if name != ref]
    lines = [f"| loss − {LABELS[ref]} | " + " | ".join(f"Δ {m[1]}" for m in METRICS) + " |"]
    lines.append("| --- " * (len(METRICS) + 1) + "|")
    for name in others:
        cells = []
        for key, _, nd in METRICS:
            p = stats.paired(
                grid(results, task, name, key, seeds), grid(results, task, ref, key, seeds)
            )
            nd2 = nd if key != "psnr" else 2
            cells.append(f"{interval(p, nd2)} ({p['positive']}/{p['n']})")
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


PAPER_METRICS = tuple((k, label.rstrip(" ↑↓"), nd) for k, label, nd in METRICS)  # no arrows


def paper_tables(results, task, losses, seeds) -> list[str]:
    """The paper's Table I for `task` (empty if it has none), then each of its losses minus
    its ℓ1 beside the same difference here (mean [95% interval] over seeds × images)."""
    if task not in paper.TABLE_I:
        return []
    title, table = paper.TABLE_I[task]
    cols = list(table)
    out = [f"| metric (paper: {title}) | " + " | ".join(LABELS[c] for c in cols) + " |"]
    out.append("| --- " * (len(cols) + 1) + "|")
    for key, label, nd in PAPER_METRICS:
        vals = [paper.value(task, c, key) for c in cols]
        out.append(f"| {label} | " + " | ".join(f"{v:.{nd}f}" for v in vals) + " |")
    out += ["", "| difference | paper, PSNR | here, PSNR | paper, SSIM | here, SSIM |"]
    out.append("| --- " * 5 + "|")
    for name in [c for c in cols if c not in ("input", "l1")]:
        row = [f"{LABELS[name]} − ℓ1"]
        for key, nd in (("psnr", 2), ("ssim", 4)):
            row.append(_sfmt(paper.value(task, name, key) - paper.value(task, "l1", key), nd))
            if name in losses and "l1" in losses:
                p = stats.paired(
                    grid(results, task, name, key, seeds), grid(results, task, "l1", key, seeds)
                )
                row.append(interval(p, nd))
            else:
                row.append("not run")
        out.append("| " + " | ".join(row) + " |")
    return out


def per_image_table(results, task, losses, seeds, ref: str = "l1", key: str = "psnr"):
    """Mean over seeds of each loss minus `ref`, per held-out image."""
    names = results[(task, ref, seeds[0])]["eval_names"]
    lines = [f"| loss − {LABELS[ref]} | " + " | ".join(f"`{n}`" for n in names) + " |"]
    lines.append("| --- " * (len(names) + 1) + "|")
    for name in losses:
        if name == ref:
            continue
        d = grid(results, task, name, key, seeds) - grid(results, task, ref, key, seeds)
        lines.append(f"| {LABELS[name]} | " + " | ".join(f"{v:+.2f}" for v in d.mean(0)) + " |")
    return lines


def _late(run: dict, key: str) -> str:
    if any(c.get(key) is None for c in run["curve"]):
        return "—"  # a result from before this quantity was logged
    return f"{stats.late_gain(run['curve'], key=key):+.3f}"


def budget_note(run: dict) -> str:
    """The cell's budget: its steps, and ``*`` when doubling it still changed the result."""
    return f"{run['config']['steps']}" + ("" if run.get("converged", True) else "*")


def convergence_table(results, task, losses, seeds) -> list[str]:
    """Per cell: the budgets tried with the seeds' mean final validation PSNR, whether the last
    doubling changed it by less than `stats.FLAT_DB`, and, per seed, the change within the reported
    run over its last 20% of steps (PSNR, offset-free PSNR, training loss)."""
    lines = [
        "| loss | mean final validation PSNR per budget (steps: dB) | converged | "
        "within the run, last 20%: PSNR change (dB, per seed) | the same, colour offset "
        "removed | train-loss change | train s, all budgets (mean) |"
    ]
    lines.append("| --- " * 7 + "|")
    for name in losses:
        runs = [results[(task, name, s)] for s in seeds]
        hist = runs[0].get("budgets") or [
            {"steps": runs[0]["config"]["steps"], "val_psnr": float("nan")}
        ]
        ladder = " → ".join(f"{b['steps']}: {b['val_psnr']:.2f}" for b in hist)
        conv = runs[0].get("converged")
        verdict = {True: f"yes, at {hist[-1]['steps']}", False: "no", None: "not checked"}[conv]
        rel = [stats.late_relative_change(r["curve"], key="train_loss") for r in runs]
        secs = np.mean([r.get("all_budgets_seconds", r["train_seconds"]) for r in runs])
        lines.append(
            f"| {LABELS[name]} | {ladder} | {verdict} | "
            + ", ".join(_late(r, "psnr") for r in runs)
            + " | "
            + ", ".join(_late(r, "psnr_offset_removed") for r in runs)
            + " | "
            + ", ".join(f"{v:+.1%}" for v in rel)
            + f" | {secs:.0f} |"
        )
    return lines


def budget_table(results, task, losses, seeds, ref: str = "l1") -> list[str]:
    """Held-out PSNR and SSIM (mean over seeds × images) of each loss at every budget its cell
    trained, and each loss minus `ref` at the budgets both trained (PSNR, 95% interval)."""
    hist = {
        n: {b["steps"]: b for b in results[(task, n, seeds[0])].get("budgets", [])} for n in losses
    }
    steps = sorted({s for h in hist.values() for s in h})
    if not steps or not all("heldout" in b for h in hist.values() for b in h.values()):
        return []
    lines = ["| loss | " + " | ".join(f"{s} steps" for s in steps) + " |"]
    lines.append("| --- " * (len(steps) + 1) + "|")
    for name in losses:
        cells = []
        for s in steps:
            b = hist[name].get(s)
            if b is None:
                cells.append("")
                continue
            psnr, ssim = (np.mean(b["heldout"][k]) for k in ("psnr", "ssim"))
            cell = f"{psnr:.2f} dB, {ssim:.4f}"
            if name != ref and s in hist.get(ref, {}):
                p = stats.paired(b["heldout"]["psnr"], hist[ref][s]["heldout"]["psnr"])
                cell += f"; {interval(p, 2)}"
            cells.append(cell)
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


def cast_table(results, task, losses, seeds) -> list[str]:
    """Per-channel mean offset (prediction − target, 8-bit levels) on the held-out images."""
    lines = [
        "| loss | offset R | offset G | offset B | mean abs offset | "
        "PSNR | PSNR, offset removed | gain (dB) |"
    ]
    lines.append("| --- " * 8 + "|")
    for name in ["input", *losses]:
        src = "input_per_image" if name == "input" else "per_image"
        offs, psnr, psnr0 = [], [], []
        for s in seeds:
            r = results[(task, losses[0] if name == "input" else name, s)]
            offs += [m["offset"] for m in r[src]]
            psnr += [m["psnr"] for m in r[src]]
            psnr0 += [m["psnr_offset_removed"] for m in r[src]]
        o = np.asarray(offs)
        lines.append(
            f"| {LABELS[name]} | "
            + " | ".join(f"{v:+.2f}" for v in o.mean(0))
            + f" | {np.abs(o).mean():.2f} | {np.mean(psnr):.2f} | {np.mean(psnr0):.2f} | "
            f"{np.mean(psnr0) - np.mean(psnr):+.2f} |"
        )
    return lines


def mean_curves(curves: list[list[dict]]):
    """(steps, validation PSNR, mean |channel offset|), each the mean over the runs of a cell
    (its seeds share one budget, so one list of logged steps)."""
    steps = [c["step"] for c in curves[0]]
    if any([c["step"] for c in cv] != steps for cv in curves):
        raise ValueError("curves: the runs of a cell were logged at different steps")
    psnr = np.mean([[c["psnr"] for c in cv] for cv in curves], axis=0)
    off = np.mean([[np.mean(np.abs(c["offset"])) for c in cv] for cv in curves], axis=0)
    return steps, psnr, off


def plot_task(results, task, losses, seeds, path: str) -> None:
    """Validation PSNR and mean |offset| against step, mean over seeds, one line per loss."""
    # A bare Figure (no pyplot): no backend switch in a notebook that draws inline.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), dpi=80)
    a, b = fig.subplots(1, 2)
    for name in losses:
        color = f"C{list(LABELS).index(name) - 1}"  # the same colour for a loss in every task
        steps, psnr, off = mean_curves([results[(task, name, s)]["curve"] for s in seeds])
        a.plot(steps[1:], psnr[1:], label=LABELS[name], color=color)
        b.plot(steps, off, label=LABELS[name], color=color)
    a.set(xlabel="step", ylabel="validation PSNR (dB)", title=TASK_TITLES[task].split(" (")[0])
    b.set(xlabel="step", ylabel="mean |channel offset| (levels)", title="colour cast")
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def summary(results: dict) -> dict:
    """Every run's settings, curve and per-image metrics, rounded (the committed JSON)."""

    def rnd(v):
        if isinstance(v, float):
            return round(v, 5)
        if isinstance(v, list):
            return [rnd(x) for x in v]
        if isinstance(v, dict):
            return {k: rnd(x) for k, x in v.items()}
        return v

    return {f"{t}/{name}/{s}": rnd(r) for (t, name, s), r in sorted(results.items())}


def write_summary(results: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(summary(results), f, separators=(",", ":"))


def load_summary(path: str) -> dict:
    """The results dict ``{(task, loss, seed): result}`` from a summary JSON."""
    with open(path) as f:
        raw = json.load(f)
    out = {}
    for key, r in raw.items():
        t, name, s = key.split("/")
        out[(t, name, int(s))] = r
    return out


def figure_path(out_md: str, task: str) -> str:
    stem = os.path.splitext(os.path.basename(out_md))[0]
    return os.path.join(os.path.dirname(out_md) or ".", "figures", f"{stem}_{task}.png")
