"""Adaptive balance: each loss term divided by a running estimate of its own size.

The running estimate is explicit state (a small pytree) that goes in and comes
out of every call, so the loss stays a pure function that ``jit`` and
checkpoints handle like optimizer state.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dssim_mae_jax import _inputs, _jit, _losses, _validation
from dssim_mae_jax._presets import LossConfig


class BalanceState(NamedTuple):
    """Running magnitudes of the two loss terms.

    Attributes:
      magnitudes: float32 ``[2]``, the (biased) exponential moving averages of
        the batch-mean structural term ``D`` and MAE term ``M``.
      count: int32 scalar, the number of updates so far (for bias correction).
    """

    magnitudes: jax.Array
    count: jax.Array


def init_balance_state() -> BalanceState:
    """The state before the first step: zero magnitudes, zero updates.

    Returns:
      A :class:`BalanceState`.

    Examples:
      >>> from dssim_mae_jax import init_balance_state
      >>> init_balance_state().count.tolist()
      0
    """
    return BalanceState(jnp.zeros((2,), jnp.float32), jnp.zeros((), jnp.int32))


def make_balanced_loss(
    preset_or_config: str | LossConfig | Mapping,
    *,
    decay: float = 0.99,
    eps: float = 1e-6,
    **overrides,
) -> Callable:
    r"""A DSSIM+MAE loss whose two terms are each divided by their running size.

    Per call, with ``D`` and ``M`` the per-image terms of :func:`make_loss`::

      m_t  = decay * m_{t-1} + (1 - decay) * stop_gradient(mean_batch([D, M]))
      m^_t = m_t / (1 - decay**t)                      (bias correction, as Adam)
      loss = w_s * D / (m^_t[0] + eps) + w_a * M / (m^_t[1] + eps)

    so both terms are on a scale of about 1 and the weights express how much
    each term's *relative* improvement matters. The first step divides by the
    current batch's own magnitudes. The estimate includes the current batch and
    carries no gradient.

    When it helps: terms whose scales differ or drift apart, e.g. an
    unnormalised MAE on 0..255 data next to a DSSIM in [0, 1], or late in
    training when ``1 - MS-SSIM`` shrinks much faster than the MAE and stops
    contributing. When not: to reproduce a published recipe (its weights assume
    the raw terms), when the terms are already on known scales
    (``normalize_mae=True``), or when loss values must be comparable across
    runs (the effective weights change with the running estimate). Near
    convergence it amplifies a vanishing term's noise; ``eps`` bounds this.

    Call it on the whole batch, not under ``vmap`` over images: the running
    estimate is a batch statistic. Images that cannot be scored (NaN or inf in
    a valid pixel) get a NaN loss and are left out of the estimate; a batch
    with no scorable image leaves the state unchanged. The function is
    compiled once per input shapes (eager calls too).

    Args:
      preset_or_config: as :func:`make_loss`.
      decay: EMA decay in [0, 1).
      eps: added to each magnitude before dividing (> 0).
      **overrides: ``LossConfig`` fields, as :func:`make_loss`.

    Returns:
      ``loss_fn(predictions, targets, state, *, mask=None, weights=None) ->
      (loss, aux, new_state)``. ``aux`` holds the per-image values of
      :func:`make_loss` (raw, unbalanced terms; ``"loss"`` is the balanced
      loss) plus ``"scale_structural"`` and ``"scale_mae"``, the divisors used.

    Raises:
      ValueError: ``decay`` outside [0, 1), ``eps`` <= 0, ``return_map=True``,
        or any error of :func:`make_loss`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dssim_mae_jax import init_balance_state, make_balanced_loss
      >>> loss_fn = make_balanced_loss("seed-naive", normalize_mae=False, max_val=255.0)
      >>> x = jnp.linspace(0.0, 255.0, 2 * 16 * 16 * 1).reshape(2, 16, 16, 1)
      >>> loss, aux, state = loss_fn(x, 0.9 * x, init_balance_state())
      >>> round(float(jnp.mean(loss)), 2)  # both terms are ~1 on the first step
      1.0
      >>> state.count.tolist()
      1
    """
    cfg = _losses.as_config(preset_or_config, overrides)
    if cfg.return_map:
        raise ValueError("`return_map=True` is not supported by the balanced loss.")
    decay = _validation.concrete_scalar(decay)
    if (
        isinstance(decay, bool)
        or not isinstance(decay, numbers.Real)
        or not 0.0 <= float(decay) < 1.0
    ):
        raise ValueError(f"`decay` must be a number in [0, 1), got {decay!r}.")
    _validation.check_positive("eps", eps)

    def loss_fn(
        predictions: ArrayLike,
        targets: ArrayLike,
        state: BalanceState,
        *,
        mask: ArrayLike | None = None,
        weights: Mapping[str, float | ArrayLike] | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array], BalanceState]:
        check_state(state)
        return _balanced(
            predictions,
            targets,
            state,
            config=cfg,
            decay=float(decay),
            eps=float(_validation.concrete_scalar(eps)),
            mask=mask,
            weights=_losses.normalize_weights(weights),
        )

    loss_fn.config = cfg
    return loss_fn


def check_state(state) -> None:
    """Raises a TypeError unless `state` is a :class:`BalanceState`."""
    if not isinstance(state, BalanceState):
        raise TypeError(
            "`state` must be a BalanceState (from init_balance_state() or the previous call), "
            f"got {type(state).__name__}."
        )


@_jit.jit_public(("config", "decay", "eps"), check_all=_losses.check_loss_call)
def _balanced(predictions, targets, state, *, config, decay, eps, mask, weights):
    """(loss, aux, new_state) of one call of a :func:`make_balanced_loss` function."""
    pair = _inputs.prepare_pair(
        predictions, targets, max_val=config.max_val, mask=mask, spatial_dims=config.spatial_dims
    )
    terms = _losses.evaluate_terms(config, pair)
    d, m = terms["structural"], terms["mae"]
    w_s, w_a, invalid = _losses.resolve_weights(config, weights, d.dtype)
    # NaN marks images that cannot be scored: they stay out of the estimate.
    current = jax.lax.stop_gradient(
        jnp.stack([jnp.nanmean(d), jnp.nanmean(m)]).astype(state.magnitudes.dtype)
    )
    scored = jnp.all(jnp.isfinite(current))
    magnitudes = jnp.where(
        scored, decay * state.magnitudes + (1.0 - decay) * current, state.magnitudes
    )
    count = jnp.where(scored, state.count + 1, state.count)
    correction = 1.0 - jnp.power(jnp.asarray(decay, magnitudes.dtype), count)
    scale = (magnitudes / correction + eps).astype(d.dtype)
    # The mean term (off unless configured) is added as it is, not balanced.
    w_r, invalid_r = _losses.resolve_mean_weight(config, weights, d.dtype)
    loss = w_s * d / scale[0] + w_a * m / scale[1] + w_r * terms["mean"]
    loss = jnp.where(invalid | invalid_r, jnp.nan, loss)
    aux = {k: v for k, v in terms.items() if not k.endswith("_map")}
    aux["loss"] = loss
    aux["scale_structural"] = jnp.broadcast_to(scale[0], d.shape)
    aux["scale_mae"] = jnp.broadcast_to(scale[1], d.shape)
    return _losses.reduce(config, loss), aux, BalanceState(magnitudes, count)
