"""The train state, the pure train step, and held-out evaluation.

`TrainState` is a pytree of plain arrays (parameters as a nested dict, optax state, step, RNG
key data, non-finite counters), so orbax saves it as is and a resumed run continues bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import dssim_mae_jax as dmj

from . import _color
from ._config import FIXED_LOSS_OPTIONS, GROUPS, Config, ConfigError
from ._data import degrade
from ._models import make_model
from ._schedules import loss_weights_fn, make_optimizer, phase_boundaries, phase_index


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue.

    Attributes:
      step: number of steps taken (int32 scalar); batch `step` is the next one.
      params: model parameters, a nested dict ``{"body": ..., "head": ...}`` of arrays.
      opt_state: the optax state.
      rng: raw PRNG key data (uint32[2]); the noise of step ``s`` uses ``fold_in(rng, s)``.
      nonfinite: consecutive steps whose loss or gradient was not finite (updates skipped).
      nonfinite_total: all such steps in the run.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    nonfinite: jax.Array
    nonfinite_total: jax.Array


def _stringify(tree):
    if isinstance(tree, Mapping):
        return {str(k): _stringify(v) for k, v in tree.items()}
    return tree


class ModelDef:
    """The static half of an NNX model: rebuilds the module from a params dict (traceable)."""

    def __init__(self, model: nnx.Module):
        self.graphdef, state = nnx.split(model)
        self._template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)

    def params_of(self, model: nnx.Module) -> dict:
        """The model's parameters as a nested dict with string keys (orbax-friendly)."""
        return _stringify(nnx.to_pure_dict(nnx.state(model)))

    def apply(self, params: Mapping, x: jax.Array) -> jax.Array:
        state = jax.tree.map(lambda s: s, self._template)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state)(x)


def create_train_state(config: Config) -> tuple[TrainState, ModelDef, optax.GradientTransformation]:
    """Initialises the model, optimizer and state from `config.seed` (host-local arrays)."""
    key = jax.random.PRNGKey(config.seed)
    init_key, data_key = jax.random.split(key)
    model = make_model(config, rngs=nnx.Rngs(params=init_key))
    model_def = ModelDef(model)
    params = model_def.params_of(model)
    tx, _ = make_optimizer(config)
    zero = jnp.zeros((), jnp.int32)
    state = TrainState(
        step=zero,
        params=params,
        opt_state=tx.init(params),
        rng=data_key,
        nonfinite=zero,
        nonfinite_total=zero,
    )
    return state, model_def, tx


def build_loss(config: Config) -> tuple[Callable, dict[str, float]]:
    """`make_loss(config.preset, max_val=1.0, **config.loss_overrides)` and its weights.

    Training data is in [0, 1], so the data range is set to 1 unless `loss_overrides` says
    otherwise (a preset's `max_val` describes the data it was written for, e.g. 255 for
    "seed-normalized"). Raises ``ValueError`` for an unknown preset or field, or a patch too
    small for the structural term's window.
    """
    overrides = {"max_val": 1.0, **config.loss_overrides}
    try:
        loss_fn = dmj.make_loss(config.preset, **overrides)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config.preset / config.loss_overrides: {e}") from e
    cfg = loss_fn.config
    for key, fixed in FIXED_LOSS_OPTIONS.items():  # a preset could set them too
        if getattr(cfg, key) != fixed:
            raise ConfigError(
                f"config.preset: {config.preset!r} sets {key}={getattr(cfg, key)!r}; training "
                f"needs {key}={fixed!r} (one loss per [H, W, C] image)"
            )
    min_size = (cfg.filter_size - 1) * 2 ** (cfg.levels - 1) + 1
    if config.patch_size < min_size:
        raise ConfigError(
            f"config.patch_size: got {config.patch_size}, but the loss of preset "
            f"{config.preset!r} needs patches of at least {min_size} pixels "
            f"({cfg.structure} with filter_size={cfg.filter_size})"
        )
    return loss_fn, {"ssim": float(cfg.w_structural), "mae": float(cfg.w_absolute)}


class TrainStep:
    """``train_step(state, clean_batch) -> (state, metrics)``, one function for every phase.

    The loss weights and each group's learning rate are functions of ``state.step`` evaluated
    inside the step, so a phase boundary changes no Python value and triggers no retrace;
    `traces` counts how often JAX traced the step (1 for a whole run).

    A step whose loss or gradient is not finite keeps the parameters and optimizer moments
    (its step counters still advance, so schedules stay aligned with `state.step`) and
    increments `state.nonfinite`.
    """

    def __init__(
        self,
        config: Config,
        model_def: ModelDef,
        tx: optax.GradientTransformation,
        loss_fn: Callable,
        preset_weights: Mapping[str, float],
    ):
        self.config, self.model_def, self.tx, self.loss_fn = config, model_def, tx, loss_fn
        self.weights_at = loss_weights_fn(config, preset_weights)
        _, self.schedules = make_optimizer(config)
        self.boundaries = phase_boundaries(config)
        self.traces = 0

    def __call__(self, state: TrainState, clean: jax.Array) -> tuple[TrainState, dict]:
        self.traces += 1  # runs only while JAX traces
        step = state.step
        inputs = degrade(self.config, clean, jax.random.fold_in(state.rng, step))
        weights = self.weights_at(step)

        def per_image(pred, target):
            return self.loss_fn(pred, target, weights=weights)

        def objective(params):
            pred = self.model_def.apply(params, inputs).astype(jnp.float32)
            loss, aux = jax.vmap(per_image)(pred, clean)
            return jnp.mean(loss), aux

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        finite = _all_finite(loss, grads)

        def keep(new, old):
            # Integer leaves are step counters (optax `count`): let them advance so every
            # schedule stays a function of the step; float leaves roll back.
            if jnp.issubdtype(new.dtype, jnp.integer):
                return new
            return jnp.where(finite, new, old)

        nonfinite = jnp.where(finite, 0, state.nonfinite + 1)
        new_state = state.replace(
            step=step + 1,
            params=jax.tree.map(keep, params, state.params),
            opt_state=jax.tree.map(keep, opt_state, state.opt_state),
            nonfinite=nonfinite,
            nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
        )
        metrics = {"loss": loss, **{k: jnp.mean(v) for k, v in aux.items()}}
        metrics.update(
            {f"lr_{g}": jnp.asarray(self.schedules[g](step), jnp.float32) for g in GROUPS}
        )
        metrics.update({f"w_{k}": v for k, v in weights.items()})
        metrics["phase"] = phase_index(step, self.boundaries)
        metrics["finite"] = finite
        metrics["nonfinite"] = nonfinite
        return new_state, metrics


def _all_finite(loss, grads):
    leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]
    return jnp.isfinite(loss) & jnp.all(jnp.stack(leaves))


# ---------------------------------------------------------------------------------- eval
MS_SSIM_MIN_SIZE = 161  # 11-tap window over 5 scales: (11 - 1) * 2**4 + 1


def image_metrics(restored: jax.Array, clean: jax.Array) -> dict[str, jax.Array]:
    """PSNR, SSIM, MS-SSIM (when the images are large enough) and MAE per image, on [0, 1]."""
    out = {
        "psnr": dmj.psnr(restored, clean, max_val=1.0),
        "ssim": dmj.ssim(restored, clean, max_val=1.0),
        "mae": dmj.mae(restored, clean, max_val=1.0),
    }
    if min(clean.shape[-3:-1]) >= MS_SSIM_MIN_SIZE:
        out["ms_ssim"] = dmj.ms_ssim(restored, clean, max_val=1.0)
    return out


def y_metrics(restored: jax.Array, clean: jax.Array, border: int) -> dict[str, jax.Array]:
    """PSNR and SSIM on the BT.601 luminance with `border` pixels cropped (SR convention)."""
    ry = _color.crop_border(_color.rgb_to_y(restored), border)
    cy = _color.crop_border(_color.rgb_to_y(clean), border)
    return {"psnr_y": dmj.psnr(ry, cy, max_val=1.0), "ssim_y": dmj.ssim(ry, cy, max_val=1.0)}


def make_evaluator(config: Config, model_def: ModelDef) -> Callable:
    """``evaluate(params, clean, key) -> {"input": {...}, "model": {...}} `` for one image batch.

    ``input`` scores what the model receives (the noisy image, or for super-resolution its
    bicubic upsampling — the usual baseline); ``model`` scores the restoration. Both are
    clipped to [0, 1] first, as a saved image would be.
    """

    def evaluate(params, clean, key):
        degraded = degrade(config, clean, key)
        restored = model_def.apply(params, degraded).astype(jnp.float32)
        baseline = (
            _color.bicubic_upsample(degraded, config.scale) if config.task == "sr" else degraded
        )
        # Score both rows in one call (a leading axis of 2): the metrics are traced once.
        both = jnp.clip(jnp.stack([baseline, restored]), 0.0, 1.0)
        target = jnp.broadcast_to(clean, both.shape)
        m = image_metrics(both, target)
        if config.task == "sr":
            m.update(y_metrics(both, target, config.scale))
        out = {name: {k: v[i] for k, v in m.items()} for i, name in enumerate(("input", "model"))}
        return out, {"input": both[0], "model": both[1]}

    return jax.jit(evaluate)


def evaluate_dataset(
    config: Config, evaluate: Callable, params, images, *, seed: int
) -> tuple[dict, list]:
    """Mean metrics over held-out images (one at a time: sizes may differ) and the images."""
    from ._data import center_crop

    multiple = config.scale if config.task == "sr" else 1
    per_image: dict[str, dict[str, list[float]]] = {"input": {}, "model": {}}
    shown = []
    key = jax.random.PRNGKey(seed)
    for i, img in enumerate(images):
        clean = jnp.asarray(center_crop(img, config.eval_crop, multiple))[None]
        metrics, out = evaluate(params, clean, jax.random.fold_in(key, i))
        metrics = jax.device_get(metrics)
        for which, m in metrics.items():
            for k, v in m.items():
                per_image[which].setdefault(k, []).append(float(np.asarray(v)[0]))
        shown.append(
            (np.asarray(out["input"][0]), np.asarray(out["model"][0]), np.asarray(clean[0]))
        )
    means = {
        which: {k: float(np.mean(v)) for k, v in m.items() if len(v) == len(images)}
        for which, m in per_image.items()
    }
    return means, shown
