"""The training configuration: one documented object, validated before any work starts.

Every field of :class:`Config` carries its help text in its metadata, so the command line
(`train.py --help`) and the saved `config.json` are generated from this one definition.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TASKS = ("denoise", "sr")


class ConfigError(ValueError):
    """An invalid config value, data folder, preset or workdir: reported before any work."""


class ConfigTypeError(ConfigError, TypeError):
    """A config value of the wrong type (also a `ConfigError`, so one ``except`` catches both)."""


GROUPS = ("body", "head")
DTYPES = ("float32", "bfloat16", "float16")
LR_SCHEDULES = ("per_run", "per_phase")


def concrete_scalar(v: Any) -> Any:
    """A NumPy scalar or 0-d (NumPy or JAX) array as the Python number it holds; anything else
    (including a traced JAX value, which has no concrete value) unchanged."""
    if isinstance(v, np.generic) or (getattr(v, "shape", None) == () and hasattr(v, "dtype")):
        try:
            return np.asarray(v).item()
        except Exception:  # a tracer: left as is, refused by the type checks
            return v
    return v


# Spellings of earlier versions, accepted with a DeprecationWarning naming the new one.
RENAMED_PHASE_FIELDS = {"ssim_weight": "structural_weight"}


def _warn_renamed(old: str, new: str, where: str) -> None:
    warnings.warn(f"{where}: {old!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=4)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of the training schedule.

    Attributes:
      name: shown in the logs, the progress bar and `metrics.jsonl`.
      fraction: share of the total steps spent in this phase; the fractions of all phases sum
        to 1.
      structural_weight: weight of the structural term (the preset's ``1 - S`` or
        ``(1 - S) / 2``, S its SSIM variant); ``None`` keeps the loss preset's own weight.
      mae_weight: weight of the MAE (L1) term; ``None`` keeps the preset's weight.
      mean_weight: weight of the loss's mean term (the smooth L1 distance of the
        per-channel means, `dssim_mae_jax.LossConfig.mean_weight`); ``None`` keeps the
        preset's weight if the phase sets neither of the two weights above, and is 0 (the term
        off) if it sets either: a phase written as MAE only is MAE only.
      learning_rates: peak learning rate per parameter group (for `train.py`'s models the
        groups ``body`` and ``head``). ``None``: for `train.py`, `Config.learning_rate` for
        every group; the library's `phased_optimizer` requires it.
      frozen: parameter groups that receive zero updates during this phase.
    """

    name: str
    fraction: float
    structural_weight: float | None = None
    mae_weight: float | None = None
    mean_weight: float | None = None
    learning_rates: Mapping[str, float] | None = None
    frozen: tuple[str, ...] = ()

    def __post_init__(self):
        for f in ("fraction", "structural_weight", "mae_weight", "mean_weight"):
            object.__setattr__(self, f, concrete_scalar(getattr(self, f)))
        if isinstance(self.learning_rates, Mapping):
            rates = {k: concrete_scalar(v) for k, v in self.learning_rates.items()}
            object.__setattr__(self, "learning_rates", rates)
        if isinstance(self.frozen, list):
            object.__setattr__(self, "frozen", tuple(self.frozen))

    @property
    def ssim_weight(self) -> float | None:
        """Deprecated name of `structural_weight`."""
        _warn_renamed("ssim_weight", "structural_weight", "Phase")
        return self.structural_weight

    def replace(self, **changes) -> Phase:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fraction": self.fraction,
            "structural_weight": self.structural_weight,
            "mae_weight": self.mae_weight,
            "mean_weight": self.mean_weight,
            "learning_rates": None if self.learning_rates is None else dict(self.learning_rates),
            "frozen": list(self.frozen),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Phase:
        if not isinstance(d, Mapping):
            raise ConfigError(f"phases: each phase must be a JSON object, got {d!r}")
        kw = dict(d)
        for old, new in RENAMED_PHASE_FIELDS.items():
            if old in kw:
                _warn_renamed(old, new, "phases")
                if new in kw:
                    raise ConfigError(f"phases: give {new!r} only, not also {old!r}")
                kw[new] = kw.pop(old)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(kw) - known
        if unknown:
            raise ConfigError(
                f"phases: unknown phase field(s) {sorted(unknown)}; expected {sorted(known)}"
            )
        if "name" not in kw or "fraction" not in kw:
            raise ConfigError(f"phases: each phase needs 'name' and 'fraction', got {dict(d)!r}")
        if kw.get("learning_rates") is not None:
            if not isinstance(kw["learning_rates"], Mapping):
                raise ConfigTypeError(
                    f"phases: learning_rates must map group -> rate, got {kw['learning_rates']!r}"
                )
            kw["learning_rates"] = dict(kw["learning_rates"])
        if "frozen" in kw:
            frozen = kw["frozen"]
            if isinstance(frozen, str) or not isinstance(frozen, Sequence):
                raise ConfigTypeError(
                    f"phases: frozen must be a list of group names, got {frozen!r}"
                )
            kw["frozen"] = tuple(frozen)
        return cls(**kw)


def _phase_init_with_old_names(init):
    def __init__(self, *args, **kw):
        for old, new in RENAMED_PHASE_FIELDS.items():
            if old in kw:
                # (`dataclasses.replace(phase, ssim_weight=w)` passes both: the old one wins.)
                _warn_renamed(old, new, "Phase")
                kw[new] = kw.pop(old)
        init(self, *args, **kw)

    __init__.__doc__ = init.__doc__
    return __init__


Phase.__init__ = _phase_init_with_old_names(Phase.__init__)


#: The seed's recipe (with the "seed-naive" preset): MAE alone for 30% of the steps, then
#: 0.8 * (1 - SSIM) + 0.2 * MAE. Kept for comparison; `DEFAULT_PHASES` replaced it. The
#: seed's run: ``Config(preset="seed-naive", phases=SEED_PHASES)``.
SEED_PHASES = (
    Phase(
        name="mae",
        fraction=0.3,
        structural_weight=0.0,
        mae_weight=1.0,
        learning_rates={"body": 2e-3, "head": 2e-3},
    ),
    Phase(
        name="dssim_mae",
        fraction=0.7,
        learning_rates={"body": 5e-4, "head": 1e-3},
    ),
)

#: The default (with the "dssim-mae-mean" preset): the best measured trade-off of the recipe
#: study in docs/results_recipes.md (no recipe there gained SSIM significantly at no PSNR
#: cost): MAE alone at the high learning rate for 60% of the steps (longer than the seed's 30%:
#: worth 0.46 dB to MAE alone on the study's validation images), then 0.2 * (1 - SSIM) +
#: 0.8 * MAE + 1 * the mean term, with the seed's learning rates.
DEFAULT_PHASES = (
    Phase(
        name="mae",
        fraction=0.6,
        structural_weight=0.0,
        mae_weight=1.0,
        mean_weight=0.0,
        learning_rates={"body": 2e-3, "head": 2e-3},
    ),
    Phase(
        name="mix",
        fraction=0.4,
        learning_rates={"body": 5e-4, "head": 1e-3},
    ),
)


def _f(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
    """Every hyperparameter of `train.py`; each field is also a command-line flag."""

    # Task and model.
    task: str = _f(
        "denoise", "what to learn: 'denoise' (Gaussian noise) or 'sr' (super-resolution)"
    )
    noise_sigma: float = _f(
        25.0, "denoise: noise standard deviation in 8-bit units (/255 on [0,1])"
    )
    scale: int = _f(2, "sr: upsampling factor (2, 3 or 4); also the border cropped for Y metrics")
    features: int = _f(32, "model width: feature channels of every hidden convolution")
    depth: int = _f(6, "model depth: number of convolutions (body + head), at least 2")
    compute_dtype: str = _f(
        "float32", "dtype of the model's convolutions (parameters stay float32)"
    )
    # Data.
    data_dir: str = _f("", "folder of PNG/JPEG images (recursive); empty: scikit-image photos")
    channels: int = _f(3, "image channels the model sees: 3 (RGB; grayscale is replicated) or 1")
    num_eval_images: int = _f(2, "user folder: how many images (last in sorted order) to hold out")
    eval_crop: int = _f(256, "held-out images are center-cropped to at most this size (pixels)")
    batch_size: int = _f(16, "global batch size (split over devices)")
    patch_size: int = _f(48, "training crop size in pixels (of the clean / high-resolution image)")
    prefetch: int = _f(
        2,
        "batches placed on the devices ahead by a background thread, and prepared ahead by "
        "each input worker (0: none)",
    )
    data_workers: int = _f(
        -1,
        "input worker processes decoding and cropping images (0: in this process; -1: "
        "auto, 0 when the training images fit one pool, else half the CPUs, 1 to 8)",
    )
    pool_images: int = _f(
        16,
        "images a pool holds: batches draw from one pool of images at a time (memory: "
        "about this many decoded images)",
    )
    pool_steps: int = _f(32, "steps each pool of images serves before the next pool")
    max_image_pixels: int = _f(
        50_000_000, "images whose header claims more pixels than this are skipped"
    )
    # Loss and schedule.
    preset: str = _f(
        "dssim-mae-mean",
        "loss preset passed to dssim_mae_jax.make_loss (the seed's recipe: seed-naive)",
    )
    loss_overrides: dict = dataclasses.field(
        default_factory=dict,
        metadata={"help": "JSON object of make_loss overrides, e.g. '{\"filter_size\": 7}'"},
    )
    steps: int = _f(500, "total number of training steps (all phases)")
    phases: tuple[Phase, ...] = dataclasses.field(
        default=DEFAULT_PHASES,
        metadata={
            "help": "JSON list of phases: name, fraction, structural_weight, mae_weight, "
            "mean_weight, learning_rates, frozen"
        },
    )
    learning_rate: float = _f(
        1e-3, "peak learning rate of every parameter group in a phase that sets no learning_rates"
    )
    lr_schedule: str = _f(
        "per_phase",
        "'per_phase': warm-up and cosine decay in every phase; 'per_run': one warm-up and one "
        "decay over the whole run (a phase switch changes only the peak)",
    )
    warmup_fraction: float = _f(
        0.05, "share of each phase (or of the run, with per_run) spent warming the rate up"
    )
    final_lr_fraction: float = _f(
        0.1, "cosine decay ends at this share of the peak (of each phase, or of the run)"
    )
    schedule_steps: int = _f(
        0,
        "steps the phases and learning-rate schedule span (0: steps). A run extended with a "
        "larger --steps keeps its schedule_steps: the steps past them continue the last phase "
        "at its final learning rate",
    )
    weight_decay: float = _f(0.0, "decoupled weight decay (AdamW), scaled by the learning rate")
    grad_clip_norm: float = _f(1.0, "clip gradients to this global norm (0: no clipping)")
    max_nonfinite: int = _f(10, "stop after this many consecutive steps with non-finite loss")
    seed: int = _f(0, "seed of parameters, batches and noise (the whole run is a function of it)")
    # Bookkeeping.
    log_every: int = _f(25, "read metrics back from the device and log them every N steps")
    checkpoint_every: int = _f(200, "save a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _f(3, "how many of the latest checkpoints to keep")
    num_samples: int = _f(4, "held-out crops shown in samples.png")
    progress_bar: bool = _f(True, "show a tqdm progress bar")
    num_devices: int = _f(0, "data-parallel devices to use (0: all local devices)")
    distributed: bool = _f(False, "call jax.distributed.initialize() first (multi-host runs)")

    def __post_init__(self):
        # The JSON boundary: phases given as JSON text or dicts (the command line,
        # `config.json`) become `Phase` objects here, once; the rest of the package reads
        # `Phase` attributes only.
        phases = self.phases
        if isinstance(phases, str):
            try:
                phases = json.loads(phases)
            except json.JSONDecodeError as e:
                raise ConfigError(f"config.phases: not valid JSON ({e})") from None
        if isinstance(phases, (str, bytes)) or not isinstance(phases, Sequence):
            raise ConfigError(f"config.phases: got {phases!r}, expected a list of phase objects")
        phases = tuple(p if isinstance(p, Phase) else Phase.from_dict(p) for p in phases)
        object.__setattr__(self, "phases", phases)
        if isinstance(self.loss_overrides, Mapping):
            object.__setattr__(self, "loss_overrides", dict(self.loss_overrides))
        for f in dataclasses.fields(self):
            if f.type in ("int", "float"):
                object.__setattr__(self, f.name, concrete_scalar(getattr(self, f.name)))

    @property
    def schedule_total(self) -> int:
        """The steps the phases and schedules span: `schedule_steps`, or `steps` when 0."""
        return self.schedule_steps or self.steps

    @property
    def phase_boundaries(self) -> tuple[int, ...]:
        """First step of each phase (the first is 0), from the fractions and `schedule_total`."""
        starts, acc = [], 0.0
        for p in self.phases:
            starts.append(round(acc * self.schedule_total))
            acc += p.fraction
        return tuple(starts)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["phases"] = [p.to_dict() for p in self.phases]
        d["loss_overrides"] = dict(self.loss_overrides)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config field(s): {sorted(unknown)}")
        return cls(**d)

    def validate(self) -> Config:
        """Raises ``ValueError`` naming the first invalid field; returns ``self``."""
        _validate(self)
        return self

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, defaults: Config | None = None) -> None:
        """Adds one ``--flag`` per field (``--batch-size`` for ``batch_size``) to `parser`."""
        _add_arguments(parser, defaults or Config())

    @staticmethod
    def from_args(args: argparse.Namespace, defaults: Config | None = None) -> Config:
        """The validated config of parsed `add_arguments` flags (``None``: the default)."""
        return _from_args(args, defaults or Config())


def _require(cond: bool, field: str, got: Any, expected: str, *, error=ConfigError) -> None:
    if not cond:
        raise error(f"config.{field}: got {got!r}, expected {expected}")


# The held-out noise uses seed + 1; both must be valid int32 PRNG seeds.
SEED_MAX = 2**31 - 2


# Numbers must stay finite in float32 (the dtype they are used in on the device).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return _is_real(v) and math.isfinite(v) and abs(v) <= FLOAT32_MAX


def _validate_types(c: Config) -> None:
    """Each field has its declared type (a `TypeError`); every number is finite in float32."""
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if f.type == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
            _require(ok, f.name, v, "an integer", error=ConfigTypeError)
        elif f.type == "float":
            _require(_is_real(v), f.name, v, "a number", error=ConfigTypeError)
            _require(_is_number(v), f.name, v, "a finite number (within float32's range)")
        elif f.type in ("str", "bool"):
            _require(type(v).__name__ == f.type, f.name, v, f"a {f.type}", error=ConfigTypeError)


def _validate(c: Config) -> None:
    _validate_types(c)
    _require(0 <= c.seed <= SEED_MAX, "seed", c.seed, f"an integer in [0, {SEED_MAX}]")
    _require(c.task in TASKS, "task", c.task, f"one of {TASKS}")
    _require(c.noise_sigma >= 0, "noise_sigma", c.noise_sigma, ">= 0")
    _require(c.scale in (2, 3, 4), "scale", c.scale, "2, 3 or 4")
    _require(c.features >= 1, "features", c.features, ">= 1")
    _require(c.depth >= 2, "depth", c.depth, ">= 2 (at least one body and one head layer)")
    _require(c.compute_dtype in DTYPES, "compute_dtype", c.compute_dtype, f"one of {DTYPES}")
    _require(c.channels in (1, 3), "channels", c.channels, "1 or 3")
    _require(c.num_eval_images >= 1, "num_eval_images", c.num_eval_images, ">= 1")
    _require(c.batch_size >= 1, "batch_size", c.batch_size, ">= 1")
    _require(c.patch_size >= 8, "patch_size", c.patch_size, ">= 8")
    if c.task == "sr":
        _require(
            c.patch_size % c.scale == 0,
            "patch_size",
            c.patch_size,
            f"a multiple of scale={c.scale} for task 'sr'",
        )
    _require(c.eval_crop >= c.patch_size // 2, "eval_crop", c.eval_crop, ">= patch_size / 2")
    _require(c.prefetch >= 0, "prefetch", c.prefetch, ">= 0")
    _require(c.data_workers >= -1, "data_workers", c.data_workers, ">= 0, or -1 (auto)")
    _require(c.pool_images >= 1, "pool_images", c.pool_images, ">= 1")
    _require(c.pool_steps >= 1, "pool_steps", c.pool_steps, ">= 1")
    _require(c.max_image_pixels >= 1, "max_image_pixels", c.max_image_pixels, ">= 1")
    _require(isinstance(c.preset, str) and c.preset, "preset", c.preset, "a preset name")
    _validate_loss_overrides(c.loss_overrides)
    _require(c.steps >= 1, "steps", c.steps, ">= 1")
    _require(c.lr_schedule in LR_SCHEDULES, "lr_schedule", c.lr_schedule, f"one of {LR_SCHEDULES}")
    _require(c.learning_rate >= 0, "learning_rate", c.learning_rate, ">= 0")
    _require(
        c.schedule_steps == 0 or 1 <= c.schedule_steps <= c.steps,
        "schedule_steps",
        c.schedule_steps,
        f"0 (the same as steps) or an integer in [1, steps={c.steps}]",
    )
    _require(0 <= c.warmup_fraction < 1, "warmup_fraction", c.warmup_fraction, "in [0, 1)")
    _require(0 <= c.final_lr_fraction <= 1, "final_lr_fraction", c.final_lr_fraction, "in [0, 1]")
    _require(c.weight_decay >= 0, "weight_decay", c.weight_decay, ">= 0")
    _require(c.grad_clip_norm >= 0, "grad_clip_norm", c.grad_clip_norm, ">= 0")
    _require(c.max_nonfinite >= 1, "max_nonfinite", c.max_nonfinite, ">= 1")
    _require(c.log_every >= 1, "log_every", c.log_every, ">= 1")
    _require(c.checkpoint_every >= 1, "checkpoint_every", c.checkpoint_every, ">= 1")
    _require(c.keep_checkpoints >= 1, "keep_checkpoints", c.keep_checkpoints, ">= 1")
    _require(c.num_samples >= 0, "num_samples", c.num_samples, ">= 0")
    _require(c.num_devices >= 0, "num_devices", c.num_devices, ">= 0")
    _validate_phases(c)


# make_loss options the train step fixes: it calls the loss on a batch of [H, W, C] images,
# averages its one loss per image and logs the per-image terms. Overriding them would train
# something else.
FIXED_LOSS_OPTIONS = {"spatial_dims": 2, "return_map": False, "reduction": "none"}


def _validate_loss_overrides(overrides: Any) -> None:
    _require(
        isinstance(overrides, Mapping), "loss_overrides", overrides, "a JSON object of options"
    )
    for key, fixed in FIXED_LOSS_OPTIONS.items():
        if key in overrides:
            value = overrides[key]
            _require(
                type(value) is type(fixed) and value == fixed,
                f"loss_overrides.{key}",
                value,
                f"{fixed!r} (training needs {key}={fixed!r}: the train step computes one "
                "loss per [H, W, C] image and averages them itself); remove this override",
            )


def _require_number(v: Any, field: str, expected: str, *, ok: bool, none: bool = False) -> None:
    """A `TypeError` for a value that is not a real number (or None where `none`), else a
    `ValueError` unless `ok` (the range check)."""
    if not (none and v is None):
        _require(_is_real(v), field, v, "a number", error=ConfigTypeError)
    _require(ok, field, v, expected)


def _validate_phases(c: Config) -> None:
    phases = c.phases
    _require(len(phases) >= 1, "phases", [], "at least one phase")
    names = [p.name for p in phases]
    for i, name in enumerate(names):
        _require(
            isinstance(name, str), f"phases[{i}].name", name, "a string", error=ConfigTypeError
        )
        _require(bool(name), f"phases[{i}].name", name, "a non-empty string")
    _require(len(set(names)) == len(names), "phases", names, "distinct phase names")
    total = 0.0
    for p in phases:
        where = f"phases[{p.name!r}]"
        f = p.fraction
        _require_number(f, f"{where}.fraction", "in (0, 1]", ok=_is_number(f) and 0 < f <= 1)
        total += p.fraction
        for key in ("structural_weight", "mae_weight", "mean_weight"):
            w = getattr(p, key)
            ok = w is None or (_is_number(w) and w >= 0)
            _require_number(w, f"{where}.{key}", "null or a finite number >= 0", ok=ok, none=True)
        _require(
            p.learning_rates is None or isinstance(p.learning_rates, Mapping),
            f"{where}.learning_rates",
            p.learning_rates,
            "null or a mapping group -> rate",
            error=ConfigTypeError,
        )
        rates = {} if p.learning_rates is None else p.learning_rates
        _require(
            p.learning_rates is None or set(rates) == set(GROUPS),
            f"{where}.learning_rates",
            p.learning_rates,
            f"null (config.learning_rate for every group) or one rate for each group {GROUPS}",
        )
        for g, lr in rates.items():
            ok = _is_number(lr) and lr >= 0
            _require_number(lr, f"{where}.learning_rates[{g!r}]", "a finite number >= 0", ok=ok)
        _require(
            all(isinstance(g, str) for g in p.frozen) and set(p.frozen) <= set(GROUPS),
            f"{where}.frozen",
            list(p.frozen),
            f"groups of {GROUPS}",
        )
    _require(
        abs(total - 1.0) < 1e-6, "phases", [p.fraction for p in phases], "fractions summing to 1"
    )
    starts = c.phase_boundaries
    ends = (*starts[1:], c.schedule_total)
    for p, s, e in zip(phases, starts, ends, strict=True):
        _require(
            e > s,
            "schedule_steps" if c.schedule_steps else "steps",
            c.schedule_total,
            f"enough steps for phase {p.name!r} (fraction {p.fraction}) to get at least one",
        )


# ---------------------------------------------------------------------- command line
_FIELD_TYPES = {"float": float, "int": int, "str": str}
_JSON_FIELDS = ("phases", "loss_overrides")


def _add_arguments(parser: argparse.ArgumentParser, defaults: Config) -> None:
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f.metadata.get("help", "")
        if f.type == "bool":
            # "%(default)s" also stops Pythons whose BooleanOptionalAction appends its own.
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"{help_text} (default: %(default)s, i.e. "
                f"{flag if default else '--no-' + flag[2:]})",
            )
        elif f.name in _JSON_FIELDS:
            shown = json.dumps(defaults.to_dict()[f.name])
            parser.add_argument(
                flag,
                type=_json_arg(f.name),
                default=None,
                metavar="JSON",
                help=f"{help_text} (default: {shown})",
            )
        else:
            parser.add_argument(
                flag,
                type=_FIELD_TYPES[f.type],
                default=default,
                help=f"{help_text} (default: %(default)s)",
            )


def _json_arg(name):
    def parse(text):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(
                f"--{name.replace('_', '-')}: invalid JSON: {e}"
            ) from e

    return parse


def _from_args(args: argparse.Namespace, defaults: Config) -> Config:
    values = {}
    for f in dataclasses.fields(Config):
        v = getattr(args, f.name)
        values[f.name] = getattr(defaults, f.name) if v is None else v
    if not isinstance(values["loss_overrides"], Mapping):
        raise ConfigError(
            f"--loss-overrides: got {values['loss_overrides']!r}, expected a JSON object"
        )
    if not isinstance(values["phases"], (list, tuple)):
        raise ConfigError(
            f"--phases: got {values['phases']!r}, expected a JSON list of phase objects"
        )
    return Config(**values).validate()
