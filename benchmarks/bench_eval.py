"""Dataset evaluation over mixed-size photographs: shape buckets versus one compile per size.

A folder of ``--images`` crops of scikit-image's bundled photographs with
``--sizes`` distinct sizes (each size used ``images / sizes`` times, in
shuffled order) is scored twice, each in a fresh Python process (nothing
compiled before it):

* ``per_size``: the public function (``dssim_mae_jax.ssim`` or ``ms_ssim``)
  called on each image at its own size: one compilation per size (the peer);
* ``buckets``: ``dssim_mae_jax.metrics.SSIM`` / ``MSSSIM`` updated with each
  image: padded to a few shape buckets, each image's value unchanged.

Printed per metric: compilations (``jax.monitoring`` backend-compile events,
after a warm-up of the state's small helper operations), wall time, the ratio
``per_size / buckets`` of both, and the largest per-image difference.

Usage::

  python benchmarks/bench_eval.py                          # 24 images, 12 sizes
  python benchmarks/bench_eval.py --images 48 --sizes 24 --metrics ssim
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("ssim", "ms_ssim")


def make_images(n_images: int, n_sizes: int, *, min_side: int, max_side: int, seed: int = 0):
    """``[(prediction, target), ...]`` float32 [H, W, 3] crops of photographs, noisy predictions."""
    import numpy as np
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(n_sizes):
        frac = i / max(n_sizes - 1, 1)
        h = int(min_side + frac * (max_side - min_side))
        w = int(max_side - 0.6 * frac * (max_side - min_side))
        sizes.append((h, w) if i % 2 else (w, h))  # portrait and landscape
    out = []
    for k in rng.permutation(n_images):
        h, w = sizes[k % n_sizes]
        photo = photos[k % len(photos)]
        h, w = min(h, photo.shape[0]), min(w, photo.shape[1])
        top = rng.integers(0, photo.shape[0] - h + 1)
        left = rng.integers(0, photo.shape[1] - w + 1)
        target = photo[top : top + h, left : left + w].astype(np.float32) / 255.0
        pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
        out.append((pred, target))
    return out


def run_one(metric: str, mode: str, images) -> dict:
    """Scores `images` in this process; returns compile count, seconds and per-image values."""
    import jax
    import numpy as np

    import dssim_mae_jax as dmj
    from dssim_mae_jax import metrics

    events = []

    def listen(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    fn = {"ssim": dmj.ssim, "ms_ssim": dmj.ms_ssim}[metric]
    cls = {"ssim": metrics.SSIM, "ms_ssim": metrics.MSSSIM}[metric]
    state = cls.empty(max_val=1.0, keep_values=len(images))
    float(state.reset().compute())  # warm-up of the small helper ops (not per size)
    jax.monitoring.register_event_duration_secs_listener(listen)
    start = time.perf_counter()
    if mode == "per_size":
        values = [float(fn(p[None], t[None], max_val=1.0)[0]) for p, t in images]
    else:
        for p, t in images:
            state = state.update(p[None], t[None])
        values = np.asarray(state.per_image()).tolist()
    seconds = time.perf_counter() - start
    return {"compiles": len(events), "seconds": seconds, "values": values}


def _child(args) -> None:
    images = make_images(args.images, args.sizes, min_side=args.min_side, max_side=args.max_side)
    print("RESULT " + json.dumps(run_one(args.child_metric, args.child_mode, images)))


def measure(metric: str, mode: str, args) -> dict:
    """`run_one` in a fresh process."""
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child-metric", metric,
           "--child-mode", mode, "--images", str(args.images), "--sizes", str(args.sizes),
           "--min-side", str(args.min_side), "--max-side", str(args.max_side)]  # fmt: skip
    # This checkout's package first, whatever else is installed.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--sizes", type=int, default=12)
    parser.add_argument("--min-side", type=int, default=170)
    parser.add_argument("--max-side", type=int, default=380)
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    parser.add_argument("--child-metric", help=argparse.SUPPRESS)
    parser.add_argument("--child-mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images < 1 or args.sizes < 1 or args.min_side < 161 or args.max_side < args.min_side:
        parser.error("need --images >= 1, --sizes >= 1, 161 <= --min-side <= --max-side")
    if args.child_metric:
        _child(args)
        return 0
    import jax

    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"jax {jax.__version__} {jax.default_backend()}; {args.images} images of "
          f"{args.sizes} sizes ({args.min_side}..{args.max_side} px)")  # fmt: skip
    print(
        "| metric | per-size compiles | bucket compiles | ratio | per-size s | bucket s "
        "| time ratio | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for metric in args.metrics:
        peer = measure(metric, "per_size", args)
        ours = measure(metric, "buckets", args)
        diff = max(abs(a - b) for a, b in zip(peer["values"], ours["values"], strict=True))
        print(f"| {metric} | {peer['compiles']} | {ours['compiles']} | "
              f"{peer['compiles'] / max(ours['compiles'], 1):.1f}x | {peer['seconds']:.2f} | "
              f"{ours['seconds']:.2f} | {peer['seconds'] / ours['seconds']:.2f}x | "
              f"{diff:.2e} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
