"""One training run of a recipe, and its JSON record (reused when it exists).

The run is `train.py`'s default (`training.Config()`: the DnCNN-style denoiser, noise 25/255,
batch 16 of 48-pixel patches of the bundled photographs, AdamW with the default two
learning-rate phases) trained with the library's own pieces: `training.create_train_state`,
`training.make_optimizer`, `training.make_schedule`, `training.sample_batch` and
`training.train_step`, whose ``loss_fn`` is the recipe's loss (`losses.recipe_loss`); the held
-out images are restored with `training.make_evaluator` (outputs clipped to [0, 1]) and scored
with `training.metric_states`, as `train.py` scores them.

Images (none of them is a training image):

- validation (``VALIDATION``): scikit-image's ``stereo_motorcycle`` (left view), ``retina`` and
  ``hubble_deep_field``, center-cropped to 256. Every choice of the study is made on them.
- test: ``chelsea`` and ``coffee``, `train.py`'s held-out images, with `train.py`'s noise
  (seed + 1). Reported only; no choice looks at them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dssim_mae_jax import training
from experiments.recipes.grid import Recipe
from experiments.recipes.losses import recipe_loss

VALIDATION = ("motorcycle", "retina", "hubble_deep_field")
RECORD_VERSION = 1
CROP = 96  # side of the restored crops saved for the figures (seed 0)


def load_validation() -> tuple[np.ndarray, ...]:
    """The validation images, float32 [H, W, 3] in [0, 1]."""
    import skimage.data

    out = []
    for name in VALIDATION:
        img = (
            skimage.data.stereo_motorcycle()[0]
            if name == "motorcycle"
            else getattr(skimage.data, name)()
        )
        out.append(np.ascontiguousarray(np.asarray(img, np.float32)[..., :3] / 255.0))
    return tuple(out)


# The study's learning-rate phases: those of `train.py`'s default when the study began, the
# seed's (`training.SEED_PHASES`: 2e-3 for 30% of the steps, then 5e-4 body / 1e-3 head), not
# today's default, so the study's runs stay reproducible now that the default follows its
# result. The loss weights of a phase are unused: every step's weights come from the recipe
# (`train_run`).
STUDY_PHASES = training.SEED_PHASES


def run_config(
    recipe: Recipe, *, seed: int, steps: int, overrides: dict | None = None
) -> training.Config:
    """`training.Config(**overrides)` with `steps`, `seed`, the study's phases
    (`STUDY_PHASES`) and the MAE phase as long as the switch (`overrides`: the task, and the
    quick mode's tiny model)."""
    base = training.Config(**{"phases": STUDY_PHASES, **(overrides or {})})
    phases = base.phases
    if recipe.switch > 0:
        first, rest = phases[0], phases[1:]
        scale = (1.0 - recipe.switch) / sum(p.fraction for p in rest)
        phases = (
            dataclasses.replace(first, fraction=recipe.switch),
            *(dataclasses.replace(p, fraction=p.fraction * scale) for p in rest),
        )
    return base.replace(steps=int(steps), seed=int(seed), phases=phases, progress_bar=False)


def record_path(runs_dir: str, recipe: Recipe, *, seed: int, steps: int) -> str:
    """``<runs_dir>/s<steps>/<recipe name>/seed<k>.json``."""
    return os.path.join(runs_dir, f"s{int(steps)}", recipe.name, f"seed{int(seed)}.json")


def _score(config, evaluate, params, images, seed: int) -> tuple[list[dict], list]:
    """Per-image metrics (as `training.evaluate_dataset` draws its noise and scores: the
    states of `training.metric_states`) and the images."""
    key = jax.random.PRNGKey(seed)
    shown, cleans = [], []
    for i, img in enumerate(images):
        clean = jnp.asarray(training.center_crop(img, config.eval_crop))[None]
        shown.append(jax.device_get(evaluate(params, clean, jax.random.fold_in(key, i))))
        cleans.append(np.asarray(clean[0]))
    states = training.metric_states(config, cleans, keep_values=len(cleans))
    for out, target in zip(shown, cleans, strict=True):
        for which in ("input", "model"):
            states[which] = {
                k: s.update(np.asarray(out[which]), target[None]) for k, s in states[which].items()
            }
    model = {k: np.asarray(s.per_image()) for k, s in states["model"].items()}
    input_psnr = np.asarray(states["input"]["psnr"].per_image())
    rows = []
    for i, (out, target) in enumerate(zip(shown, cleans, strict=True)):
        m = {k: float(v[i]) for k, v in model.items()}
        restored = np.asarray(out["model"][0])
        offset = np.mean(restored - target, axis=(0, 1))
        m["offset"] = [float(v) * 255.0 for v in offset]
        m["cast"] = float(np.mean(np.abs(offset))) * 255.0
        mse = float(np.mean((restored - offset - target) ** 2))
        m["psnr_offset_removed"] = float(10 * np.log10(1.0 / max(mse, 1e-12)))
        m["input_psnr"] = float(input_psnr[i])
        rows.append(m)
    return rows, shown


def train_run(
    recipe: Recipe,
    *,
    seed: int,
    steps: int,
    train_images,
    validation,
    test,
    eval_points: int = 10,
    overrides: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict, np.ndarray]:
    """Trains `recipe` once; returns its record and the restored test crops (uint8).

    Args:
      recipe: the cell.
      seed: seed of parameters, batches and noise (`training.Config.seed`).
      steps: training steps.
      train_images, validation, test: float32 [H, W, 3] images.
      eval_points: how many times validation and test are scored during training (for the
        convergence curves), evenly spaced; the last one is the final evaluation.
    """
    config = run_config(recipe, seed=seed, steps=steps, overrides=overrides)
    tx, rates = training.make_optimizer(config)
    state = training.create_train_state(config, tx)
    _, preset_weights = training.build_loss(config)
    schedule = training.make_schedule(config, rates, preset_weights)  # learning rates
    switch_step = config.phase_boundaries[1] if recipe.switch > 0 else 0
    a, g = float(recipe.alpha), float(recipe.gamma)

    def step_fn(state, clean):
        on = (state.step >= switch_step).astype(jnp.float32)
        w = {"structural": on * a, "mae": 1.0 - on * a, "remedy": on * g}

        def loss_fn(p, t, weights=None):  # `weights` (the preset's) is replaced by the recipe's
            # `recipe_loss` is of one image pair; the train step calls the loss on the batch.
            def one(pi, ti):
                return recipe_loss(
                    pi, ti, weights=w, structure=recipe.structure, remedy=recipe.remedy
                )

            return jax.vmap(one)(p, t)

        return training.train_step(state, clean, config=config, loss_fn=loss_fn, schedule=schedule)

    step = jax.jit(step_fn)
    evaluate = training.make_evaluator(config, state.apply_fn)
    every = max(steps // eval_points, 1)
    curve, losses = [], []
    t0 = time.perf_counter()
    eval_s = 0.0
    for i in range(steps):
        batch = training.sample_batch(
            train_images, seed=seed, step=i, batch_size=config.batch_size,
            patch_size=config.patch_size,
        )  # fmt: skip
        state, metrics = step(state, jnp.asarray(batch))
        if (i + 1) % config.log_every == 0:
            losses.append({"step": i + 1, "loss": float(metrics["loss"])})
        if (i + 1) % every == 0 or i + 1 == steps:
            te = time.perf_counter()
            val_rows, _ = _score(config, evaluate, state.params, validation, seed + 1)
            test_rows, shown = _score(config, evaluate, state.params, test, seed + 1)
            eval_s += time.perf_counter() - te
            curve.append(
                {
                    "step": i + 1,
                    **{f"val_{k}": float(np.mean([r[k] for r in val_rows])) for k in
                       ("psnr", "ssim", "cast")},
                    **{f"test_{k}": float(np.mean([r[k] for r in test_rows])) for k in
                       ("psnr", "ssim", "cast")},
                }
            )  # fmt: skip
    seconds = time.perf_counter() - t0 - eval_s
    if int(state.nonfinite_total) > 0 and log is not None:
        log(f"warning: {recipe.name} seed {seed}: {int(state.nonfinite_total)} non-finite steps")
    record = {
        "version": RECORD_VERSION,
        "recipe": dataclasses.asdict(recipe),
        "name": recipe.name,
        "seed": int(seed),
        "steps": int(steps),
        "config": config.to_dict(),
        "validation": val_rows,
        "test": test_rows,
        "curve": curve,
        "train_loss": losses,
        "nonfinite_total": int(state.nonfinite_total),
        "train_seconds": seconds,
        "jax": jax.__version__,
        "packages": _package_versions(),
        "cpu": _cpu_model(),
    }
    crops = np.stack(
        [np.stack([center(np.asarray(o[k][0]), CROP) for k in ("input", "model")]) for o in shown]
    )
    return record, np.round(np.clip(crops, 0, 1) * 255).astype(np.uint8)


def _package_versions() -> dict[str, str]:
    """Versions of the packages a run's numerics depend on (XLA's rounding follows them)."""
    from importlib import metadata

    names = ("jax", "jaxlib", "flax", "optax", "numpy", "dssim_mae_jax")
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_model() -> str:
    """The host CPU's model name (Linux ``/proc/cpuinfo``), else `platform.processor()`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def center(img: np.ndarray, size: int) -> np.ndarray:
    """The center `size` x `size` crop (smaller when the image is)."""
    h, w = img.shape[:2]
    size = min(size, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def ensure_run(
    recipe: Recipe, *, seed: int, steps: int, runs_dir: str, data: dict, log=None, **kw
) -> dict:
    """The record of (recipe, seed, steps): read from `runs_dir` if there, else trained and
    written there (JSON; seed 0 also saves its restored test crops as ``seed0_crops.npy``)."""
    path = record_path(runs_dir, recipe, seed=seed, steps=steps)
    if os.path.exists(path):
        with open(path) as f:
            rec = json.load(f)
        if rec.get("version") == RECORD_VERSION and rec["recipe"] == dataclasses.asdict(recipe):
            return rec
    rec, crops = train_run(recipe, seed=seed, steps=steps, log=log, **data, **kw)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if seed == 0:
        np.save(os.path.join(os.path.dirname(path), "seed0_crops.npy"), crops)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(tmp, path)
    if log is not None:
        v = rec["validation"]
        log(
            f"{recipe.name} s{steps} seed {seed}: val PSNR "
            f"{np.mean([r['psnr'] for r in v]):.2f} SSIM {np.mean([r['ssim'] for r in v]):.4f} "
            f"cast {np.mean([r['cast'] for r in v]):.2f} ({rec['train_seconds']:.0f} s)"
        )
    return rec
