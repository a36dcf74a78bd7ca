"""Our SSIM variants and recipes against frozen values of the PyTorch peers.

tests/data/torch_references.json was written by tests/data/generate_torch_references.py
(torch 2.13.0+cpu, kornia 0.9.0, torchmetrics 1.9.0, pytorch-msssim 1.0.0; the docstring
there has the exact calls), so torch is not a test dependency. Every peer ran on the float32
photograph cases of tests/images.py with data range 1, once on the float32 inputs ("float32",
what users run) and once on the same values in float64 ("float64", the library's semantics
without its float32 rounding). Ours always runs in float32, jitted once per image shape.

All comparisons are one test: the 4 compilations (~11 s on 2 CPU cores) then run once,
not once per pytest-xdist worker.
"""

import json
import pathlib

import jax
import numpy as np

from dssim_mae_jax import dssim, make_loss, ms_ssim, ssim

REFERENCES = json.loads(
    (pathlib.Path(__file__).parent / "data" / "torch_references.json").read_text()
)

_MONODEPTH2 = make_loss("monodepth2")
_GAUSSIAN_SPLATTING = make_loss("gaussian-splatting")


@jax.jit
def _ours(x, y):
    """Every value compared below, from one compilation per image shape."""
    return {
        "valid": ssim(x, y, max_val=1.0),
        "reflect": ssim(x, y, max_val=1.0, padding="reflect"),
        "same": ssim(x, y, max_val=1.0, padding="same"),
        "box3_reflect_dssim": dssim(
            x, y, max_val=1.0, window="uniform", filter_size=3, padding="reflect"
        ),
        "monodepth2_loss": _MONODEPTH2(x, y)[0],
        "gaussian_splatting_loss": _GAUSSIAN_SPLATTING(x, y)[0],
        "ms_ssim": ms_ssim(x, y, max_val=1.0),
    }


def _our_values(photo_cases):
    """{case name: {our key: float}}, the 7 distortions of each photograph in one batch."""
    by_photo = {}
    for name, distorted, clean in photo_cases:
        by_photo.setdefault(name.split("-")[0], []).append((name, distorted, clean))
    out = {}
    for cases in by_photo.values():
        x = np.stack([d for _, d, _ in cases]).astype(np.float32)
        y = np.stack([c for _, _, c in cases]).astype(np.float32)
        values = jax.tree.map(np.asarray, _ours(x, y))
        for i, (name, _, _) in enumerate(cases):
            out[name] = {key: float(v[i]) for key, v in values.items()}
    return out


ALL = tuple(REFERENCES["cases"])
# pytorch_msssim's MS-SSIM zero-pads odd sizes on BOTH sides before each 2x2 pooling and
# averages the zeros in (avg_pool2d(padding=s % 2)); TF and we repeat the last row/column.
# It equals ours only where every pooled size is even: astronaut 192x192, camera 256x256.
# On coffee (50x55 and 25x28 get pooled) and chelsea (177x193) it is up to 1.9e-3 off TF
# and us (chelsea-contrast); those values are kept in the JSON, not compared.
EVEN_SIZES = tuple(n for n, c in REFERENCES["cases"].items() if c["ms_ssim_tf_compatible"])

# (library, its key, our key, tolerance vs its float32 run, vs its float64 run, cases).
# Our float32 values stay within 1.1e-6 of every float64 run except pytorch_msssim's.
COMPARISONS = (
    # kornia 0.9.0 kornia.metrics.ssim(x, y, 11, max_val=1.0).mean(). padding="same" (its
    # default) mirror-pads (torch "reflect": the edge sample is not repeated) and keeps the
    # full map: our padding="reflect". padding="valid" crops 5 pixels a side: our default.
    # Its eps=1e-12 in the denominator moves these means by under 1e-6 (more on flat dark
    # images, where the denominator is ~C1 * C2). Its float32 run is up to 9e-6 off its
    # float64 run (chelsea-inverse).
    ("kornia", "ssim_same", "reflect", 2e-5, 5e-6, ALL),
    ("kornia", "ssim_valid", "valid", 2e-5, 5e-6, ALL),
    # torchmetrics 1.9.0 structural_similarity_index_measure(x, y, data_range=1.0) and the
    # StructuralSimilarityIndexMeasure module; defaults: Gaussian, sigma 1.5 (11 taps),
    # k1=0.01, k2=0.03. `_ssim_update` reflect-pads by 5, clamps the variances at 0 and
    # averages the full map (the border crop went with Lightning-AI/torchmetrics#2721,
    # 2024-09): our padding="reflect". Its float32 run is up to 9.6e-5 off its float64 run
    # (camera-contrast: a 2-D float32 convolution of x*x, then E[x^2] - mu^2 cancels on
    # flat regions), hence 1e-4 there.
    ("torchmetrics", "ssim_functional", "reflect", 1e-4, 5e-6, ALL),
    ("torchmetrics", "ssim_module", "reflect", 1e-4, 5e-6, ALL),
    # pytorch_msssim 1.0.0 ssim(x, y, data_range=1.0): valid 11-tap Gaussian, our default.
    # It builds its window in float32 even for float64 images, so its float64 run still
    # carries up to 7.5e-6 of window rounding (chelsea-inverse): 1e-5 there.
    ("pytorch_msssim", "ssim", "valid", 2e-5, 1e-5, ALL),
    # pytorch_msssim 1.0.0 ms_ssim(x, y, data_range=1.0), even sizes only (see above).
    ("pytorch_msssim", "ms_ssim", "ms_ssim", 1e-5, 1e-5, EVEN_SIZES),
    # monodepth2's SSIM module re-typed in torch 2.13.0 (ReflectionPad2d(1), 3x3 AvgPool2d,
    # C1=0.01**2, C2=0.03**2, per pixel clamp((1 - SSIM)/2, 0, 1)). Its mean is our
    # dssim(window="uniform", filter_size=3, padding="reflect") (no pixel of these cases
    # leaves [0, 1], so the clamp changes nothing); its reprojection loss
    # mean(0.85 * ssim_loss + 0.15 * |x - y|) is the "monodepth2" preset.
    ("monodepth2", "dssim", "box3_reflect_dssim", 2e-5, 5e-6, ALL),
    ("monodepth2", "loss", "monodepth2_loss", 2e-5, 5e-6, ALL),
    # 3D Gaussian Splatting's ssim re-typed in torch 2.13.0 (F.conv2d(padding=5, groups=C),
    # 11x11 Gaussian, sigma 1.5: zero padding, full map): our padding="same"; its loss
    # 0.8 * L1 + 0.2 * (1 - SSIM) is the "gaussian-splatting" preset. Its float32 SSIM is up
    # to 8.4e-5 off its float64 run (camera-contrast, the cancellation of torchmetrics).
    ("gaussian_splatting", "ssim", "same", 1e-4, 5e-6, ALL),
    ("gaussian_splatting", "loss", "gaussian_splatting_loss", 5e-5, 5e-6, ALL),
)


def test_references_were_made_from_these_photographs(photo_cases):
    assert REFERENCES["versions"]["torch"] == "2.13.0+cpu"
    assert sorted(REFERENCES["cases"]) == sorted(name for name, _, _ in photo_cases)
    assert len(EVEN_SIZES) == 14
    for name, distorted, clean in photo_cases:
        sums = [a.astype(np.float32).sum(dtype=np.float64) for a in (distorted, clean)]
        np.testing.assert_allclose(sums, REFERENCES["cases"][name]["input_sums"], rtol=1e-12)


def test_matches_kornia_torchmetrics_pytorch_msssim_monodepth2_gaussian_splatting(photo_cases):
    """Max |ours - peer| over the cases, against each peer's float32 and float64 runs."""
    ours = _our_values(photo_cases)
    failures = []
    for library, key, our_key, tol32, tol64, names in COMPARISONS:
        for precision, tol in (("float32", tol32), ("float64", tol64)):
            diffs = {
                n: abs(ours[n][our_key] - REFERENCES["cases"][n][precision][library][key])
                for n in names
            }
            worst = max(diffs, key=diffs.get)
            if not diffs[worst] < tol:
                failures.append(
                    f"{library}.{key} ({precision}) vs our {our_key}: {worst} off by "
                    f"{diffs[worst]:.2e} (tolerance {tol:.0e})"
                )
    assert not failures, "\n".join(failures)
