"""Images, degradations and training patches for the Zhao et al. reproduction.

Every degradation is a pure function of the clean image and a seed, so every loss of a seed
sees exactly the same data and noise.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np

# Colour photographs bundled with scikit-image (no download). `cat` is `chelsea` again and the
# right view of `stereo_motorcycle` shows the same scene as the left one: both unused.
BUNDLED_EVAL = ("chelsea", "coffee", "motorcycle", "camera", "clock")
BUNDLED_TRAIN = (
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "moon",
    "coins",
    "brick",
    "gravel",
    "grass",
    "cell",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
TASKS = ("denoise", "sr", "jpeg", "demosaic")
NOISE_SIGMA = 25 / 255  # Gaussian denoising and the noise of joint denoising+demosaicking
DEMOSAIC_SIGMA = 10 / 255
SR_SCALE = 2
JPEG_QUALITY = 20


@dataclasses.dataclass(frozen=True)
class Split:
    """Clean training and held-out images, float32 [H, W, 3] in [0, 1]."""

    train: tuple[np.ndarray, ...]
    eval: tuple[np.ndarray, ...]
    train_names: tuple[str, ...]
    eval_names: tuple[str, ...]


def to_rgb(img) -> np.ndarray:
    """uint8/uint16/bool/float [H, W(, C)] -> float32 [H, W, 3] in [0, 1]."""
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.float32)
    elif np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float32) / float(np.iinfo(img.dtype).max)
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    img = img[..., :3] if img.shape[-1] >= 3 else img[..., :1]
    return np.ascontiguousarray(np.broadcast_to(img, (*img.shape[:2], 3)))


def _bundled(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def _load_file(path: str) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def load_split(data_dir: str | None = None, *, num_eval: int | None = None) -> Split:
    """The bundled photographs, or a folder's PNG/JPEG files split into train and held-out.

    A folder's files are sorted by path; the last ``num_eval`` (default: a quarter, at least
    one) are held out.

    Raises:
      ValueError: if the folder is missing or holds fewer than two usable images.
    """
    if not data_dir:
        train = tuple(to_rgb(_bundled(n)) for n in BUNDLED_TRAIN)
        ev = tuple(to_rgb(_bundled(n)) for n in BUNDLED_EVAL)
        return Split(train, ev, BUNDLED_TRAIN, BUNDLED_EVAL)
    if not os.path.isdir(data_dir):
        raise ValueError(f"--data-dir: {data_dir!r} is not a directory")
    paths = sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(data_dir)
        for f in files
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    images = [(p, to_rgb(_load_file(p))) for p in paths]
    images = [(p, im) for p, im in images if min(im.shape[:2]) >= 64]
    if len(images) < 2:
        raise ValueError(f"--data-dir: need at least 2 images of 64x64 or more in {data_dir!r}")
    k = num_eval or max(1, len(images) // 4)
    k = min(k, len(images) - 1)
    names = [os.path.relpath(p, data_dir) for p, _ in images]
    return Split(
        tuple(im for _, im in images[:-k]),
        tuple(im for _, im in images[-k:]),
        tuple(names[:-k]),
        tuple(names[-k:]),
    )


def _even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % 2, : w - w % 2]


def prepare(img: np.ndarray, task: str) -> np.ndarray:
    """The clean target for `task` (even sizes for SR and the Bayer mosaic)."""
    return _even(img) if task in ("sr", "demosaic") else img


def _pil(img: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))


def bicubic_x2(img: np.ndarray) -> np.ndarray:
    """Downscale by `SR_SCALE` then upscale back, both bicubic (Pillow): the SR input."""
    from PIL import Image

    h, w = img.shape[:2]
    small = _pil(img).resize((w // SR_SCALE, h // SR_SCALE), Image.Resampling.BICUBIC)
    up = small.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(up, np.float32) / 255


def jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode and decode with Pillow's JPEG at `quality` (4:2:0 chroma subsampling)."""
    from PIL import Image

    buf = io.BytesIO()
    _pil(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), np.float32) / 255


def bayer_mask(h: int, w: int) -> np.ndarray:
    """RGGB Bayer colour-filter mask [h, w, 3] of 0/1."""
    m = np.zeros((h, w, 3), np.float32)
    m[0::2, 0::2, 0] = 1
    m[0::2, 1::2, 1] = 1
    m[1::2, 0::2, 1] = 1
    m[1::2, 1::2, 2] = 1
    return m


def degrade(img: np.ndarray, task: str, rng: np.random.Generator) -> np.ndarray:
    """The network input for the clean `img` (noise drawn from `rng`)."""
    if task == "denoise":
        return img + rng.normal(0, NOISE_SIGMA, img.shape).astype(np.float32)
    if task == "sr":
        return bicubic_x2(img)
    if task == "jpeg":
        return jpeg(img)
    if task == "demosaic":
        noisy = img + rng.normal(0, DEMOSAIC_SIGMA, img.shape).astype(np.float32)
        return noisy * bayer_mask(*img.shape[:2])
    raise ValueError(f"task: got {task!r}, expected one of {TASKS}")


class PatchSampler:
    """Deterministic (input, target) patch batches: a pure function of ``(seed, step)``.

    Deterministic degradations (SR, JPEG) are applied once to the whole training image, as a
    camera or codec would; noise is drawn per patch. The same seed gives every loss the same
    patches and the same noise.
    """

    def __init__(self, images, task: str, *, patch: int, batch: int, seed: int):
        self.task, self.patch, self.batch, self.seed = task, patch, batch, seed
        self.targets = [prepare(im, task) for im in images]
        if task in ("sr", "jpeg"):
            rng = np.random.default_rng(0)
            self.inputs = [degrade(t, task, rng) for t in self.targets]
        else:
            self.inputs = self.targets
        areas = np.asarray([t.shape[0] * t.shape[1] for t in self.targets], np.float64)
        self.probs = areas / areas.sum()

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, step))
        p = self.patch
        xs, ys = [], []
        for i in rng.choice(len(self.targets), size=self.batch, p=self.probs):
            t = self.targets[i]
            # Even offsets keep the Bayer phase (RGGB) the same in every patch.
            r = 2 * rng.integers(0, (t.shape[0] - p) // 2 + 1)
            c = 2 * rng.integers(0, (t.shape[1] - p) // 2 + 1)
            y = t[r : r + p, c : c + p]
            if self.task in ("denoise", "demosaic"):
                x = degrade(y, self.task, rng)
            else:
                x = self.inputs[i][r : r + p, c : c + p]
            xs.append(x)
            ys.append(y)
        return np.stack(xs), np.stack(ys)


def eval_pairs(images, task: str, *, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, target) full held-out images; noise from ``seed`` (shared by every loss)."""
    rng = np.random.default_rng((seed, 10**6))
    out = []
    for im in images:
        t = prepare(im, task)
        out.append((degrade(t, task, rng), t))
    return out
