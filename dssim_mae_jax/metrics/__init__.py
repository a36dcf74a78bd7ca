"""Dataset-scale evaluation: mergeable metric states and the papers' protocols.

One immutable state per metric, each the mean over images of the public
function of the same name::

  from dssim_mae_jax.metrics import SSIM, MSSSIM, MultiSigmaSSIM, PSNR, MAE

  state = SSIM.empty(max_val=255.0, y_channel=True, crop_border=4)
  for restored, clean in batches:
      state = state.update(restored, clean)  # inside or outside jit
  value = state.compute()

States are pytrees; ``update``/``merge`` return new states. Eager updates of
mixed-size images are padded to a few shape buckets (each image's value is its
unpadded value). ``NnxMetric`` wraps a state as a ``flax.nnx.metrics.Metric``
(flax is imported only when it is used). See ``docs/evaluation.md``.
"""

from dssim_mae_jax.metrics._states import MAE, MSSSIM, PSNR, SSIM, MultiSigmaSSIM, merge_processes

__all__ = ("MAE", "MSSSIM", "PSNR", "SSIM", "MultiSigmaSSIM", "NnxMetric", "merge_processes")


def __getattr__(name):
    # flax stays optional: the wrapper module (and flax) load on first use.
    if name == "NnxMetric":
        from dssim_mae_jax.metrics._nnx import NnxMetric

        return NnxMetric
    raise AttributeError(f"module 'dssim_mae_jax.metrics' has no attribute {name!r}")
