"""The published numbers of Zhao et al., to print beside ours.

Source: H. Zhao, O. Gallo, I. Frosio, J. Kautz, "Loss Functions for Image Restoration With
Neural Networks", IEEE Transactions on Computational Imaging 3(1):47-57, January 2017,
doi:10.1109/TCI.2016.2644865. Table I (journal p. 52): the average over the test images of
each metric, per training loss, for three tasks; Table II (p. 54): denoising + demosaicking
with the loss switched part-way (l2 then l1, l1 then l2). SSIM and MS-SSIM there are the mean
of the three colour channels. Transcribed from the journal PDF (its tables are drawn, not
text); the metrics kept here are those our report computes (PSNR, SSIM, MS-SSIM, 1000 x l1),
plus 1000 x l2. The paper also lists IW-SSIM, GMSD, FSIM and FSIMc, and a BM3D column for
denoising + demosaicking.

Their setup differs from ours in every dimension that sets the numbers (see docs/results.md,
"What is the paper's, and what is reduced"): a 64-feature network (9x9, 5x5, 5x5), 700 MIT-
Adobe FiveK training images and 40 test images, a photon-shot plus Gaussian noise model,
Matlab's JPEG at quality 25, and training to convergence on a GPU. Only the differences
between losses within a task can be set beside ours, never the absolute values.
"""

from __future__ import annotations

METRICS = ("l2x1000", "psnr", "l1x1000", "ssim", "ms_ssim")

# Per task of ours: the paper's task title, and per column (our loss names; "input" is the
# degraded input: "Noisy", "Bilinear", "Original JPEG") the values in METRICS order.
TABLE_I = {
    "demosaic": (
        "Denoising + demosaicking",
        {
            "input": (1.65, 28.24, 27.36, 0.8075, 0.8965),
            "l2": (0.56, 33.18, 15.90, 0.9346, 0.9636),
            "l1": (0.43, 34.42, 13.47, 0.9535, 0.9745),
            "ssim": (0.58, 33.15, 15.90, 0.9500, 0.9721),  # SSIM5 (sigma 5), as ours
            "msssim": (0.55, 33.29, 15.99, 0.9536, 0.9741),
            "mix": (0.41, 34.61, 13.19, 0.9564, 0.9757),
        },
    ),
    "sr": (
        "Super-resolution",
        {
            "input": (2.5697, 27.16, 28.7764, 0.8632, 0.9603),
            "l2": (1.2407, 30.66, 20.4730, 0.9274, 0.9816),
            "l1": (1.1062, 31.26, 19.0643, 0.9322, 0.9826),
            "msssim": (1.3223, 30.11, 22.3968, 0.9290, 0.9817),
            "mix": (1.0990, 31.34, 18.8983, 0.9334, 0.9829),
        },
    ),
    "jpeg": (
        "JPEG de-blocking",
        {
            "input": (0.6463, 32.60, 16.5129, 0.9410, 0.9672),
            "l2": (0.6511, 32.73, 16.2633, 0.9427, 0.9692),
            "l1": (0.6027, 32.96, 16.0687, 0.9467, 0.9714),
            "msssim": (1.9262, 27.66, 33.6134, 0.9364, 0.9674),
            "mix": (0.5580, 33.25, 15.5489, 0.9501, 0.9734),
        },
    ),
}

# Table II, denoising + demosaicking, the loss switched once training had converged.
TABLE_II = {
    "l2 then l1": (0.3939, 34.76, 12.7932, 0.9544, 0.9753),
    "l1 then l2": (0.3896, 34.77, 12.8919, 0.9540, 0.9748),
}


def value(task: str, loss: str, metric: str) -> float | None:
    """The paper's Table I value, or None where it has no such task, loss or metric."""
    if task not in TABLE_I or metric not in METRICS:
        return None
    row = TABLE_I[task][1].get(loss)
    return None if row is None else row[METRICS.index(metric)]
