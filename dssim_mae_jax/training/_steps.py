"""The train state, the loss, and the pure train step.

`TrainState`'s data are plain arrays (parameters as a nested dict, optax state, step, RNG key
data, non-finite counters), so orbax saves it as is and a resumed run continues bit for bit.
Like flax's ``train_state.TrainState`` it also carries, as static fields, the function that
applies the model and the optimizer.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

import dssim_mae_jax as dmj
from dssim_mae_jax._pyramid import ms_ssim_min_size

from ._config import FIXED_LOSS_OPTIONS, Config, ConfigError
from ._data import degrade
from ._models import make_model


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue.

    Attributes:
      step: number of steps taken (int32 scalar); batch `step` is the next one.
      params: model parameters, a nested dict ``{"body": ..., "head": ...}`` of arrays.
      opt_state: the optax state.
      rng: raw PRNG key data (uint32[2]); the noise of step ``s`` uses ``fold_in(rng, s)``.
      nonfinite: consecutive steps whose loss, gradient or update was not finite (skipped).
      nonfinite_total: all such steps in the run.
      apply_fn: ``apply_fn(params, images) -> restored`` (static: not saved, not traced).
      tx: the optimizer (static).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    nonfinite: jax.Array
    nonfinite_total: jax.Array
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def _stringify(tree):
    # orbax wants string keys; nnx.merge accepts them for the integer keys of `nnx.List`.
    if isinstance(tree, Mapping):
        return {str(k): _stringify(v) for k, v in tree.items()}
    return tree


def _apply(graphdef: nnx.GraphDef, params: Mapping, images: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, params)(images)


def create_train_state(config: Config, tx: optax.GradientTransformation) -> TrainState:
    """Initialises the model from `config.seed`, and `tx`'s state (host-local arrays)."""
    key = jax.random.PRNGKey(config.seed)
    init_key, data_key = jax.random.split(key)
    model = make_model(config, rngs=nnx.Rngs(params=init_key))
    graphdef, variables = nnx.split(model)
    params = _stringify(nnx.to_pure_dict(variables))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
        step=zero,
        params=params,
        opt_state=tx.init(params),
        rng=data_key,
        nonfinite=zero,
        nonfinite_total=zero,
        apply_fn=functools.partial(_apply, graphdef),
        tx=tx,
    )


def to_loss_weights(
    structural_weight: jax.Array, mae_weight: jax.Array, *, mean_weight: jax.Array | None = None
) -> dict:
    """The ``weights=`` argument of a `make_loss` loss for these term weights (``mean_weight``
    None: the loss config's own)."""
    weights = {"structural": structural_weight, "mae": mae_weight}
    if mean_weight is not None:
        weights["mean"] = mean_weight
    return weights


def preset_weights(cfg) -> dict[str, float]:
    """A loss config's term weights as ``{"structural_weight", "mae_weight", "mean_weight"}``."""
    return {
        "structural_weight": float(cfg.structural_weight),
        "mae_weight": float(cfg.mae_weight),
        "mean_weight": float(cfg.mean_weight),
    }


def build_loss(config: Config) -> tuple[Callable, dict[str, float]]:
    """`make_loss(config.preset, max_val=1.0, **config.loss_overrides)` and its weights.

    Training data is in [0, 1], so the data range is set to 1 unless `loss_overrides` says
    otherwise (a preset's `max_val` describes the data it was written for, e.g. 255 for
    "seed-normalized"). The loss is traced once on a batch of the run's patch shape
    (`jax.eval_shape`: no computation), so an option that would fail only when the loss is
    first called is refused here, before any work.

    Returns:
      The loss and the preset's ``{"structural_weight", "mae_weight", "mean_weight"}``.

    Raises:
      ValueError: an unknown preset or field, an option the loss refuses, or a patch too small
        for the structural term's window.
    """
    overrides = {"max_val": 1.0, **config.loss_overrides}
    try:
        loss_fn = dmj.make_loss(config.preset, **overrides)
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"config.preset / config.loss_overrides: {e}") from e
    cfg = loss_fn.config
    for key, fixed in FIXED_LOSS_OPTIONS.items():  # a preset could set them too
        if getattr(cfg, key) != fixed:
            raise ConfigError(
                f"config.preset: {config.preset!r} sets {key}={getattr(cfg, key)!r}; training "
                f"needs {key}={fixed!r} (one loss per [H, W, C] image)"
            )
    min_size = ms_ssim_min_size(cfg.filter_size, cfg.levels)
    if config.patch_size < min_size:
        raise ConfigError(
            f"config.patch_size: got {config.patch_size}, but the loss of preset "
            f"{config.preset!r} needs patches of at least {min_size} pixels "
            f"({cfg.structure} with filter_size={cfg.filter_size})"
        )
    patch = jax.ShapeDtypeStruct((1, config.patch_size, config.patch_size, config.channels),
                                 jnp.float32)  # fmt: skip
    try:
        jax.eval_shape(loss_fn, patch, patch)
    except Exception as e:  # any failure of the loss's trace is a bad option
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ConfigError(
            f"config.loss_overrides: the loss of preset {config.preset!r} with "
            f"{json.dumps(config.loss_overrides)} fails ({type(e).__name__}: {first})"
        ) from e
    return loss_fn, preset_weights(cfg)


def train_step(
    state: TrainState,
    clean: jax.Array,
    *,
    config: Config,
    loss_fn: Callable,
    schedule: Callable[[jax.Array], dict[str, jax.Array]],
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One step on a clean batch [B, P, P, C]; the same compiled function for every phase.

    Bind the keywords with `functools.partial` and jit the result. The loss weights and each
    group's learning rate are functions of ``state.step`` (`schedule`, from `make_schedule`),
    so a phase boundary changes no Python value and triggers no retrace.

    A step whose loss, gradient, new parameters or new optimizer moments are not all finite
    keeps the old parameters and moments (its step counters still advance, so schedules stay
    aligned with `state.step`) and increments `state.nonfinite`.

    The loss is called once on the whole batch (it returns one value per image, which the step
    averages), so the loss's own batch handling applies.

    Returns:
      The new state and the step's metrics: ``loss``, the per-image terms of `loss_fn`
      averaged over the batch (the structural term as ``structural``), `schedule`'s values,
      ``finite`` and ``nonfinite``.
    """
    step = state.step
    inputs = degrade(config, clean, jax.random.fold_in(state.rng, step))
    at = schedule(step)
    weights = to_loss_weights(
        at["structural_weight"], at["mae_weight"], mean_weight=at.get("mean_weight")
    )

    def objective(params):
        pred = state.apply_fn(params, inputs).astype(jnp.float32)
        # One call on the whole batch: the loss gives one value per [H, W, C] image.
        loss, aux = loss_fn(pred, clean, weights=weights)
        return jnp.mean(loss), aux

    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # Checked on the result too: a finite gradient can still give non-finite parameters
    # (e.g. an infinite weight decay or learning rate).
    finite = _all_finite(loss, grads, params, opt_state)

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
    terms = {k: jnp.mean(v) for k, v in aux.items() if k != "loss"}
    metrics = {"loss": loss, **terms, **at}
    metrics.update(finite=finite, nonfinite=nonfinite)
    return new_state, metrics


def _all_finite(*trees) -> jax.Array:
    leaves = jax.tree.leaves(trees)
    checks = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks))
