"""Phases as data: step boundaries, per-group learning-rate schedules, loss weights, optimizer.

Everything that changes at a phase boundary is a function of the step evaluated *inside* the
jitted train step (`optax.join_schedules` for learning rates, a table lookup for loss weights),
so one compiled step serves every phase and nothing retraces when a phase ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from ._config import GROUPS, Config

FROZEN = "frozen"


def phase_boundaries(config: Config) -> tuple[int, ...]:
    """First step of each phase (the first is 0), from the phase fractions and `config.steps`."""
    starts, acc = [], 0.0
    for p in config.phases:
        starts.append(round(acc * config.steps))
        acc += p["fraction"]
    return tuple(starts)


def phase_index(step: jax.typing.ArrayLike, boundaries: tuple[int, ...]) -> jax.Array:
    """Index of the phase that `step` falls in (traceable; no retrace when it changes)."""
    b = jnp.asarray(boundaries[1:], dtype=jnp.int32)
    return jnp.searchsorted(b, jnp.asarray(step, jnp.int32), side="right").astype(jnp.int32)


def loss_weights_fn(
    config: Config, preset_weights: Mapping[str, float]
) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """Returns ``step -> {"ssim": w_structural, "mae": w_absolute}`` as traced scalars.

    A phase weight of ``None`` falls back to the preset's own weight.
    """
    boundaries = phase_boundaries(config)
    table = {
        key: jnp.asarray(
            [
                preset_weights[key] if p[f"{key}_weight"] is None else p[f"{key}_weight"]
                for p in config.phases
            ],
            jnp.float32,
        )
        for key in ("ssim", "mae")
    }

    def weights(step):
        i = phase_index(step, boundaries)
        return {key: t[i] for key, t in table.items()}

    return weights


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
    starts = phase_boundaries(config)
    ends = (*starts[1:], config.steps)
    out = {}
    for g in GROUPS:
        scheds = []
        for p, s, e in zip(config.phases, starts, ends, strict=True):
            peak = 0.0 if g in p["frozen"] else float(p["learning_rates"][g])
            scheds.append(_phase_schedule(peak, e - s, config))
        out[g] = scheds[0] if len(scheds) == 1 else optax.join_schedules(scheds, list(starts[1:]))
    return out


def always_frozen_groups(config: Config) -> tuple[str, ...]:
    """Groups frozen in every phase: they get `optax.set_to_zero()` and no optimizer state."""
    return tuple(g for g in GROUPS if all(g in p["frozen"] for p in config.phases))


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
    """`optax.multi_transform` (a.k.a. `optax.partition`) of AdamW over the parameter groups.

    Returns the transformation and the per-group learning-rate schedules (for logging).
    """
    schedules = learning_rate_schedules(config)
    frozen = set(always_frozen_groups(config))
    transforms = {
        g: (
            optax.set_to_zero()
            if g in frozen
            else optax.adamw(schedules[g], weight_decay=config.weight_decay)
        )
        for g in GROUPS
    }

    def labels(params):
        return jax.tree.map(lambda g: FROZEN if g in frozen else g, param_labels(params))

    if frozen:
        transforms[FROZEN] = optax.set_to_zero()
        for g in frozen:
            del transforms[g]
    tx = optax.multi_transform(transforms, labels)
    if config.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx, schedules
