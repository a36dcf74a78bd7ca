"""Phases as data: per-group learning-rate schedules, loss weights, and the optimizer.

Everything that changes at a phase boundary is a function of the step evaluated *inside* the
jitted train step (`optax.join_schedules` for learning rates, a table lookup for loss weights),
so one compiled step serves every phase and nothing retraces when a phase ends.

Built once per run::

  tx, rates = make_optimizer(config)    # rates: {"body": schedule, "head": schedule}
  schedule = make_schedule(config, rates, preset_weights)   # step -> weights, rates, phase
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from ._config import GROUPS, Config


def phase_index(step: jax.typing.ArrayLike, boundaries: tuple[int, ...]) -> jax.Array:
    """Index of the phase that `step` falls in (traceable; no retrace when it changes)."""
    b = jnp.asarray(boundaries[1:], dtype=jnp.int32)
    return jnp.searchsorted(b, jnp.asarray(step, jnp.int32), side="right").astype(jnp.int32)


def _phase_schedule(peak: float, steps: int, config: Config) -> optax.Schedule:
    if peak == 0.0:
        return optax.constant_schedule(0.0)
    warmup = min(round(config.warmup_fraction * steps), steps - 1)
    if warmup == 0:
        return optax.cosine_decay_schedule(peak, max(steps, 1), alpha=config.final_lr_fraction)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=steps,
        end_value=peak * config.final_lr_fraction,
    )


def learning_rate_schedules(config: Config) -> dict[str, optax.Schedule]:
    """One schedule per parameter group, joined across phases with `optax.join_schedules`.

    Within a phase: linear warm-up over `warmup_fraction` of its steps, then cosine decay to
    `final_lr_fraction` of the phase's peak. A group frozen in a phase has rate 0 there.
    """
    starts = config.phase_boundaries
    ends = (*starts[1:], config.steps)
    out = {}
    for g in GROUPS:
        scheds = []
        for p, s, e in zip(config.phases, starts, ends, strict=True):
            peak = 0.0 if g in p.frozen else float(p.learning_rates[g])
            scheds.append(_phase_schedule(peak, e - s, config))
        out[g] = scheds[0] if len(scheds) == 1 else optax.join_schedules(scheds, list(starts[1:]))
    return out


def param_labels(params) -> object:
    """Labels each parameter by its group: the first key of its path (``body`` / ``head``)."""

    def label(path, _):
        key = path[0]
        name = getattr(key, "key", getattr(key, "name", key))
        if name not in GROUPS:
            raise ValueError(f"parameter path {jax.tree_util.keystr(path)} is in no group {GROUPS}")
        return str(name)

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(
    config: Config,
) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
    """AdamW per parameter group (`optax.partition`), after global-norm clipping.

    A group frozen in *every* phase gets `optax.set_to_zero()` (no optimizer state); a group
    frozen in some phases only keeps its AdamW and has learning rate 0 there.

    Returns:
      The transformation and its per-group learning-rate schedules
      (`learning_rate_schedules`), for `make_schedule`.
    """
    learning_rates = learning_rate_schedules(config)

    def transform(group):
        if all(group in p.frozen for p in config.phases):
            return optax.set_to_zero()
        return optax.adamw(learning_rates[group], weight_decay=config.weight_decay)

    tx = optax.partition({g: transform(g) for g in GROUPS}, param_labels)
    if config.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx, learning_rates


def make_schedule(
    config: Config,
    learning_rates: Mapping[str, optax.Schedule],
    preset_weights: Mapping[str, float],
) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """``step -> {"phase", "lr_body", "lr_head", "w_ssim", "w_mae"}`` as traced scalars.

    `learning_rates` are the schedules `make_optimizer` returned with the optimizer. The loss
    weights of a phase are its ``ssim_weight`` / ``mae_weight``; ``None`` falls back to the
    preset's own weight (`preset_weights`, from `build_loss`).
    """
    boundaries = config.phase_boundaries
    weights = {
        key: jnp.asarray(
            [
                preset_weights[key] if getattr(p, f"{key}_weight") is None
                else getattr(p, f"{key}_weight")
                for p in config.phases
            ],
            jnp.float32,
        )
        for key in ("ssim", "mae")
    }  # fmt: skip

    def at(step):
        i = phase_index(step, boundaries)
        out = {"phase": i}
        out.update({f"lr_{g}": jnp.asarray(learning_rates[g](step), jnp.float32) for g in GROUPS})
        out.update({f"w_{key}": table[i] for key, table in weights.items()})
        return out

    return at
