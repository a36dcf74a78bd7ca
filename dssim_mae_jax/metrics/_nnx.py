"""A ``flax.nnx.metrics.Metric`` holding one of this package's metric states (imports flax)."""

from __future__ import annotations

from flax import nnx


def _get(variable):
    # flax >= 0.12 deprecates `.value` for non-array values in favour of get_value/set_value.
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


def _set(variable, value) -> None:
    if hasattr(variable, "set_value"):
        variable.set_value(value)
    else:
        variable.value = value


class NnxMetric(nnx.metrics.Metric):
    """A metric state as a ``flax.nnx`` metric, for ``nnx.MultiMetric``.

    ``update(**kwargs)`` reads the images from the keyword arguments named by
    `predictions` and `targets` (and an optional ``mask``), so several of these
    and flax's own ``nnx.metrics.Average`` share one ``MultiMetric.update``
    call. The state lives in an ``nnx.metrics.MetricState`` variable; updates
    replace it (the state itself stays immutable), so the metric works under
    ``nnx.jit`` as flax's metrics do.

    Args:
      state: an empty (or partly filled) state, e.g. ``SSIM.empty(max_val=1.0)``.
      predictions: keyword of `update` holding the predictions.
      targets: keyword of `update` holding the targets.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dssim_mae_jax.metrics import PSNR, SSIM, NnxMetric
      >>> metrics = nnx.MultiMetric(
      ...     psnr=NnxMetric(PSNR.empty(max_val=1.0)),
      ...     ssim=NnxMetric(SSIM.empty(max_val=1.0)),
      ...     loss=nnx.metrics.Average("loss"),
      ... )
      >>> x = jnp.linspace(0.0, 1.0, 2 * 16 * 16).reshape(2, 16, 16, 1)
      >>> metrics.update(predictions=0.9 * x, targets=x, loss=jnp.asarray(0.5))
      >>> {k: round(float(v), 3) for k, v in metrics.compute().items()}
      {'psnr': 26.568, 'ssim': 0.99, 'loss': 0.5}
    """

    def __init__(self, state, *, predictions: str = "predictions", targets: str = "targets"):
        self.predictions = predictions
        self.targets = targets
        self.state = nnx.metrics.MetricState(state)

    def reset(self) -> None:
        """Empties the state (same options)."""
        _set(self.state, _get(self.state).reset())

    def update(self, *, mask=None, **kwargs) -> None:
        """Adds the images in ``kwargs[predictions]`` and ``kwargs[targets]``."""
        for name in (self.predictions, self.targets):
            if name not in kwargs:
                raise TypeError(f"NnxMetric.update() needs the keyword argument {name!r}.")
        new = _get(self.state).update(kwargs[self.predictions], kwargs[self.targets], mask=mask)
        _set(self.state, new)

    def compute(self):
        """The dataset value of the state."""
        return _get(self.state).compute()
