"""curves.png and samples.png: readable phase markers, the held-out curve, labelled crops."""

import numpy as np
import pytest

import dssim_mae_jax as dmj
from dssim_mae_jax.training import _plots


def _records():
    out = []
    for step in range(10, 210, 10):
        phase = "mae" if step <= 60 else "dssim_mae"
        out.append({
            "step": step, "phase": phase, "loss": 1 / step, "mae": 1 / step,
            "structural": 2 / step, "psnr": 20 + step / 50, "heldout_psnr": 21 + step / 60,
            "lr_body": 1e-3, "lr_head": 2e-3,
        })  # fmt: skip
    return out


def _overlap(a, b):
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def test_curves_have_the_held_out_line_and_phase_names_clear_of_legends(tmp_path):
    fig = _plots.curves_figure(_records(), [(0, "mae"), (60, "dssim_mae")])
    renderer = fig.canvas.get_renderer()
    psnr_axes = fig.axes[1]
    labels = [line.get_label() for line in psnr_axes.get_lines() if line.get_label()[0] != "_"]
    assert labels == ["training batch", "held-out crops"]
    for ax in fig.axes[:3]:
        names = [t for t in ax.texts if t.get_text() in ("mae", "dssim_mae")]
        assert len(names) == 2
        legend = ax.get_legend().get_window_extent(renderer)
        panel = ax.get_window_extent(renderer)
        title = ax.title.get_window_extent(renderer)
        for t in names:
            box = t.get_window_extent(renderer)
            assert box.y0 >= panel.y1 - 1  # above the plotting area
            assert not _overlap(box, legend) and not _overlap(box, title), t.get_text()
    _plots.plot_curves(_records(), [(0, "mae"), (60, "dssim_mae")], str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_curves_of_non_positive_or_nan_losses_use_a_linear_axis(tmp_path):
    records = _records()
    records[3]["loss"] = float("nan")
    fig = _plots.curves_figure(records, [(0, "mae")])
    assert fig.axes[0].get_yscale() == "linear"
    assert _plots.curves_figure(_records(), [(0, "mae")]).axes[0].get_yscale() == "log"


def test_each_sample_crop_is_labelled_with_its_psnr_and_ssim():
    rng = np.random.default_rng(0)
    clean = rng.random((100, 120, 3)).astype(np.float32)
    degraded = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    restored = (0.5 * clean + 0.5 * degraded).astype(np.float32)
    fig = _plots.samples_figure([(degraded, restored, clean)], num=2, crop=48, names=["cat.png"])
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert len(labels) == 6 and all(lab.startswith("cat.png, crop at") for lab in labels[2::3])
    # The label of the first degraded crop is its PSNR / SSIM against the clean crop.
    rng = np.random.default_rng(0)
    top, left = rng.integers(0, 100 - 48 + 1), rng.integers(0, 120 - 48 + 1)
    crop = np.s_[top : top + 48, left : left + 48]
    p = float(dmj.psnr(degraded[crop], clean[crop], max_val=1.0))
    s = float(dmj.ssim(degraded[crop], clean[crop], max_val=1.0))
    assert labels[0] == f"{p:.2f} dB, SSIM {s:.3f}"
    assert labels[2] == f"cat.png, crop at x={left}, y={top}"
    psnr_restored = float(labels[1].split(" dB")[0])
    assert psnr_restored > p  # the restored crop is closer to the clean one
    assert psnr_restored == pytest.approx(
        float(dmj.psnr(restored[crop], clean[crop], max_val=1.0)), abs=0.005
    )
