"""Train and evaluate the runs of one cell (task, loss; every seed) until doubling the training
no longer changes them.

Every seed of a cell is trained for `RunConfig.steps`, then again from the same initial weights
with twice the steps (the same cosine schedule stretched, logged every twice as many steps),
and so on up to ``2**max_doublings`` times the steps, until the final validation PSNR, mean over
the seeds, changed by less than `stats.FLAT_DB` from one budget to the next: the cell has
converged at that budget, and every seed is reported at it (else at the last budget, marked as
not converged). Each budget of a run is one JSON file; a finished file is reused as is, and an
unfinished budget starts again (a run is minutes long).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import dssim_mae_jax as dmj
from dssim_mae_jax.metrics import PSNR

from . import data, losses, models, stats

PHASED = ("l1", "mix")  # MAE first, then the Mix; the switch is at `switch` of the steps


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Hyperparameters of one run (the same for every loss)."""

    task: str
    loss: str
    seed: int
    steps: int = 1500
    batch: int = 16
    patch: int = losses.PATCH
    lr: float = 1e-3
    final_lr_fraction: float = 0.01  # cosine decay to lr * this
    switch: float = 0.5  # phased: fraction of steps trained with l1
    features: int = 16
    kernels: tuple[int, int, int] = (5, 3, 3)
    residual: bool = True
    eval_every: int = 75
    val_crop: int = 128  # validation curve: the centre crop of each held-out image
    data_dir: str | None = None


def result_path(out_dir: str, cfg: RunConfig) -> str:
    crop = "" if cfg.patch == losses.PATCH else f"_p{cfg.patch}"
    return os.path.join(out_dir, cfg.task, f"{cfg.loss}{crop}_s{cfg.seed}_{cfg.steps}.json")


def budgets(cfg: RunConfig, max_doublings: int) -> list[RunConfig]:
    """`cfg`, then the same run with 2x, 4x, ... the steps (and the logging interval)."""
    return [
        dataclasses.replace(cfg, steps=cfg.steps * 2**k, eval_every=cfg.eval_every * 2**k)
        for k in range(max_doublings + 1)
    ]


@functools.cache
def provenance() -> dict:
    """The versions and the git commit a result was computed with (for the report)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        git = lambda *a: subprocess.run(
            ["git", "-C", root, *a], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        commit = git("rev-parse", "--short=10", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "dssim_mae_jax", "experiments"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", False
    return {
        "commit": commit + ("+changes" if dirty else ""),
        "dssim_mae_jax": dmj.__version__,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def _phases(cfg: RunConfig) -> list[tuple[str, int]]:
    """(loss name, number of steps) per phase."""
    if cfg.loss != "phased":
        return [(cfg.loss, cfg.steps)]
    first = round(cfg.steps * cfg.switch)
    return [(PHASED[0], first), (PHASED[1], cfg.steps - first)]


@functools.cache
def _step_fn(loss_name: str, graphdef, crop: int = losses.PATCH):
    """The jitted train step of one loss, shared by every run (compiled once per loss)."""
    loss_fn = losses.make(loss_name, crop=crop)
    tx = optax.scale_by_adam()

    @jax.jit
    def step(params, opt_state, x, y, lr):
        def objective(p):
            return loss_fn(nnx.merge(graphdef, p)(x), y)

        loss, grads = jax.value_and_grad(objective)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: -lr * u, updates)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, tx


@functools.cache
def _apply(graphdef):
    @jax.jit
    def apply(params, x):
        return jnp.clip(nnx.merge(graphdef, params)(x[None])[0], 0.0, 1.0)

    return apply


def _centre(img: np.ndarray, size: int, *, even: bool = False) -> np.ndarray:
    """The centre crop; with ``even``, at even offsets (keeps a Bayer mosaic's RGGB phase)."""
    h, w = img.shape[:2]
    r, c = max(0, (h - size) // 2), max(0, (w - size) // 2)
    if even:
        r, c = r - r % 2, c - c % 2
    return img[r : r + size, c : c + size]


def channel_offset(pred: np.ndarray, target: np.ndarray) -> list[float]:
    """Mean of ``pred - target`` per channel, in 8-bit levels (the colour cast)."""
    return [float(v) for v in (np.mean(pred - target, axis=(0, 1)) * 255)]


def image_metrics(pred, target) -> dict:
    """PSNR, SSIM, MS-SSIM (Wang et al. defaults), 1000 x l1, offsets, offset-free PSNR."""
    p, t = jnp.asarray(pred), jnp.asarray(target)
    small = min(t.shape[:2]) < 161  # the 5-scale MS-SSIM needs 161 pixels
    offset = channel_offset(np.asarray(pred), np.asarray(target))
    centred = p - jnp.asarray(offset, jnp.float32).reshape(1, 1, -1) / 255
    return {
        "psnr": float(dmj.psnr(p, t, max_val=1.0)),
        "ssim": float(dmj.ssim(p, t, max_val=1.0)),
        "ms_ssim": float("nan") if small else float(dmj.ms_ssim(p, t, max_val=1.0)),
        "l1x1000": 1000 * float(dmj.mae(p, t, max_val=1.0)),
        "offset": offset,
        "psnr_offset_removed": float(dmj.psnr(centred, t, max_val=1.0)),
    }


def _validate(apply, params, val_pairs) -> dict:
    """Mean PSNR, offset-free PSNR and channel offset over the validation crops (the PSNRs
    accumulated in `dssim_mae_jax.metrics.PSNR` states: the mean of per-image PSNR)."""
    psnr, psnr0 = PSNR.empty(max_val=1.0), PSNR.empty(max_val=1.0)
    offsets = []
    for x, y in val_pairs:
        pred = np.asarray(apply(params, jnp.asarray(x)))
        offset = channel_offset(pred, y)
        psnr = psnr.update(pred[None], y[None])
        centred = pred - np.asarray(offset, np.float32) / 255
        psnr0 = psnr0.update(centred[None], y[None])
        offsets.append(offset)
    return {
        "psnr": float(psnr.compute()),
        "psnr_offset_removed": float(psnr0.compute()),
        "offset": np.mean(offsets, axis=0).tolist(),
    }


def train_and_evaluate(cfg: RunConfig, split: data.Split) -> dict:
    """Trains `cfg` on `split.train`; returns curves and full-image held-out metrics."""
    t0 = time.time()
    model = models.ZhaoNet(
        features=cfg.features,
        kernels=cfg.kernels,
        residual=cfg.residual,
        rngs=nnx.Rngs(params=cfg.seed),
    )
    graphdef, params = nnx.split(model)
    schedule = optax.cosine_decay_schedule(cfg.lr, cfg.steps, alpha=cfg.final_lr_fraction)
    sampler = data.PatchSampler(
        split.train, cfg.task, patch=cfg.patch, batch=cfg.batch, seed=cfg.seed
    )
    eval_pairs = data.eval_pairs(split.eval, cfg.task, seed=cfg.seed)
    even = cfg.task == "demosaic"
    val_pairs = [
        (_centre(x, cfg.val_crop, even=even), _centre(y, cfg.val_crop, even=even))
        for x, y in eval_pairs
    ]
    apply = _apply(graphdef)
    curve = [{"step": 0, "train_loss": None, **_validate(apply, params, val_pairs)}]
    start, losses_seen = 0, []
    for name, n in _phases(cfg):
        # A fresh Adam state per phase (moments of one loss do not fit the next), same schedule.
        step, tx = _step_fn(name, graphdef, cfg.patch)
        opt_state = tx.init(params)
        for i in range(start, start + n):
            x, y = sampler(i)
            params, opt_state, loss = step(params, opt_state, x, y, schedule(i))
            losses_seen.append(loss)
            if (i + 1) % cfg.eval_every == 0 or i + 1 == cfg.steps:
                mean_loss = float(np.mean(jax.device_get(losses_seen)))
                losses_seen = []
                val = _validate(apply, params, val_pairs)
                curve.append({"step": i + 1, "train_loss": mean_loss, "phase": name, **val})
        start += n
    train_s = time.time() - t0
    per_image = [image_metrics(np.asarray(apply(params, jnp.asarray(x))), y) for x, y in eval_pairs]
    inputs = [image_metrics(np.clip(x, 0, 1), y) for x, y in eval_pairs]
    return {
        "config": dataclasses.asdict(cfg),
        "eval_names": list(split.eval_names),
        "curve": curve,
        "per_image": per_image,
        "input_per_image": inputs,
        "train_seconds": train_s,
        "total_seconds": time.time() - t0,
        "provenance": provenance(),
    }


def _one_budget(
    cfg: RunConfig, split: data.Split, out_dir: str, *, log, train: bool = True
) -> dict | None:
    """The result of `cfg` (one budget): read from `out_dir` if finished, else trained (None
    if not finished and not ``train``)."""
    path = result_path(out_dir, cfg)
    if os.path.exists(path):
        with open(path) as f:
            res = json.load(f)
        if res["config"] == json.loads(json.dumps(dataclasses.asdict(cfg))):
            return res
        log(f"{path}: settings changed" + (", training again" if train else ", not used"))
    if not train:
        return None
    log(f"training {cfg.task}/{cfg.loss} seed {cfg.seed} ({cfg.steps} steps)")
    res = train_and_evaluate(cfg, split)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, path)  # atomic: a killed run leaves no half-written result
    log(
        f"done {cfg.task}/{cfg.loss} seed {cfg.seed} ({cfg.steps} steps): "
        f"PSNR {np.mean([m['psnr'] for m in res['per_image']]):.2f} dB, "
        f"validation PSNR {res['curve'][-1]['psnr']:.2f} dB, {res['train_seconds']:.0f} s"
    )
    return res


HELDOUT = ("psnr", "ssim")  # held-out metrics kept per budget in a cell's history


def final_val_psnr(res: dict) -> float:
    """The validation PSNR at the end of a run (centre crops of the held-out images)."""
    return float(res["curve"][-1]["psnr"])


def run_cell(
    cfgs: list[RunConfig],
    split: data.Split,
    out_dir: str,
    *,
    max_doublings: int = 2,
    train: bool = True,
    log=print,
) -> dict[int, dict]:
    """``{seed: result}`` of one cell (the seeds' configs of one task and loss), every seed at
    the cell's budget: the first doubling that changed the seeds' mean final validation PSNR
    by less than `stats.FLAT_DB`, else the last budget (see the module docstring).

    Each result gets ``"budgets"``: per budget tried, its steps, the seeds' mean final
    validation PSNR and the held-out `HELDOUT` metrics per seed and image; ``"converged"``;
    ``"all_budgets_seconds"``: this seed's time over every budget tried. Without ``train``,
    only finished budgets are used (an empty dict if the first is missing for a seed).
    """
    ladders = [budgets(c, max_doublings) for c in cfgs]
    history, seconds, chosen, converged = [], [0.0] * len(cfgs), None, False
    for k in range(max_doublings + 1):
        res = [_one_budget(lad[k], split, out_dir, log=log, train=train) for lad in ladders]
        if any(r is None for r in res):
            break
        chosen = res
        seconds = [t + r["total_seconds"] for t, r in zip(seconds, res, strict=True)]
        psnr = float(np.mean([final_val_psnr(r) for r in res]))
        history.append(
            {
                "steps": ladders[0][k].steps,
                "val_psnr": psnr,
                # Held-out metrics at this budget, [seeds][images]: how results move with
                # training length (reported, never used to choose the budget).
                "heldout": {
                    key: [[m[key] for m in r["per_image"]] for r in res] for key in HELDOUT
                },
            }
        )
        if not np.isfinite(psnr):
            break  # a diverged run: longer training is no answer
        if k and abs(psnr - history[-2]["val_psnr"]) < stats.FLAT_DB:
            converged = True
            break
    if chosen is None:
        return {}
    if max_doublings == 0:
        converged = None  # not checked
    return {
        c.seed: {**r, "budgets": history, "converged": converged, "all_budgets_seconds": t}
        for c, r, t in zip(cfgs, chosen, seconds, strict=True)
    }
