"""Loss configuration and the named DSSIM+MAE recipes (presets).

A :class:`LossConfig` is a frozen, hashable description of one DSSIM+MAE loss;
``PRESETS`` maps the recipes users ask for by name to such configs. The
configs are validated when they are built, so a bad option fails before any
tracing starts.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import warnings

import numpy as np

from dssim_mae_jax import _filters, _validation
from dssim_mae_jax._multi_sigma import ZHAO_FILTER_SIZE, ZHAO_SIGMAS, check_sigmas
from dssim_mae_jax._pyramid import MS_SSIM_WEIGHTS
from dssim_mae_jax._ssim import PALLAS_HAS_NO_CS, resolve_implementation

STRUCTURES = ("ssim", "ms_ssim", "multi_sigma")
DSSIM_FORMS = ("half", "full")
MAE_WEIGHTINGS = ("mean", "gaussian")
REDUCTIONS = ("none", "mean", "sum")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Everything that defines one DSSIM+MAE loss.

    The per-image loss is ``structural_weight * D + mae_weight * M + mean_weight * R``
    where

    * ``D`` is the structural term: ``(1 - S) / 2`` (``dssim_form="half"``) or
      ``1 - S`` (``"full"``), ``S`` being SSIM, the pyramid MS-SSIM of Wang et
      al. or the full-resolution multi-sigma MS-SSIM of Zhao et al.
      (``structure``);
      with ``clip`` it is clipped to its range ([0, 1] for ``"half"``, [0, 2]
      for ``"full"``);
    * ``M`` is the mean absolute error, divided by ``max_val`` when
      ``normalize_mae`` (so it is on the [0, 1] scale of ``D`` whatever the
      data range); with ``mae_weighting="gaussian"`` the absolute error is
      seen through the Gaussian window of the coarsest SSIM scale (Zhao et al.:
      the window of the largest sigma for ``structure="multi_sigma"``);
    * ``R`` is the mean term, a smooth L1 (Charbonnier) distance of the
      per-channel means, ``R = (1/C) sum_c (sqrt(d_c^2 + e^2) - e)`` with
      ``d_c`` the difference of the (masked) means of channel ``c`` over the
      image and ``e = mean_eps``, both divided by ``max_val`` (and, like
      ``M``, back in the data's units unless ``normalize_mae``). SSIM's
      luminance factor barely penalises a small offset of an image's mean,
      so a loss led by SSIM leaves a colour cast; ``R`` pulls each channel's
      mean back at a rate that does not vanish with the offset (about ``1/C``
      per unit of offset above ``e``), and its gradient goes to 0 smoothly
      at ``d_c = 0``.

    With ``per_pixel`` both terms are combined per pixel on the SSIM map's
    grid and then averaged over pixels and channels (monodepth2); the
    per-image loss is then the mean of the loss map.

    Attributes:
      structural_weight: weight of the structural term ``D`` (>= 0). The old
        name ``w_structural`` still works, with a ``DeprecationWarning``.
      mae_weight: weight of the MAE term ``M`` (>= 0). The old name
        ``w_absolute`` still works, with a ``DeprecationWarning``.
      mean_weight: weight of the mean term ``R`` (>= 0; 0, the default, leaves
        the loss as it was; the term is still computed and logged).
      mean_eps: the smoothing ``e`` of ``R`` in the data's units (> 0);
        ``None`` (the default) is one 8-bit level, ``max_val / 255``.
      structure: ``"ssim"`` (:func:`dssim_mae_jax.ssim`), ``"ms_ssim"`` (the
        pyramid :func:`dssim_mae_jax.ms_ssim`) or ``"multi_sigma"``
        (:func:`dssim_mae_jax.multi_sigma_ssim`, Zhao et al.'s own).
      dssim_form: ``"half"`` for ``(1 - S) / 2`` or ``"full"`` for ``1 - S``.
      max_val: the data range ``L`` (1.0 for [0, 1] data, 255 for 8-bit data);
        sets SSIM's constants and, with ``normalize_mae``, divides the MAE.
      normalize_mae: divide the MAE by ``max_val``.
      clip: clip ``D`` (per pixel with ``per_pixel``, else per image) to its range.
      per_pixel: combine the DSSIM map and the ``|x - y|`` map per pixel, then
        average (needs ``structure="ssim"``).
      mae_weighting: ``"mean"`` (plain mean of ``|x - y|``) or ``"gaussian"``
        (the mean over window positions of ``|x - y|`` weighted by the Gaussian
        of the coarsest scale; see :func:`dssim_mae_jax.dssim_mae_loss`).
      filter_size: SSIM window size in taps (of every window for ``"multi_sigma"``).
      filter_sigma: SSIM Gaussian window standard deviation (not used by
        ``"multi_sigma"``, whose windows are ``sigmas``).
      k1: SSIM luminance constant.
      k2: SSIM contrast constant.
      window: ``"gaussian"`` or ``"uniform"``.
      padding: ``"valid"``, ``"same"`` (zero) or ``"reflect"``.
      spatial_dims: spatial axes before the channel axis (1, 2 or 3).
      power_factors: MS-SSIM scale weights (``structure="ms_ssim"`` only).
      sigmas: the Gaussian standard deviations of ``structure="multi_sigma"``
        (luminance from the largest).
      reduction: ``"none"`` (per-image loss, the default), ``"mean"`` or
        ``"sum"`` over the batch (the ``aux`` values stay per image).
      return_map: return the per-pixel loss map instead of the per-image loss
        (needs ``structure="ssim"`` and ``mae_weighting="mean"``).
      implementation: how SSIM is computed: ``None`` (the default, ``"xla"``
        on every backend for now), ``"xla"`` or ``"pallas"`` (the fused
        kernels; needs ``structure="ssim"`` and ``spatial_dims=2``, reverse-mode
        differentiation only). See :func:`dssim_mae_jax.ssim`.

    Raises:
      ValueError: an option outside its allowed values or a combination that
        is not supported; the message names the field.
      TypeError: an option of the wrong type.

    Examples:
      >>> from dssim_mae_jax import LossConfig
      >>> LossConfig(structural_weight=0.8, mae_weight=0.2, dssim_form="full").structure
      'ssim'
    """

    structural_weight: float = 0.84
    mae_weight: float = 0.16
    mean_weight: float = 0.0
    mean_eps: float | None = None
    structure: str = "ssim"
    dssim_form: str = "half"
    max_val: float = 1.0
    normalize_mae: bool = True
    clip: bool = False
    per_pixel: bool = False
    mae_weighting: str = "mean"
    filter_size: int = 11
    filter_sigma: float = 1.5
    k1: float = 0.01
    k2: float = 0.03
    window: str = "gaussian"
    padding: str = "valid"
    spatial_dims: int = 2
    power_factors: tuple[float, ...] = MS_SSIM_WEIGHTS
    sigmas: tuple[float, ...] = ZHAO_SIGMAS
    reduction: str = "none"
    return_map: bool = False
    implementation: str | None = None

    def __post_init__(self):
        _validation.check_nonnegative("structural_weight", self.structural_weight)
        _validation.check_nonnegative("mae_weight", self.mae_weight)
        _validation.check_nonnegative("mean_weight", self.mean_weight)
        _validation.check_positive("mean_eps", self.mean_eps, allow_none=True)
        _validation.check_choice("structure", self.structure, STRUCTURES)
        _validation.check_choice("dssim_form", self.dssim_form, DSSIM_FORMS)
        _validation.check_choice("mae_weighting", self.mae_weighting, MAE_WEIGHTINGS)
        _validation.check_choice("reduction", self.reduction, REDUCTIONS)
        _validation.check_choice("window", self.window, _validation.WINDOWS)
        _validation.check_choice("padding", self.padding, _validation.PADDINGS)
        _validation.check_spatial_dims(self.spatial_dims)
        _validation.check_positive("max_val", self.max_val)
        _validation.check_positive("filter_size", self.filter_size, integer=True)
        _validation.check_positive("filter_sigma", self.filter_sigma)
        # float32: the dtype a loss on float32 or integer images computes in.
        _validation.check_stabilisers(self.k1, self.k2, np.float32)
        if float(self.max_val) > float(np.finfo(np.float32).max):
            raise ValueError(f"`max_val` must be finite in float32, got {self.max_val}.")
        # The mean term's gradient d / sqrt(d^2 + e^2) is 0 / 0 at d = 0 if e^2 underflows.
        if self.mean_eps is not None and (
            (float(self.mean_eps) / float(self.max_val)) ** 2 < np.finfo(np.float32).tiny
        ):
            raise ValueError(
                f"`mean_eps` must be at least about 1e-19 * max_val (its square, in units of "
                f"max_val, must be a normal float32), got {self.mean_eps} with "
                f"max_val={self.max_val}."
            )
        _filters.window_taps(self.window, self.filter_size, self.filter_sigma)
        for name in ("normalize_mae", "clip", "per_pixel", "return_map"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, got {getattr(self, name)!r}.")
        # Lists are accepted for convenience but stored as tuples: configs stay hashable.
        object.__setattr__(
            self, "power_factors", _validation.check_power_factors(self.power_factors)
        )
        object.__setattr__(self, "sigmas", check_sigmas(self.sigmas))
        if self.structure == "ms_ssim":
            for name, value, needed in (
                ("window", self.window, "gaussian"),
                ("padding", self.padding, "valid"),
                ("spatial_dims", self.spatial_dims, 2),
                ("per_pixel", self.per_pixel, False),
                ("return_map", self.return_map, False),
            ):
                if value != needed:
                    raise ValueError(
                        f"`{name}`={value!r} is not supported with structure='ms_ssim' "
                        f"(MS-SSIM is a per-image product over scales with valid Gaussian "
                        f"statistics); use {name}={needed!r} or structure='ssim'."
                    )
        if self.structure == "multi_sigma" and self.window != "gaussian":
            raise ValueError(
                f"`window`={self.window!r} is not supported with structure='multi_sigma' "
                "(its windows are Gaussians of the given `sigmas`); use window='gaussian'."
            )
        if self.structure != "ssim":
            resolve_implementation(self.implementation, pallas=PALLAS_HAS_NO_CS)
        elif resolve_implementation(self.implementation) == "pallas" and self.spatial_dims != 2:
            raise ValueError(
                "`implementation='pallas'` needs spatial_dims=2 (the fused kernels filter "
                f"images), got spatial_dims={self.spatial_dims}; use implementation='xla'."
            )
        if (self.per_pixel or self.return_map) and self.mae_weighting != "mean":
            raise ValueError(
                f"`mae_weighting`={self.mae_weighting!r} needs per-image terms; per_pixel and "
                "return_map combine the |x - y| map as is (use mae_weighting='mean')."
            )

    @property
    def w_structural(self) -> float:
        """Deprecated name of :attr:`structural_weight`."""
        _deprecated("w_structural", "structural_weight")
        return self.structural_weight

    @property
    def w_absolute(self) -> float:
        """Deprecated name of :attr:`mae_weight`."""
        _deprecated("w_absolute", "mae_weight")
        return self.mae_weight

    @property
    def levels(self) -> int:
        """Number of scales of the structural term (1 for SSIM)."""
        return len(self.power_factors) if self.structure == "ms_ssim" else 1


FIELDS = tuple(f.name for f in dataclasses.fields(LossConfig))
# Old spellings of fields, still accepted with a DeprecationWarning.
RENAMED = {"w_structural": "structural_weight", "w_absolute": "mae_weight"}


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"`{old}` is deprecated; use `{new}`.", DeprecationWarning, stacklevel=3)


def renamed_fields(fields) -> dict:
    """`fields` with old spellings replaced by the current names (with a warning)."""
    out = {}
    for name, value in dict(fields).items():
        if name in RENAMED:
            _deprecated(name, RENAMED[name])
            if RENAMED[name] in fields:
                raise TypeError(f"Give `{RENAMED[name]}` or `{name}`, not both.")
            name = RENAMED[name]
        out[name] = value
    return out


_dataclass_init = LossConfig.__init__


@functools.wraps(_dataclass_init)
def _init(self, **fields):
    _dataclass_init(self, **renamed_fields(fields))


LossConfig.__init__ = _init


def check_fields(names, what: str) -> None:
    """Raises if any of `names` is not a LossConfig field, listing the valid ones."""
    unknown = sorted(set(names) - set(FIELDS) - set(RENAMED))
    if unknown:
        raise ValueError(f"Unknown {what} {unknown}; valid LossConfig fields are {sorted(FIELDS)}.")


# Zhao et al.'s mix: 0.84 * (1 - MS-SSIM) + 0.16 * L1 weighted by the coarsest Gaussian.
_ZHAO_MIX = dict(
    structural_weight=0.84,
    mae_weight=0.16,
    dssim_form="full",
    max_val=1.0,
    mae_weighting="gaussian",
)

# The recipes, each with its source. Weights are the authors' own.
PRESETS: types.MappingProxyType[str, LossConfig] = types.MappingProxyType(
    {
        # Keras/TF loss users start from: 0.8 * (1 - tf.image.ssim) + 0.2 * MAE on [0, 1].
        "seed-naive": LossConfig(
            structural_weight=0.8, mae_weight=0.2, dssim_form="full", max_val=1.0
        ),
        # The "normalised" PyTorch variant for 8-bit data: 0.5*(1 - SSIM) + 0.5*MAE/255.
        "seed-normalized": LossConfig(
            structural_weight=0.5, mae_weight=0.5, dssim_form="full", max_val=255.0
        ),
        # Kerbl et al. 2023: (1 - lambda) * L1 + lambda * (1 - SSIM), lambda = 0.2,
        # SSIM from an 11x11 Gaussian with zero "same" padding, mean over the full map.
        "gaussian-splatting": LossConfig(
            structural_weight=0.2, mae_weight=0.8, dssim_form="full", max_val=1.0, padding="same"
        ),
        # Godard et al. 2019: per pixel 0.85 * clip((1 - SSIM)/2, 0, 1) + 0.15 * |x - y|,
        # SSIM from 3x3 box statistics with reflect padding; then the mean.
        "monodepth2": LossConfig(
            structural_weight=0.85,
            mae_weight=0.15,
            dssim_form="half",
            max_val=1.0,
            clip=True,
            per_pixel=True,
            window="uniform",
            filter_size=3,
            padding="reflect",
        ),
        # Zhao et al. 2017 as they ran it (NVlabs/PL4NN, MSSSIML1 with the paper's alpha):
        # 0.84 * (1 - MS-SSIM) + 0.16 * G_8-weighted L1, MS-SSIM at full resolution with
        # 31-tap Gaussians of sigmas 0.5 .. 8 (their 31x31 patch), luminance from sigma 8.
        "zhao-mix": LossConfig(
            structure="multi_sigma", filter_size=ZHAO_FILTER_SIZE, sigmas=ZHAO_SIGMAS, **_ZHAO_MIX
        ),
        # The same mix on the pyramid MS-SSIM of Wang et al. (5 scales, 11-tap windows,
        # images of 161 pixels or more), L1 weighted by the 5th scale's window seen at full
        # resolution (161 taps, sigma 24): what MS-SSIM+L1 ports built on pytorch_msssim or
        # tf.image.ssim_multiscale compute. Not what Zhao et al. ran.
        "ms-ssim-pyramid-mix": LossConfig(structure="ms_ssim", **_ZHAO_MIX),
        # This project's recipe study (docs/results_recipes.md): the best measured trade-off,
        # 0.2 * (1 - SSIM) + 0.8 * MAE + 1 * R, R the smooth distance of the per-channel
        # means (eps one 8-bit level) that removes the colour cast a structural term leaves.
        "dssim-mae-mean": LossConfig(
            structural_weight=0.2, mae_weight=0.8, mean_weight=1.0, dssim_form="full", max_val=1.0
        ),
    }
)
