"""Phases as optax pieces: per-group learning-rate schedules, the phased optimizer, loss weights.

Everything that changes at a phase boundary is a function of the step evaluated *inside* the
jitted train step (`optax.join_schedules` for learning rates, a table lookup for loss weights),
so one compiled step serves every phase and nothing retraces when a phase ends. None of these
pieces needs a training `Config`: they take a sequence of `Phase` objects and plain arguments,
and work with any model whose parameters are a pytree (flax NNX ``nnx.state``, flax linen
``params`` dicts, plain dicts)::

  phases = [
      Phase("mae", fraction=0.3, structural_weight=0.0, mae_weight=1.0,
            learning_rates={"enc": 2e-3, "dec": 2e-3}),
      Phase("dssim_mae", fraction=0.7, learning_rates={"enc": 5e-4, "dec": 1e-3}),
  ]
  labels = label_params([(r"enc/.*", "enc"), (r"dec/.*", "dec")])
  tx = phased_optimizer(phases, param_labels=labels, total_steps=100)
  weights = loss_weight_schedule(phases, total_steps=100, defaults={...})

`train.py` builds its optimizer with the same functions (`optimizer_from_config`).

References:
  optax's multi-transform / partition and schedule-joining recipes
  (https://optax.readthedocs.io/en/latest/api/combining_optimizers.html,
  https://optax.readthedocs.io/en/latest/api/optimizer_schedules.html); big_vision's
  ``[(regex, group)]`` parameter rules (``big_vision/utils.py``, ``make_mask_trees``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ._config import GROUPS, LR_SCHEDULES, Config, Phase

# ----------------------------------------------------------------------------- phases


def phase_boundaries(phases: Sequence[Phase], total_steps: int) -> tuple[int, ...]:
    """First step of each phase (the first is 0): ``round(sum of earlier fractions * steps)``.

    Args:
      phases: the phases, in order; their fractions should sum to 1.
      total_steps: the steps all phases span together.

    Returns:
      A tuple of ints, one per phase.

    Examples:
      >>> phase_boundaries([Phase("a", 0.3, learning_rates={"g": 1.0}),
      ...                   Phase("b", 0.7, learning_rates={"g": 1.0})], 100)
      (0, 30)
    """
    starts, acc = [], 0.0
    for p in phases:
        starts.append(round(acc * total_steps))
        acc += p.fraction
    return tuple(starts)


def phase_index(step: jax.typing.ArrayLike, boundaries: Sequence[int]) -> jax.Array:
    """Index of the phase that `step` falls in (traceable; no retrace when it changes).

    Steps past the last boundary are in the last phase, however far past.
    """
    b = jnp.asarray(tuple(boundaries)[1:], dtype=jnp.int32)
    return jnp.searchsorted(b, jnp.asarray(step, jnp.int32), side="right").astype(jnp.int32)


def _check_phases(phases: Sequence[Phase], total_steps: int) -> tuple[Phase, ...]:
    phases = tuple(phases)
    if not phases or not all(isinstance(p, Phase) for p in phases):
        raise TypeError(f"phases: expected a non-empty sequence of Phase objects, got {phases!r}")
    if not (isinstance(total_steps, int) and not isinstance(total_steps, bool)) or total_steps < 1:
        raise ValueError(f"total_steps: got {total_steps!r}, expected an integer >= 1")
    for i, p in enumerate(phases):
        if p.learning_rates is None:
            raise ValueError(
                f"phases[{i}] ({p.name!r}).learning_rates: not set; give the peak learning "
                "rate of each parameter group, e.g. {'enc': 1e-3, 'dec': 1e-3}"
            )
    return phases


def _groups(phases: Sequence[Phase]) -> tuple[str, ...]:
    """Every group any phase names (in `learning_rates` or `frozen`), in first-seen order."""
    seen: dict[str, None] = {}
    for p in phases:
        seen.update(dict.fromkeys(p.learning_rates))
        seen.update(dict.fromkeys(p.frozen))
    return tuple(seen)


def _peak(phase: Phase, group: str, index: int) -> float:
    if group in phase.frozen:
        return 0.0
    if group not in phase.learning_rates:
        raise ValueError(
            f"phases[{index}] ({phase.name!r}).learning_rates: no rate for group {group!r} "
            f"(named by another phase); give one, or list it in 'frozen'"
        )
    return float(phase.learning_rates[group])


# ----------------------------------------------------------------------------- learning rates


def _warmup_cosine(steps: int, warmup_fraction: float, final_lr_fraction: float, peak=1.0):
    """``t -> [0, peak]``: linear warm-up from 0, cosine decay to `final_lr_fraction` of `peak`
    at `steps`, constant after (optax's decay schedules hold their end value)."""
    warmup = min(round(warmup_fraction * steps), steps - 1)
    if warmup == 0:
        return optax.cosine_decay_schedule(peak, max(steps, 1), alpha=final_lr_fraction)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=steps,
        end_value=peak * final_lr_fraction,
    )


def learning_rate_schedules(
    phases: Sequence[Phase],
    *,
    total_steps: int,
    warmup_fraction: float = 0.05,
    final_lr_fraction: float = 0.1,
    lr_schedule: str = "per_run",
) -> dict[str, optax.Schedule]:
    """One learning-rate schedule per parameter group, across the phases.

    Each phase gives each group a peak rate (``Phase.learning_rates``; 0 for a group in
    ``Phase.frozen``). The shape around those peaks is linear warm-up from 0 over
    `warmup_fraction` of the steps, then cosine decay to `final_lr_fraction` of the peak:

    * ``lr_schedule="per_run"``: one warm-up and one decay over the whole run; the rate at
      step ``t`` is ``peak[phase(t)] * shape(t / total_steps)``, so a phase switch changes the
      peak but never restarts the warm-up (the rate at the switch is not 0).
    * ``lr_schedule="per_phase"``: each phase warms up and decays over its own steps
      (`optax.join_schedules` of one `optax.warmup_cosine_decay_schedule` per phase).

    Past `total_steps` (a run trained longer than its schedule) every schedule stays at its
    final value: the last phase goes on at its final learning rate.

    Args:
      phases: the phases, in order (`Phase`; each sets `learning_rates`).
      total_steps: the steps the phases span.
      warmup_fraction: share of the run (``per_run``) or of each phase (``per_phase``) spent
        warming up, in [0, 1).
      final_lr_fraction: where the cosine decay ends, as a share of the peak, in [0, 1]
        (1: constant after warm-up).
      lr_schedule: ``"per_run"`` or ``"per_phase"``.

    Returns:
      ``{group: schedule}`` for every group any phase names.

    Examples:
      >>> phases = [Phase("a", 0.5, learning_rates={"g": 1e-3}),
      ...           Phase("b", 0.5, learning_rates={"g": 1e-4})]
      >>> s = learning_rate_schedules(phases, total_steps=100, final_lr_fraction=1.0)
      >>> [round(float(s["g"](t)), 8) for t in (0, 10, 50)]  # warm-up: 5 steps
      [0.0, 0.001, 0.0001]
    """
    phases = _check_phases(phases, total_steps)
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: got {lr_schedule!r}, expected one of {LR_SCHEDULES}")
    if not (0 <= warmup_fraction < 1):
        raise ValueError(f"warmup_fraction: got {warmup_fraction!r}, expected a number in [0, 1)")
    if not (0 <= final_lr_fraction <= 1):
        raise ValueError(
            f"final_lr_fraction: got {final_lr_fraction!r}, expected a number in [0, 1]"
        )
    starts = phase_boundaries(phases, total_steps)
    ends = (*starts[1:], total_steps)
    run_shape = _warmup_cosine(total_steps, warmup_fraction, final_lr_fraction)
    out = {}
    for g in _groups(phases):
        peaks = [_peak(p, g, i) for i, p in enumerate(phases)]
        if lr_schedule == "per_phase":
            scheds = [
                optax.constant_schedule(0.0)
                if peak == 0.0
                else _warmup_cosine(e - s, warmup_fraction, final_lr_fraction, peak)
                for peak, s, e in zip(peaks, starts, ends, strict=True)
            ]
            out[g] = scheds[0] if len(scheds) == 1 else optax.join_schedules(scheds, starts[1:])
        else:
            peak = optax.join_schedules([optax.constant_schedule(v) for v in peaks], starts[1:])
            out[g] = _product(peak, run_shape)
    return out


def _product(a: optax.Schedule, b: optax.Schedule) -> optax.Schedule:
    return lambda step: a(step) * b(step)


# ----------------------------------------------------------------------------- parameter labels


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def param_path(path: Sequence[Any]) -> str:
    """A pytree key path as ``"enc/kernel"`` (dict keys, attribute names, sequence indices,
    joined by ``/``). The ``value`` attribute that ends the path of a flax NNX variable's array
    is left out, so ``nnx.state(model)`` and ``nnx.to_pure_dict`` give the same names."""
    names = [_key_name(k) for k in path]
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and names[-1] == "value":
        names = names[:-1]
    return "/".join(names)


def label_params(
    rules: Sequence[tuple[str, str]],
) -> Callable[[Any], Any]:
    """``params -> labels``: each parameter gets the group of the first rule its path matches.

    The rules are ``(regex, group)`` pairs, as big_vision's parameter rules: a parameter whose
    path (`param_path`, e.g. ``"enc/layers/0/kernel"``; linen's ``params`` dicts start with
    ``"params/"``) matches ``regex`` in full (`re.fullmatch`) is in ``group``; the first
    matching rule wins. Add ``(".*", "rest")`` last to catch the others.

    Args:
      rules: ``(regex, group)`` pairs, in order of priority.

    Returns:
      A function of a parameter pytree that returns the same pytree of group names: what
      `optax.partition` (and `phased_optimizer`'s ``param_labels``) takes.

    Raises:
      ValueError: (when called) a parameter matches no rule; its path is named.

    Examples:
      >>> labels = label_params([(r"enc/.*", "enc"), (r".*", "dec")])
      >>> labels({"enc": {"w": 0.0}, "dec": {"w": 0.0}})
      {'dec': {'w': 'dec'}, 'enc': {'w': 'enc'}}
    """
    compiled = []
    for i, rule in enumerate(rules):
        if not (isinstance(rule, Sequence) and len(rule) == 2 and isinstance(rule[1], str)):
            raise TypeError(f"rules[{i}]: got {rule!r}, expected a (regex, group name) pair")
        try:
            compiled.append((re.compile(rule[0]), rule[1]))
        except (re.error, TypeError) as e:
            raise ValueError(f"rules[{i}]: {rule[0]!r} is not a regular expression ({e})") from e

    def labels(params):
        def label(path, _):
            name = param_path(path)
            for pattern, group in compiled:
                if pattern.fullmatch(name):
                    return group
            shown = [r for r, _ in rules]
            raise ValueError(f"parameter {name!r} matches no rule; rules: {shown}")

        return jax.tree_util.tree_map_with_path(label, params)

    return labels


def _checked_labels(param_labels, groups: tuple[str, ...]):
    """`param_labels` as a callable that refuses a label no phase names."""

    def labels(params):
        tree = param_labels(params) if callable(param_labels) else param_labels
        found = set(jax.tree.leaves(tree))
        unknown = sorted(map(str, found - set(groups)))
        if unknown:
            raise ValueError(
                f"param_labels: group(s) {unknown} are in no phase; the phases name {groups} "
                "(give each group a learning rate in every phase, or list it in 'frozen')"
            )
        return tree

    return labels


# ----------------------------------------------------------------------------- the optimizer


def phased_optimizer(
    phases: Sequence[Phase],
    *,
    param_labels: Any,
    total_steps: int,
    optimizer: Callable[[optax.Schedule], optax.GradientTransformation] = optax.adamw,
    warmup_fraction: float = 0.05,
    final_lr_fraction: float = 0.1,
    lr_schedule: str = "per_run",
    grad_clip_norm: float | None = None,
) -> optax.GradientTransformation:
    """An optax optimizer whose per-group learning rates follow the phases.

    ``optax.partition`` over the groups the phases name: each group gets
    ``optimizer(schedule)`` with its schedule from `learning_rate_schedules` (an
    `optax.join_schedules` of the phases' rates), and a group frozen in *every* phase gets
    `optax.set_to_zero` (no optimizer state). A group frozen in some phases only has learning
    rate 0 there, so its updates are exactly zero (its optimizer moments still see the
    gradients). The learning rates are functions of optax's own step count, so one jitted step
    serves every phase.

    Args:
      phases: the phases, in order (`Phase`; each sets `learning_rates` for every group it does
        not freeze).
      param_labels: what `optax.partition` takes: a pytree of group names with the structure of
        the parameters, or a function of the parameters returning one (`label_params` builds
        one from ``(regex, group)`` rules). Every label must be a group some phase names.
      total_steps: the steps the phases span (their fractions are of this).
      optimizer: ``learning_rate -> GradientTransformation``, e.g. ``optax.adamw`` (the
        default, with its own defaults) or ``functools.partial(optax.adamw, weight_decay=1e-4)``.
      warmup_fraction: see `learning_rate_schedules` (default 0.05).
      final_lr_fraction: see `learning_rate_schedules` (default 0.1).
      lr_schedule: ``"per_run"`` (default: one warm-up and decay over the run) or
        ``"per_phase"`` (each phase warms up and decays).
      grad_clip_norm: when set, gradients are first clipped to this global norm
        (`optax.clip_by_global_norm`, over all groups). Default: no clipping.

    Returns:
      An `optax.GradientTransformation` (works with `nnx.Optimizer`, flax's ``TrainState`` and
      plain ``tx.init`` / ``tx.update``).

    Examples:
      >>> import jax.numpy as jnp
      >>> phases = [Phase("warm", 0.5, learning_rates={"a": 1e-2}, frozen=("b",)),
      ...           Phase("all", 0.5, learning_rates={"a": 1e-3, "b": 1e-3})]
      >>> params = {"a": jnp.ones(2), "b": jnp.ones(2)}
      >>> tx = phased_optimizer(phases, param_labels={"a": "a", "b": "b"}, total_steps=10)
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> float(jnp.abs(updates["b"]).max())  # frozen in the first phase
      0.0
    """
    schedules = learning_rate_schedules(
        phases,
        total_steps=total_steps,
        warmup_fraction=warmup_fraction,
        final_lr_fraction=final_lr_fraction,
        lr_schedule=lr_schedule,
    )
    if grad_clip_norm is not None and not (
        isinstance(grad_clip_norm, (int, float)) and math.isfinite(grad_clip_norm)
    ):
        raise ValueError(f"grad_clip_norm: got {grad_clip_norm!r}, expected a finite number")
    groups = tuple(schedules)
    transforms = {
        g: optax.set_to_zero() if all(g in p.frozen for p in phases) else optimizer(schedules[g])
        for g in groups
    }
    tx = optax.partition(transforms, _checked_labels(param_labels, groups))
    if grad_clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    return tx


# ----------------------------------------------------------------------------- loss weights

WEIGHT_FIELDS = ("structural_weight", "mae_weight")
# Weights `defaults` may leave out, and their value then (the loss's mean term is off).
OPTIONAL_WEIGHT_FIELDS = {"mean_weight": 0.0}


def loss_weight_schedule(
    phases: Sequence[Phase],
    *,
    total_steps: int,
    defaults: Mapping[str, float],
) -> Callable[[jax.typing.ArrayLike], dict[str, jax.Array]]:
    """``step -> {"phase", "structural_weight", "mae_weight", "mean_weight"}`` as traced scalars.

    The phase index and the loss weights of the phase `step` is in, looked up in a table
    inside the traced computation: call it on ``state.step`` in a jitted train step and pass the
    weights to the loss; a phase switch triggers no retrace. Past `total_steps` the last phase
    goes on.

    Args:
      phases: the phases, in order.
      total_steps: the steps the phases span.
      defaults: ``{"structural_weight": ..., "mae_weight": ...}`` and optionally
        ``"mean_weight"`` (0 if left out) for phases whose weight is ``None`` (usually the loss
        preset's own weights). A phase that sets its structural or MAE weight but leaves
        ``mean_weight`` out has the mean term off (0), so a phase written as MAE only is MAE
        only whatever the preset.

    Returns:
      The function of the step (int32 ``phase``, float32 weights).

    Examples:
      >>> phases = [Phase("mae", 0.3, structural_weight=0.0, mae_weight=1.0,
      ...                 learning_rates={"g": 1e-3}),
      ...           Phase("mix", 0.7, learning_rates={"g": 1e-3})]
      >>> at = loss_weight_schedule(phases, total_steps=100,
      ...                           defaults={"structural_weight": 0.8, "mae_weight": 0.2})
      >>> [float(at(29)["structural_weight"]), float(at(30)["structural_weight"])]
      [0.0, 0.800000011920929]
    """
    phases = tuple(phases)
    missing = [k for k in WEIGHT_FIELDS if k not in defaults]
    if missing:
        raise ValueError(f"defaults: missing {missing}; expected the keys {WEIGHT_FIELDS}")
    boundaries = phase_boundaries(phases, total_steps)
    defaults = {**OPTIONAL_WEIGHT_FIELDS, **defaults}

    def weight(p: Phase, key: str) -> float:
        if getattr(p, key) is not None:
            return getattr(p, key)
        # An optional term (the mean term) left out of a phase that sets its own mix is off:
        # `{"structural_weight": 0, "mae_weight": 1}` means MAE only whatever the preset.
        own_mix = any(getattr(p, k) is not None for k in WEIGHT_FIELDS)
        return (
            OPTIONAL_WEIGHT_FIELDS[key]
            if key in OPTIONAL_WEIGHT_FIELDS and own_mix
            else defaults[key]
        )

    tables = {
        key: jnp.asarray([weight(p, key) for p in phases], jnp.float32)
        for key in (*WEIGHT_FIELDS, *OPTIONAL_WEIGHT_FIELDS)
    }

    def at(step):
        i = phase_index(step, boundaries)
        return {"phase": i, **{key: table[i] for key, table in tables.items()}}

    return at


# ----------------------------------------------------------------------------- from a Config


def _config_phases(config: Config) -> tuple[Phase, ...]:
    """The config's phases, each with its learning rates (`Config.learning_rate` for every
    group of a phase that sets none)."""
    return tuple(
        p
        if p.learning_rates is not None
        else p.replace(learning_rates=dict.fromkeys(GROUPS, config.learning_rate))
        for p in config.phases
    )


def optimizer_from_config(
    config: Config,
) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
    """`train.py`'s optimizer: `phased_optimizer` of AdamW over the model's ``body`` / ``head``
    groups (the first key of each parameter's path), with the config's schedule options.

    Returns:
      The transformation and its per-group learning-rate schedules (for the log).
    """
    phases = _config_phases(config)
    options = {
        "total_steps": config.schedule_total,
        "warmup_fraction": config.warmup_fraction,
        "final_lr_fraction": config.final_lr_fraction,
        "lr_schedule": config.lr_schedule,
    }

    def adamw(learning_rate):
        return optax.adamw(learning_rate, weight_decay=config.weight_decay)

    tx = phased_optimizer(
        phases,
        param_labels=label_params([(f"{g}(/.*)?", g) for g in GROUPS]),
        optimizer=adamw,
        grad_clip_norm=config.grad_clip_norm if config.grad_clip_norm > 0 else None,
        **options,
    )
    return tx, learning_rate_schedules(phases, **options)


def make_optimizer(
    config: Config,
) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
    """The same as `optimizer_from_config` (the name earlier versions used)."""
    return optimizer_from_config(config)


def schedule_from_config(
    config: Config,
    learning_rates: Mapping[str, optax.Schedule],
    preset_weights: Mapping[str, float],
) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """``step -> {"phase", "lr_body", "lr_head", "structural_weight", "mae_weight",
    "mean_weight"}``.

    `loss_weight_schedule` of the config's phases (a ``None`` weight falls back to the preset's
    own, `preset_weights` from `build_loss`) plus each group's learning rate, for the log.
    """
    weights = loss_weight_schedule(
        config.phases, total_steps=config.schedule_total, defaults=preset_weights
    )

    def at(step):
        out = weights(step)
        out.update({f"lr_{g}": jnp.asarray(learning_rates[g](step), jnp.float32) for g in GROUPS})
        return out

    return at


def make_schedule(
    config: Config,
    learning_rates: Mapping[str, optax.Schedule],
    preset_weights: Mapping[str, float],
) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """The same as `schedule_from_config` (the name earlier versions used)."""
    return schedule_from_config(config, learning_rates, preset_weights)
