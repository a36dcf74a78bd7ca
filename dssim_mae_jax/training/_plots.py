"""`curves.png` (both loss terms, phase boundaries marked) and `samples.png` (degraded /
restored / clean crops). Matplotlib's object API with the Agg canvas: no pyplot global state,
no display needed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(records: Sequence[dict], boundaries: Sequence[tuple[int, str]], path: str) -> None:
    """Loss terms, quality and learning rates against the step; dashed lines at phase starts."""
    fig = _figure(12, 3.6)
    axes = fig.subplots(1, 3)
    steps = np.asarray([r["step"] for r in records])
    panels = (
        ("loss terms", (("mae", "MAE"), ("dssim", "DSSIM"), ("loss", "weighted loss")), True),
        ("training-batch quality", (("psnr", "PSNR (dB)"),), False),
        ("learning rate", (("lr_body", "body"), ("lr_head", "head")), False),
    )
    for ax, (title, series, logy) in zip(axes, panels, strict=True):
        for key, label in series:
            if records and key in records[0]:
                ax.plot(steps, [r[key] for r in records], label=label)
        for start, name in boundaries:
            ax.axvline(start, color="gray", linestyle="--", linewidth=0.8)
            ax.annotate(
                name,
                (start, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color="gray",
                rotation=90,
                va="top",
                ha="right",
            )
        if logy:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8, loc="upper left" if title.startswith("training") else "best")
    if records and "ssim" in records[0]:
        twin = axes[1].twinx()
        twin.plot(steps, [r["ssim"] for r in records], color="tab:orange", label="SSIM")
        twin.set_ylabel("SSIM")
        twin.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def plot_samples(
    triples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str,
    *,
    num: int,
    crop: int = 96,
) -> None:
    """Rows of (degraded, restored, clean) crops from the held-out images."""
    num = max(num, 1)
    fig = _figure(7.5, 2.5 * num)
    axes = np.asarray(fig.subplots(num, 3, squeeze=False))
    rng = np.random.default_rng(0)
    for row in range(num):
        images = triples[row % len(triples)]
        h, w = images[2].shape[:2]
        c = min(crop, h, w)
        top, left = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
        for col, (img, title) in enumerate(
            zip(images, ("degraded", "restored", "clean"), strict=True)
        ):
            patch = np.clip(img[top : top + c, left : left + c], 0.0, 1.0)
            ax = axes[row, col]
            if patch.shape[-1] == 1:
                ax.imshow(patch[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(patch, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
