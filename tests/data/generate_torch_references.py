"""Regenerates tests/data/torch_references.json with PyTorch peers (not test dependencies).

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 numpy scipy scikit-image
    /tmp/torchvenv/bin/pip install kornia pytorch-msssim torchmetrics
    /tmp/torchvenv/bin/python tests/data/generate_torch_references.py

Made with Python 3.11.7, torch 2.13.0+cpu, kornia 0.9.0, torchmetrics 1.9.0,
pytorch-msssim 1.0.0, numpy 2.4.6, scipy 1.17.1, scikit-image 0.26.0 (2 CPU threads).

Every case of tests/images.py (distorted, reference), one image per call (batch 1, NCHW),
data range 1. Each value is computed twice with the same library code: on the float32
inputs (what users run: "float32") and on the same values cast to float64 ("float64"),
which separates the library's semantics from its float32 rounding.

* kornia: ``kornia.metrics.ssim(x, y, window_size=11, max_val=1.0)`` mean of the map
  (``padding="same"``: reflect padding, full map; eps=1e-12 in the denominator), and
  the same with ``padding="valid"`` (the map cropped by 5 on every side).
* torchmetrics: ``structural_similarity_index_measure(x, y, data_range=1.0)`` and the
  ``StructuralSimilarityIndexMeasure(data_range=1.0)`` module (defaults: Gaussian kernel,
  sigma 1.5 -> 11 taps, k1=0.01, k2=0.03). In 1.9.0 ``_ssim_update`` reflect-pads by 5
  (``F.pad(mode="reflect")``), convolves, clamps the variances at 0 and averages the FULL
  map (no border crop; only the contrast-sensitivity term used by its MS-SSIM is cropped).
* pytorch_msssim: ``ssim(x, y, data_range=1.0)`` (11-tap Gaussian, sigma 1.5, valid
  convolutions, population statistics) and ``ms_ssim(x, y, data_range=1.0)``. Its MS-SSIM
  downsamples with ``avg_pool2d(kernel_size=2, padding=s % 2)`` (zero padding on both
  sides, counted in the average) where TF repeats the last row/column: it agrees with TF
  only when every pooled size is even ("ms_ssim_tf_compatible" marks those cases).
* monodepth2: the ``SSIM`` module of nianticlabs/monodepth2 (layers.py), re-typed below:
  ReflectionPad2d(1), 3x3 AvgPool2d(stride 1) statistics, C1=0.01**2, C2=0.03**2, per
  pixel ``clamp((1 - SSIM) / 2, 0, 1)``; "dssim" is its mean and "loss" the mean of
  ``0.85 * ssim_loss.mean(1) + 0.15 * |x - y|.mean(1)`` (trainer.compute_reprojection_loss).
* gaussian_splatting: ``ssim`` of graphdeco-inria/gaussian-splatting (utils/loss_utils.py),
  re-typed below: ``F.conv2d(padding=5, groups=C)`` with the 11x11 Gaussian (sigma 1.5),
  i.e. zero padding, mean of the full map; "loss" is train.py's
  ``(1 - 0.2) * l1_loss + 0.2 * (1 - ssim)``.

"input_sums" holds float64 sums of each case's float32 inputs so the test can check that
its scikit-image photographs are the ones used here.
"""

import json
import pathlib
import platform
import sys
from math import exp

import kornia
import numpy as np
import pytorch_msssim
import scipy
import skimage
import torch
import torch.nn.functional as F
import torchmetrics
from torchmetrics.functional.image import structural_similarity_index_measure

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import images

torch.set_num_threads(2)


# --- monodepth2 (nianticlabs/monodepth2, layers.py `SSIM`, trainer.py) ---------------------
class Monodepth2SSIM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mu_x_pool = torch.nn.AvgPool2d(3, 1)
        self.mu_y_pool = torch.nn.AvgPool2d(3, 1)
        self.sig_x_pool = torch.nn.AvgPool2d(3, 1)
        self.sig_y_pool = torch.nn.AvgPool2d(3, 1)
        self.sig_xy_pool = torch.nn.AvgPool2d(3, 1)
        self.refl = torch.nn.ReflectionPad2d(1)
        self.C1 = 0.01**2
        self.C2 = 0.03**2

    def forward(self, x, y):
        x = self.refl(x)
        y = self.refl(y)
        mu_x = self.mu_x_pool(x)
        mu_y = self.mu_y_pool(y)
        sigma_x = self.sig_x_pool(x**2) - mu_x**2
        sigma_y = self.sig_y_pool(y**2) - mu_y**2
        sigma_xy = self.sig_xy_pool(x * y) - mu_x * mu_y
        SSIM_n = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
        SSIM_d = (mu_x**2 + mu_y**2 + self.C1) * (sigma_x + sigma_y + self.C2)
        return torch.clamp((1 - SSIM_n / SSIM_d) / 2, 0, 1)


def monodepth2(pred, target):
    ssim_loss = Monodepth2SSIM()(pred, target).mean(1, True)
    l1_loss = torch.abs(target - pred).mean(1, True)
    reprojection_loss = 0.85 * ssim_loss + 0.15 * l1_loss
    return {"dssim": float(ssim_loss.mean()), "loss": float(reprojection_loss.mean())}


# --- 3D Gaussian Splatting (graphdeco-inria/gaussian-splatting, utils/loss_utils.py) --------
def gs_gaussian(window_size, sigma, dtype):
    gauss = torch.tensor(
        [exp(-((x - window_size // 2) ** 2) / float(2 * sigma**2)) for x in range(window_size)],
        dtype=dtype,
    )
    return gauss / gauss.sum()


def gs_create_window(window_size, channel, dtype):
    _1D_window = gs_gaussian(window_size, 1.5, dtype).unsqueeze(1)
    _2D_window = _1D_window.mm(_1D_window.t()).unsqueeze(0).unsqueeze(0)
    return _2D_window.expand(channel, 1, window_size, window_size).contiguous()


def gs_ssim(img1, img2, window_size=11):
    channel = img1.size(-3)
    window = gs_create_window(window_size, channel, img1.dtype)
    mu1 = F.conv2d(img1, window, padding=window_size // 2, groups=channel)
    mu2 = F.conv2d(img2, window, padding=window_size // 2, groups=channel)
    mu1_sq = mu1.pow(2)
    mu2_sq = mu2.pow(2)
    mu1_mu2 = mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, padding=window_size // 2, groups=channel) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, padding=window_size // 2, groups=channel) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, padding=window_size // 2, groups=channel) - mu1_mu2
    C1 = 0.01**2
    C2 = 0.03**2
    ssim_map = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / (
        (mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2)
    )
    return ssim_map.mean()


def gaussian_splatting(image, gt_image, lambda_dssim=0.2):
    ssim_value = gs_ssim(image, gt_image)
    Ll1 = torch.abs(image - gt_image).mean()
    loss = (1.0 - lambda_dssim) * Ll1 + lambda_dssim * (1.0 - ssim_value)
    return {"ssim": float(ssim_value), "loss": float(loss)}


# --- the libraries ----------------------------------------------------------------------
def ms_ssim_tf_compatible(h, w, levels=5):
    """True when every size pytorch_msssim pools is even (then it pools as TF does)."""
    for _ in range(levels - 1):
        if h % 2 or w % 2:
            return False
        h, w = h // 2, w // 2
    return True


def peers(x, y):
    """All peer values for one image pair (NCHW tensors of one dtype)."""
    tm_module = torchmetrics.image.StructuralSimilarityIndexMeasure(data_range=1.0).to(x.dtype)
    return {
        "kornia": {
            "ssim_same": float(kornia.metrics.ssim(x, y, 11, max_val=1.0).mean()),
            "ssim_valid": float(kornia.metrics.ssim(x, y, 11, max_val=1.0, padding="valid").mean()),
        },
        "torchmetrics": {
            "ssim_functional": float(structural_similarity_index_measure(x, y, data_range=1.0)),
            "ssim_module": float(tm_module(x, y)),
        },
        "pytorch_msssim": {
            "ssim": float(pytorch_msssim.ssim(x, y, data_range=1.0)),
            "ms_ssim": float(pytorch_msssim.ms_ssim(x, y, data_range=1.0)),
        },
        "monodepth2": monodepth2(x, y),
        "gaussian_splatting": gaussian_splatting(x, y),
    }


out = {
    "versions": {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "kornia": kornia.__version__,
        "torchmetrics": torchmetrics.__version__,
        "pytorch_msssim": "1.0.0",  # the package has no __version__; from `pip show`
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
    },
    "settings": (
        "data range 1 (max_val/data_range=1.0), one image per call, float32 inputs in [0, 1]; "
        "'float32' runs the library on them, 'float64' on the same values cast to float64. "
        "See the docstring of generate_torch_references.py for each library's call."
    ),
    "cases": {},
}
with torch.no_grad():
    for name, distorted, reference in images.cases():
        d32 = distorted.astype(np.float32)
        r32 = reference.astype(np.float32)
        h, w = d32.shape[:2]
        case = {
            "shape": list(d32.shape),
            "input_sums": [float(d32.sum(dtype=np.float64)), float(r32.sum(dtype=np.float64))],
            "ms_ssim_tf_compatible": ms_ssim_tf_compatible(h, w),
        }
        for dtype in (torch.float32, torch.float64):
            x = torch.from_numpy(d32).permute(2, 0, 1)[None].to(dtype).contiguous()
            y = torch.from_numpy(r32).permute(2, 0, 1)[None].to(dtype).contiguous()
            case[str(dtype).removeprefix("torch.")] = peers(x, y)
            tm = case[str(dtype).removeprefix("torch.")]["torchmetrics"]
            assert abs(tm["ssim_functional"] - tm["ssim_module"]) < 1e-6, name
        out["cases"][name] = case
path = pathlib.Path(__file__).with_name("torch_references.json")
path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"wrote {len(out['cases'])} cases to {path}")
