"""dssim_mae_jax: fast, pure SSIM, MS-SSIM, DSSIM, MAE and DSSIM+MAE losses for JAX.

Public surface (everything else is private)::

  from dssim_mae_jax import ssim, ms_ssim, multi_sigma_ssim, dssim, mae, psnr

The training machinery (models, data, phased optimiser, train step,
checkpoints) lives in the subpackage ``dssim_mae_jax.training`` so that
importing the metrics stays light.
"""

from dssim_mae_jax._balance import BalanceState, init_balance_state, make_balanced_loss
from dssim_mae_jax._losses import dssim_mae_loss, make_loss
from dssim_mae_jax._metrics import mae, psnr
from dssim_mae_jax._multi_sigma import multi_sigma_ssim
from dssim_mae_jax._presets import PRESETS, LossConfig
from dssim_mae_jax._ssim import MS_SSIM_WEIGHTS, dssim, ms_ssim, ssim
from dssim_mae_jax._version import __version__ as __version__

__all__ = (
    "MS_SSIM_WEIGHTS",
    "PRESETS",
    "BalanceState",
    "LossConfig",
    "dssim",
    "dssim_mae_loss",
    "init_balance_state",
    "mae",
    "make_balanced_loss",
    "make_loss",
    "ms_ssim",
    "multi_sigma_ssim",
    "psnr",
    "ssim",
)
