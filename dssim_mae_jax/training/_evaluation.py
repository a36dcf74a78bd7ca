"""Held-out evaluation: PSNR, SSIM, MS-SSIM, MAE (and Y-channel metrics for super-resolution)
of the model and of its input, accumulated over the held-out images with the metric states of
`dssim_mae_jax.metrics`; each image's scores by name, with its colour cast; the conventions
behind the numbers; and a cheap fixed probe of held-out PSNR for the training curves."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import dssim_mae_jax as dmj
from dssim_mae_jax._pyramid import ms_ssim_min_size
from dssim_mae_jax.metrics import MAE, MSSSIM, PSNR, SSIM

from . import _color
from ._config import Config, ConfigError
from ._data import center_crop, degrade

# The held-out metrics use `dmj.ssim` / `dmj.ms_ssim` defaults: an 11-tap Gaussian window
# ("valid": the image must be at least as large), over 5 scales for MS-SSIM.
_SSIM_MIN_SIZE = ms_ssim_min_size(11, 1)
_MS_SSIM_MIN_SIZE = ms_ssim_min_size(11, 5)
ROWS = ("input", "model")


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


def _cropped(config: Config, img: np.ndarray) -> np.ndarray:
    """The held-out crop `evaluate_dataset` scores: the centre `eval_crop` square (a multiple
    of `scale` for super-resolution)."""
    multiple = config.scale if config.task == "sr" else 1
    return center_crop(img, config.eval_crop, multiple)


def metric_states(config: Config, images: Sequence[np.ndarray], *, keep_values: int = 0) -> dict:
    """Empty states of the held-out metrics: ``{"input": {name: state}, "model": {...}}``.

    PSNR (the mean of per-image PSNR), SSIM and MAE on [0, 1] RGB, as `dmj.psnr`, `dmj.ssim`
    and `dmj.mae` with their defaults; MS-SSIM when every held-out image, as cropped, is large
    enough for its 5 scales; for super-resolution ``psnr_y`` and ``ssim_y``: the BT.601 luma
    (a grayscale image is its own) with `config.scale` pixels cropped from every side.

    Args:
      config: the run's config (task, scale, eval_crop, channels).
      images: the held-out images, float32 [H, W, C] (their sizes decide MS-SSIM).
      keep_values: capacity of each state's per-image store (0: only sums).

    Returns:
      ``{"input": {name: state}, "model": {name: state}}``, each state from
      `dssim_mae_jax.metrics`: update it with ``[1, H, W, C]`` images and read ``compute()``.

    Examples:
      >>> import numpy as np
      >>> from dssim_mae_jax import training
      >>> states = training.metric_states(training.Config(), [np.zeros((200, 300, 3))])
      >>> sorted(states["model"])
      ['mae', 'ms_ssim', 'psnr', 'ssim']
    """
    sides = [min(_cropped(config, img).shape[:2]) for img in images]
    kw = {"max_val": 1.0, "keep_values": keep_values}

    def states():
        out = {"psnr": PSNR.empty(**kw), "ssim": SSIM.empty(**kw), "mae": MAE.empty(**kw)}
        if sides and min(sides) >= _MS_SSIM_MIN_SIZE:
            out["ms_ssim"] = MSSSIM.empty(**kw)
        if config.task == "sr":
            y = {"y_channel": config.channels == 3, "crop_border": config.scale, **kw}
            out["psnr_y"] = PSNR.empty(**y)
            out["ssim_y"] = SSIM.empty(**y)
        return out

    return {which: states() for which in ROWS}


def make_evaluator(config: Config, apply_fn: Callable) -> Callable:
    """``evaluate(params, clean, key) -> {"input": images, "model": images}`` for one batch.

    ``input`` is what the model receives (the noisy image, or for super-resolution its bicubic
    upsampling — the usual baseline); ``model`` is the restoration. Both are clipped to
    [0, 1], as a saved image would be, and scored by `evaluate_dataset` with the metric states
    (which compile once per shape bucket, not once per image size); the model itself compiles
    once per image size.
    """

    def evaluate(params, clean, key):
        degraded = degrade(config, clean, key)
        restored = apply_fn(params, degraded).astype(jnp.float32)
        baseline = (
            _color.bicubic_upsample(degraded, config.scale) if config.task == "sr" else degraded
        )
        return {
            "input": jnp.clip(baseline.astype(jnp.float32), 0.0, 1.0),
            "model": jnp.clip(restored, 0.0, 1.0),
        }

    return jax.jit(evaluate)


def accumulate(states: dict, shown: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """`states` (as `metric_states` builds them) updated with each ``(input, model, clean)``
    image triple of `shown`, one image at a time (eagerly: the states bucket the sizes)."""
    for degraded, restored, clean in shown:
        target = np.asarray(clean)[None]
        for which, image in zip(ROWS, (degraded, restored), strict=True):
            row = np.asarray(image)[None]
            states[which] = {k: s.update(row, target) for k, s in states[which].items()}
    return states


def evaluate_dataset(
    config: Config, evaluate: Callable, params, images, *, seed: int
) -> tuple[dict, list]:
    """Mean metrics over held-out images (one at a time: sizes may differ) and the images.

    Each image is center-cropped to `config.eval_crop`, degraded with a key folded from `seed`
    and its index, restored by `evaluate` (from `make_evaluator`), and added to the metric
    states of `metric_states`; the means are the states' values (PSNR: the mean of per-image
    PSNR). Every process evaluates every image, so no merge across processes is needed.

    Returns:
      ``({"input": {metric: mean}, "model": {...}}, [(degraded, restored, clean), ...])``.
    """
    shown = []
    key = jax.random.PRNGKey(seed)
    for i, img in enumerate(images):
        clean = jnp.asarray(_cropped(config, img))[None]
        out = jax.device_get(evaluate(params, clean, jax.random.fold_in(key, i)))
        shown.append(
            (np.asarray(out["input"][0]), np.asarray(out["model"][0]), np.asarray(clean[0]))
        )
    if not shown:  # no held-out image: no metric (not NaN, which would read as a divergence)
        return {which: {} for which in ROWS}, shown
    states = accumulate(metric_states(config, images), shown)
    means = {w: {k: float(s.compute()) for k, s in m.items()} for w, m in states.items()}
    return means, shown


def conventions(config: Config, means: dict) -> dict:
    """How the numbers of `eval.json` were computed, for a reader comparing them with a paper.

    `means` is what `evaluate_dataset` returned (it says whether MS-SSIM was scored).
    """
    out = {
        "crop": "the centre eval_crop square of each held-out image; input and model "
        "clipped to [0, 1]; every metric is the mean over images of its per-image value",
        "max_val": 1.0,
        "psnr": "image_mean",
        "ssim": "Wang et al. (2004): 11-tap Gaussian window, sigma 1.5, k1 0.01, k2 0.03, "
        "valid positions only, mean over channels",
        "mae": "mean absolute error over pixels and channels, on [0, 1]",
    }
    if "ms_ssim" in means.get("model", {}):
        out["ms_ssim"] = "Wang et al. (2003): 5 scales, their weights, the SSIM window above"
    if config.task == "sr":
        out["y_channel"] = (
            "psnr_y and ssim_y: BT.601 luma in studio range (16..235 on 8-bit data), as MATLAB "
            "rgb2ycbcr and BasicSR test_y_channel=True"
            if config.channels == 3
            else "psnr_y and ssim_y: the grayscale channel (its own luma)"
        )
        out["crop_border"] = config.scale
    else:
        out["y_channel"] = None
        out["crop_border"] = 0
    out["matlab_downsample"] = False
    return out


def colour_cast(restored: jax.Array, clean: jax.Array) -> jax.Array:
    """Mean of ``restored - clean`` over the pixels, per channel, in 8-bit levels (0..255).

    The offset a loss leaves in each channel's mean (SSIM terms are blind to it: their
    luminance term compares means only relatively); ``[..., C]`` for images ``[..., H, W, C]``
    in [0, 1].
    """
    return 255.0 * jnp.mean(restored - clean, axis=(-3, -2))


_cast = jax.jit(colour_cast)


def score_images(
    config: Config, shown: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], names
) -> dict[str, dict]:
    """Each held-out image's metrics, by name: ``{name: {"input": {...}, "model": {...}}}``.

    `shown` is what `evaluate_dataset` returns beside the means (each image's input row,
    restoration and clean crop, as scored); the metrics are the per-image values of the same
    metric states, so they are the values the means average. Each row also has ``cast``: its
    :func:`colour_cast`, one value per channel.
    """
    names = list(names)
    if len(names) != len(shown):
        raise ValueError(f"names: expected {len(shown)} names (one per image), got {len(names)}")
    cleans = [clean for _, _, clean in shown]
    states = accumulate(metric_states(config, cleans, keep_values=len(shown)), shown)
    values = {w: {k: np.asarray(s.per_image()) for k, s in m.items()} for w, m in states.items()}
    out = {}
    for i, (name, (degraded, restored, clean)) in enumerate(zip(names, shown, strict=True)):
        casts = jax.device_get(_cast(jnp.stack([degraded, restored]), jnp.asarray(clean)[None]))
        out[name] = {
            which: {
                **{k: float(v[i]) for k, v in values[which].items()},
                "cast": [float(c) for c in casts[j]],
            }
            for j, which in enumerate(ROWS)
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
