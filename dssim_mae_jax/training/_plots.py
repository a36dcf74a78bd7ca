"""`curves.png` (loss terms, training and held-out PSNR, learning rates; phases marked) and
`samples.png` (degraded / restored / clean crops, each with its PSNR and SSIM). Matplotlib's
object API with the Agg canvas: no pyplot global state, no display needed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import dssim_mae_jax as dmj


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


# (record key, label) of each panel's lines; keys absent from the records are skipped. The
# structural term is "structural" (older runs logged it as "dssim").
_LOSS_TERMS = (
    ("mae", "MAE"),
    ("structural", "structural"),
    ("dssim", "DSSIM"),
    ("loss", "weighted loss"),
)
_QUALITY = (("psnr", "training batch"), ("heldout_psnr", "held-out crops"))


def _series(records: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r["step"], r[key]) for r in records if key in r]
    steps, values = (np.asarray(v, np.float64) for v in zip(*pairs, strict=True))
    return steps, values


def _mark_phases(ax, boundaries: Sequence[tuple[int, str]]) -> None:
    """A dashed line at each phase start, its name above the plot (clear of any legend)."""
    for start, name in boundaries:
        ax.axvline(start, color="gray", linestyle="--", linewidth=0.8)
        ax.annotate(
            name,
            (start, 1.0),
            xytext=(2, 3),
            textcoords="offset points",
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color="dimgray",
            va="bottom",
            ha="left",
            annotation_clip=False,
        )


def plot_curves(records: Sequence[dict], boundaries: Sequence[tuple[int, str]], path: str) -> None:
    """Writes :func:`curves_figure` to `path`."""
    curves_figure(records, boundaries).savefig(path)


def curves_figure(records: Sequence[dict], boundaries: Sequence[tuple[int, str]]):
    """Loss terms, PSNR (training batches and, when logged, the held-out probe) and learning
    rates against the step; dashed lines at phase starts, named above each panel."""
    fig = _figure(13, 4.0)
    axes = fig.subplots(1, 3)
    lr_keys = sorted({k for r in records for k in r if k.startswith("lr_")})
    panels = (
        ("loss terms", _LOSS_TERMS, True),
        ("PSNR (dB)", _QUALITY, False),
        ("learning rate", tuple((k, k[3:]) for k in lr_keys), False),
    )
    for ax, (title, series, logy) in zip(axes, panels, strict=True):
        for key, label in series:
            if any(key in r for r in records):
                steps, values = _series(records, key)
                style = {"marker": "o", "markersize": 3} if key == "heldout_psnr" else {}
                ax.plot(steps, values, label=label, **style)
        _mark_phases(ax, boundaries)
        if logy:
            values = [r[k] for r in records for k, _ in series if k in r]
            if values and all(np.isfinite(v) and v > 0 for v in values):
                ax.set_yscale("log")
        ax.set_title(title, pad=16)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best", framealpha=0.9)
    fig.tight_layout()
    return fig


def _crop_scores(patch: np.ndarray, clean: np.ndarray) -> str:
    p = float(dmj.psnr(patch, clean, max_val=1.0))
    if min(clean.shape[:2]) < 11:  # smaller than the SSIM window
        return f"{p:.2f} dB"
    return f"{p:.2f} dB, SSIM {float(dmj.ssim(patch, clean, max_val=1.0)):.3f}"


def plot_samples(
    triples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str,
    *,
    num: int,
    crop: int = 96,
    names: Sequence[str] = (),
) -> None:
    """Writes :func:`samples_figure` to `path`."""
    samples_figure(triples, num=num, crop=crop, names=names).savefig(path)


def samples_figure(
    triples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    num: int,
    crop: int = 96,
    names: Sequence[str] = (),
):
    """Rows of (degraded, restored, clean) crops from the held-out images, each degraded and
    restored crop labelled with its PSNR and SSIM against the clean crop, each row with the
    image's name (when `names` are given)."""
    num = max(num, 1)
    fig = _figure(7.5, 2.7 * num)
    axes = np.asarray(fig.subplots(num, 3, squeeze=False))
    rng = np.random.default_rng(0)
    for row in range(num):
        images = triples[row % len(triples)]
        h, w = images[2].shape[:2]
        c = min(crop, h, w)
        top, left = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
        patches = [np.clip(img[top : top + c, left : left + c], 0.0, 1.0) for img in images]
        name = names[row % len(triples)] if names else ""
        for col, (patch, title) in enumerate(
            zip(patches, ("degraded", "restored", "clean"), strict=True)
        ):
            ax = axes[row, col]
            if patch.shape[-1] == 1:
                ax.imshow(patch[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(patch, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            label = (
                _crop_scores(patch, patches[2])
                if col < 2
                else f"{name}, crop at x={left}, y={top}".lstrip(", ")
            )
            ax.set_xlabel(label, fontsize=8)
            if row == 0:
                ax.set_title(title)
    fig.tight_layout()
    return fig
