"""Held-out evaluation: PSNR, SSIM, MS-SSIM, MAE (and Y-channel metrics for super-resolution)
of the model and of its input, one image at a time; each image's scores by name, with its
colour cast; and a cheap fixed probe of held-out PSNR for the training curves."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import dssim_mae_jax as dmj
from dssim_mae_jax._pyramid import ms_ssim_min_size

from . import _color
from ._config import Config, ConfigError
from ._data import center_crop, degrade

# The held-out metrics use `dmj.ssim` / `dmj.ms_ssim` defaults: an 11-tap Gaussian window
# ("valid": the image must be at least as large), over 5 scales for MS-SSIM.
_SSIM_MIN_SIZE = ms_ssim_min_size(11, 1)
_MS_SSIM_MIN_SIZE = ms_ssim_min_size(11, 5)


def _scored_side(config: Config, side: int) -> int:
    """Pixels left of an image side of `side` once cropped as `evaluate_dataset` crops it,
    and for super-resolution without the `scale` border of the Y metrics."""
    multiple = config.scale if config.task == "sr" else 1
    cropped = min(side, config.eval_crop) // multiple * multiple
    return cropped - 2 * config.scale if config.task == "sr" else cropped


def check_eval_crop(
    config: Config, images: Sequence[np.ndarray] = (), names: Sequence[str] = ()
) -> None:
    """Raises `ConfigError` unless the SSIM window fits every held-out image as evaluated.

    With no `images`, checks `config.eval_crop` itself (an image at least that large); with
    the held-out `images` (and their `names`), checks each one. MS-SSIM is reported only for
    images large enough for it, so only the single-scale window is required.
    """
    need = _SSIM_MIN_SIZE
    if _scored_side(config, config.eval_crop) < need:
        border = (
            f", less the {config.scale}-pixel border of each side," if config.task == "sr" else ""
        )
        raise ConfigError(
            f"config.eval_crop: got {config.eval_crop}, but the held-out crop{border} must "
            f"leave at least {need} pixels a side for the SSIM window (filter_size 11)"
        )
    for img, name in zip(images, names, strict=True):
        h, w = img.shape[:2]
        if min(_scored_side(config, h), _scored_side(config, w)) < need:
            raise ConfigError(
                f"held-out image {name!r} ({w}x{h}) is too small to evaluate: the SSIM window "
                f"needs {need} pixels a side after cropping; hold out larger images"
            )


def image_metrics(restored: jax.Array, clean: jax.Array) -> dict[str, jax.Array]:
    """PSNR, SSIM, MS-SSIM (when the images are large enough) and MAE per image, on [0, 1]."""
    out = {
        "psnr": dmj.psnr(restored, clean, max_val=1.0),
        "ssim": dmj.ssim(restored, clean, max_val=1.0),
        "mae": dmj.mae(restored, clean, max_val=1.0),
    }
    if min(clean.shape[-3:-1]) >= _MS_SSIM_MIN_SIZE:
        out["ms_ssim"] = dmj.ms_ssim(restored, clean, max_val=1.0)
    return out


def y_metrics(restored: jax.Array, clean: jax.Array, border: int) -> dict[str, jax.Array]:
    """PSNR and SSIM on the BT.601 luminance with `border` pixels cropped (SR convention)."""
    ry = _color.crop_border(_color.rgb_to_y(restored), border)
    cy = _color.crop_border(_color.rgb_to_y(clean), border)
    return {"psnr_y": dmj.psnr(ry, cy, max_val=1.0), "ssim_y": dmj.ssim(ry, cy, max_val=1.0)}


def make_evaluator(config: Config, apply_fn: Callable) -> Callable:
    """``evaluate(params, clean, key) -> (metrics, images)`` for one batch of clean images.

    ``metrics`` is ``{"input": {...}, "model": {...}}``: ``input`` scores what the model
    receives (the noisy image, or for super-resolution its bicubic upsampling — the usual
    baseline); ``model`` scores the restoration. Both are clipped to [0, 1] first, as a saved
    image would be. ``images`` holds those two rows.
    """

    def evaluate(params, clean, key):
        degraded = degrade(config, clean, key)
        restored = apply_fn(params, degraded).astype(jnp.float32)
        baseline = (
            _color.bicubic_upsample(degraded, config.scale) if config.task == "sr" else degraded
        )
        # Score both rows in one call (a leading axis of 2): the metrics are traced once.
        both = jnp.clip(jnp.stack([baseline, restored]), 0.0, 1.0)
        target = jnp.broadcast_to(clean, both.shape)
        m = image_metrics(both, target)
        if config.task == "sr":
            m.update(y_metrics(both, target, config.scale))
        out = {name: {k: v[i] for k, v in m.items()} for i, name in enumerate(("input", "model"))}
        return out, {"input": both[0], "model": both[1]}

    return jax.jit(evaluate)


def evaluate_dataset(
    config: Config, evaluate: Callable, params, images, *, seed: int
) -> tuple[dict, list]:
    """Mean metrics over held-out images (one at a time: sizes may differ) and the images.

    Returns:
      ``({"input": {metric: mean}, "model": {...}}, [(degraded, restored, clean), ...])``.
    """
    multiple = config.scale if config.task == "sr" else 1
    per_image: dict[str, dict[str, list[float]]] = {"input": {}, "model": {}}
    shown = []
    key = jax.random.PRNGKey(seed)
    for i, img in enumerate(images):
        clean = jnp.asarray(center_crop(img, config.eval_crop, multiple))[None]
        metrics, out = evaluate(params, clean, jax.random.fold_in(key, i))
        metrics = jax.device_get(metrics)
        for which, m in metrics.items():
            for k, v in m.items():
                per_image[which].setdefault(k, []).append(float(np.asarray(v)[0]))
        shown.append(
            (np.asarray(out["input"][0]), np.asarray(out["model"][0]), np.asarray(clean[0]))
        )
    means = {
        which: {k: float(np.mean(v)) for k, v in m.items() if len(v) == len(images)}
        for which, m in per_image.items()
    }
    return means, shown


def colour_cast(restored: jax.Array, clean: jax.Array) -> jax.Array:
    """Mean of ``restored - clean`` over the pixels, per channel, in 8-bit levels (0..255).

    The offset a loss leaves in each channel's mean (SSIM terms are blind to it: their
    luminance term compares means only relatively); ``[..., C]`` for images ``[..., H, W, C]``
    in [0, 1].
    """
    return 255.0 * jnp.mean(restored - clean, axis=(-3, -2))


@functools.partial(jax.jit, static_argnames="border")
def _score(images: jax.Array, clean: jax.Array, border: int) -> dict[str, jax.Array]:
    out = image_metrics(images, clean)
    if border:
        out.update(y_metrics(images, clean, border))
    out["cast"] = colour_cast(images, clean)
    return out


def score_images(
    config: Config, shown: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], names
) -> dict[str, dict]:
    """Each held-out image's metrics, by name: ``{name: {"input": {...}, "model": {...}}}``.

    `shown` is what `evaluate_dataset` returns beside the means (each image's input row,
    restoration and clean crop, as scored), so the metrics are those the means average.
    Each row also has ``cast``: its :func:`colour_cast`, one value per channel.
    """
    border = config.scale if config.task == "sr" else 0
    out = {}
    for name, (degraded, restored, clean) in zip(names, shown, strict=True):
        both = jnp.stack([jnp.asarray(degraded), jnp.asarray(restored)])
        m = jax.device_get(_score(both, jnp.broadcast_to(jnp.asarray(clean), both.shape), border))
        out[name] = {
            which: {
                k: [float(c) for c in v[i]] if k == "cast" else float(v[i]) for k, v in m.items()
            }
            for i, which in enumerate(("input", "model"))
        }
    return out


def format_images(per_image: dict[str, dict]) -> str:
    """A line per held-out image: PSNR, SSIM and MAE of the model (of its input in brackets)
    and the model's colour cast per channel, in levels."""
    lines = []
    width = max((len(n) for n in per_image), default=0)
    for name, rows in per_image.items():
        model, given = rows["model"], rows["input"]
        cast = " ".join(f"{c:+.2f}" for c in model["cast"])
        lines.append(
            f"  {name:<{width}}  PSNR {model['psnr']:6.2f} dB ({given['psnr']:6.2f})  "
            f"SSIM {model['ssim']:.4f} ({given['ssim']:.4f})  "
            f"MAE {255 * model['mae']:5.2f} levels ({255 * given['mae']:5.2f})  "
            f"cast [{cast}] levels"
        )
    return "\n".join(lines)


def make_probe(
    config: Config,
    apply_fn: Callable,
    images: Sequence[np.ndarray],
    *,
    seed: int,
    crop: int = 64,
    count: int = 4,
) -> Callable:
    """``probe(params) -> {"heldout_psnr": dB}``: a cheap held-out PSNR for the curves.

    A fixed set of `count` crops (the centre `crop`-pixel squares of the first held-out
    images, cycled if there are fewer) with fixed degradations (from `seed`), scored in one
    jitted call: a few milliseconds, so it can run at every logged step. Its value is the
    mean PSNR of the clipped restorations, which follows, but is not, the full held-out
    evaluation's.

    Args:
      config: the run's config (task, degradation).
      apply_fn: ``apply_fn(params, images) -> restored``.
      images: the held-out images, float32 [H, W, C] in [0, 1].
      seed: seed of the fixed degradations.
      crop: side of each crop (smaller images are used whole, cropped to a common size).
      count: number of crops.

    Returns:
      The probe (which returns ``{}`` when there is no held-out image).
    """
    if not images:
        return lambda params: {}
    multiple = config.scale if config.task == "sr" else 1
    side = min(crop, *(min(im.shape[:2]) for im in images)) // multiple * multiple
    clean = np.stack([center_crop(images[i % len(images)], side, multiple) for i in range(count)])
    degraded = degrade(config, jnp.asarray(clean), jax.random.PRNGKey(seed))

    @jax.jit
    def probe(params, degraded, clean):
        restored = jnp.clip(apply_fn(params, degraded).astype(jnp.float32), 0.0, 1.0)
        return jnp.mean(dmj.psnr(restored, clean, max_val=1.0))

    clean = jnp.asarray(clean)
    return lambda params: {"heldout_psnr": float(probe(jax.device_get(params), degraded, clean))}
