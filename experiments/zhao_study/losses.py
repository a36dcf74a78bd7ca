"""The compared losses, each ``loss(predictions, targets) -> scalar`` on [B, 31, 31, 3] patches.

All structural terms follow the released layers of Zhao et al. (NVlabs/PL4NN ``src/loss.py``):
one Gaussian window as large as the 31x31 patch, so each patch gives one value (the centre
pixel's), C1 = 0.01^2, C2 = 0.03^2 on [0, 1] data.

* ``l2``: mean squared error.  ``l1``: mean absolute error.
* ``ssim``: 1 - SSIM with the released layer's default window, sigma 5 over the whole patch.
* ``msssim``: 1 - MS-SSIM as the paper defines it at full resolution: luminance at sigma 8
  times the contrast-structure terms at sigma 0.5, 1, 2, 4, 8 (`multi_sigma_ssim`).
* ``mix``: 0.84 (1 - MS-SSIM) + 0.16 G_8 * l1: MSSSIML1 of the released layers with the
  paper's alpha, from `multi_sigma_ssim` and `mae` with the sigma-8 Gaussian as weights.
* ``phased`` is not a loss but a schedule: ``l1`` then ``mix`` (see `run.PHASED`).
* ``mix_luma`` (remedy for the colour cast): 0.84 (1 - MS-SSIM of the BT.601 luma) +
  0.16 G_8 * l1 on RGB. Chroma is then constrained only by the l1 term.
* ``mix_a50`` (second remedy, a larger l1 weight): 0.5 (1 - MS-SSIM) + 0.5 G_8 * l1.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import dssim_mae_jax as dmj

PATCH = 31
ALPHA = 0.84
SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)
LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
NEEDS_MULTI_SIGMA = ("msssim", "mix", "mix_luma", "mix_a50", "phased")
LOSSES = ("l2", "l1", "ssim", "msssim", "mix", "phased", "mix_luma", "mix_a50")


def has_multi_sigma() -> bool:
    """Whether the installed ``dssim_mae_jax`` has `multi_sigma_ssim` (MS-SSIM, Mix)."""
    return hasattr(dmj, "multi_sigma_ssim")


def gaussian_window(size: int = PATCH, sigma: float = SIGMAS[-1]) -> np.ndarray:
    """The normalised 2-D Gaussian of the released layers, [size, size, 1]."""
    k = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(k**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return (w / w.sum()).astype(np.float32)[..., None]


def _msssim(x, y):
    return dmj.multi_sigma_ssim(x, y, max_val=1.0, sigmas=SIGMAS, filter_size=PATCH)


def _l2(x, y):
    return jnp.mean((x - y) ** 2)


def _l1(x, y):
    return jnp.mean(dmj.mae(x, y, max_val=1.0))


def _ssim(x, y):
    return 1.0 - jnp.mean(dmj.ssim(x, y, max_val=1.0, filter_size=PATCH, filter_sigma=5.0))


def _dmsssim(x, y):
    return 1.0 - jnp.mean(_msssim(x, y))


def _gl1(x, y):
    """The released layer's l1 term: the G_8-weighted mean of |x - y| (mean over channels)."""
    return jnp.mean(dmj.mae(x, y, max_val=1.0, mask=jnp.asarray(gaussian_window())))


def _mix(x, y, alpha=ALPHA):
    return alpha * _dmsssim(x, y) + (1 - alpha) * _gl1(x, y)


def _mix_luma(x, y):
    luma = jnp.asarray(LUMA)
    xl, yl = (x @ luma)[..., None], (y @ luma)[..., None]
    return ALPHA * _dmsssim(xl, yl) + (1 - ALPHA) * _gl1(x, y)


DENSE_LOSSES = ("l2", "l1", "msssim", "mix")  # the losses `make` has for crops above PATCH


def _dense_mix(x, y):
    """Mix on a crop larger than PATCH: the mean of the per-patch Mix over every 31x31
    sub-patch (the library's ``zhao-mix`` preset, valid positions, then the batch mean)."""
    loss, _ = dmj.make_loss("zhao-mix")(x, y)
    return jnp.mean(loss)


def _make_dense(name: str):
    """Losses on crops larger than PATCH, each the mean over every 31x31 sub-patch position.

    l1 and l2 are the plain pixel means (as on 31x31); ``msssim`` is already the mean over
    the valid map of `multi_sigma_ssim`; ``mix`` is `_dense_mix`.
    """
    table = {"l2": _l2, "l1": _l1, "msssim": _dmsssim, "mix": _dense_mix}
    if name not in table:
        raise ValueError(
            f"loss: got {name!r} on crops above {PATCH}, expected one of {DENSE_LOSSES}"
        )
    return table[name]


def make(name: str, *, crop: int = PATCH):
    """The scalar loss function called `name` (one of `LOSSES`, ``phased`` excepted).

    With ``crop`` above `PATCH` (dense supervision), only `DENSE_LOSSES`, each the mean of
    its per-patch value over every 31x31 sub-patch of the crop (`_make_dense`).

    Raises:
      ValueError: an unknown name, or MS-SSIM losses without `multi_sigma_ssim`.
    """
    if crop != PATCH:
        return _make_dense(name)
    if name in NEEDS_MULTI_SIGMA and not has_multi_sigma():
        raise ValueError(f"loss {name!r} needs dssim_mae_jax.multi_sigma_ssim (not installed)")
    table = {"l2": _l2, "l1": _l1, "ssim": _ssim, "msssim": _dmsssim, "mix": _mix}
    table["mix_luma"] = _mix_luma
    table["mix_a50"] = lambda x, y: _mix(x, y, 0.5)
    if name not in table:
        raise ValueError(f"loss: got {name!r}, expected one of {LOSSES}")
    return table[name]
