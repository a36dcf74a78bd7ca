"""Input pipeline throughput and memory: the streaming Grain pipeline against the in-RAM loader.

On a generated folder of large images (by default 200 PNGs of 2040x1400, the DIV2K width; each
tiles one of the bundled scikit-image photographs with alternating flips, rolled by its index
so that no two are equal), it measures:

* ``stream``: patches/s of `PatchStream` (the training pipeline: header index, decoding on
  Grain worker processes, uint8 crops) for each ``--workers`` count, after the first batch;
  the first batch's wait (worker start-up) is reported apart. With ``--workers 0`` (all in
  this process) also the CPU time per patch, which a shared machine's load hardly changes.
  Peak RSS is of the whole process tree (the workers included), sampled every 50 ms.
* ``in_ram``: the previous loader: `load_dataset` (every image decoded to float32 in RAM) and
  `sample_batch`; load time, patches/s and peak RSS.
* ``train_step``: patches/s that the default training step consumes (batch 16 of 48x48,
  the default DnCNN, jitted on this machine's default device), so the ratio
  ``stream / train_step`` says whether the input keeps the step fed.
* ``--train-rss``: ``train.py`` for 100 steps on the bundled photographs, on the first 50
  images and on all of them: peak RSS and training steps/s (the streamed runs keep the pace of
  the bundled one when the input keeps up).

Every measurement runs in its own subprocess, so one's memory does not count in another's.

Usage::

  python benchmarks/bench_input.py                      # folder in /tmp, 1/2/4 workers
  python benchmarks/bench_input.py --images 50 --workers 1 2 --steps 100 --output out.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a clone without installing
    sys.path.insert(0, str(ROOT))


def make_folder(path: str, count: int, *, width: int = 2040, height: int = 1400) -> str:
    """Writes `count` PNGs of `width` x `height` under `path` (kept if already there)."""
    from PIL import Image

    from dssim_mae_jax.training import _images

    os.makedirs(path, exist_ok=True)
    names = _images.BUNDLED_TRAIN + _images.BUNDLED_EVAL
    photos = [_images._bundled(n) for n in names]
    photos = [np.repeat(p, 3, axis=-1) if p.shape[-1] == 1 else p for p in photos]
    for i in range(count):
        out = os.path.join(path, f"img_{i:04d}.png")
        if os.path.exists(out):
            continue
        photo = photos[i % len(photos)]
        tile = np.concatenate([photo, photo[:, ::-1]], axis=1)
        tile = np.concatenate([tile, tile[::-1]], axis=0)
        reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
        canvas = np.roll(np.tile(tile, reps), shift=(7 * i, 13 * i), axis=(0, 1))
        Image.fromarray(np.ascontiguousarray(canvas[:height, :width])).save(out)
    return path


class PeakRSS:
    """Peak resident memory (MB) of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        self._proc, self._interval, self.peak_mb = psutil.Process(pid), interval, 0.0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._halt.is_set():
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                total = 0
            self.peak_mb = max(self.peak_mb, total / 2**20)
            time.sleep(self._interval)

    def stop(self) -> float:
        self._halt.set()
        self._thread.join()
        return self.peak_mb


def stream_rate(folder: str, *, workers: int, steps: int, batch: int, patch: int) -> dict:
    """Patches/s of the streaming pipeline (this process plus `workers` workers)."""
    from dssim_mae_jax.training import _images, _pipeline

    t0 = time.perf_counter()
    index = _images.index_folder(folder, min_side=patch, max_pixels=50_000_000, num_eval=2)
    t_index = time.perf_counter() - t0
    stream = _pipeline.PatchStream(
        index.train,
        wire_channels=index.wire_channels,
        wire_dtype=index.wire_dtype,
        seed=0,
        batch_size=batch,
        patch_size=patch,
        start=0,
        stop=steps + 1,
        workers=workers,
    )
    t1 = time.perf_counter()
    next(stream)
    t2, cpu2 = time.perf_counter(), time.process_time()
    for _ in stream:
        pass
    t3, cpu3 = time.perf_counter(), time.process_time()
    stream.close()
    out = {
        "images": len(index.train) + len(index.eval),
        "index_s": t_index,
        "first_batch_s": t2 - t1,
        "patches_per_s": steps * batch / (t3 - t2),
    }
    if workers == 0:  # all the work in this process: its CPU time does not depend on load
        out["cpu_ms_per_patch"] = (cpu3 - cpu2) * 1e3 / (steps * batch)
    return out


def in_ram_rate(folder: str, *, steps: int, batch: int, patch: int) -> dict:
    """Load time and patches/s of `load_dataset` + `sample_batch`."""
    from dssim_mae_jax import training

    t0 = time.perf_counter()
    ds = training.load_dataset(training.Config(data_dir=folder, patch_size=patch))
    t1 = time.perf_counter()
    for step in range(steps):
        training.sample_batch(ds.train, seed=0, step=step, batch_size=batch, patch_size=patch)
    t2 = time.perf_counter()
    return {
        "images": len(ds.train) + len(ds.eval),
        "load_s": t1 - t0,
        "patches_per_s": steps * batch / (t2 - t1),
    }


def train_step_rate(*, steps: int) -> dict:
    """Patches/s the default training step consumes (default config, this default device)."""
    import jax

    from dssim_mae_jax import training
    from dssim_mae_jax.training._loop import pixel_train_step

    config = training.Config()
    tx, rates = training.make_optimizer(config)
    state = training.create_train_state(config, tx)
    loss_fn, weights = training.build_loss(config)
    schedule = training.make_schedule(config, rates, weights)
    step = jax.jit(pixel_train_step(config, loss_fn, schedule))
    shape = (config.batch_size, config.patch_size, config.patch_size, config.channels)
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    state, m = step(state, pixels)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, pixels)
    jax.block_until_ready(m)
    seconds = (time.perf_counter() - t0) / steps
    return {
        "device": str(jax.devices()[0]),
        "step_ms": seconds * 1e3,
        "patches_per_s": config.batch_size / seconds,
    }


def train_run(folder: str, workdir: str, *, steps: int) -> dict:
    """Runs ``train.py`` (on `folder`; the bundled photographs if empty) for `steps` steps."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--workdir", workdir, "--steps", str(steps)]
    cmd += ["--log-every", str(steps), "--checkpoint-every", str(steps), "--no-progress-bar"]
    if folder:
        cmd += ["--data-dir", folder]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"train.py failed: {proc.stderr[-2000:]}")
    # "trained N steps in T s (R steps/s); ..."
    rate = float(proc.stdout.split(" steps/s)")[0].rsplit("(", 1)[1])
    return {"wall_s": time.perf_counter() - t0, "train_steps_per_s": rate}


def _child(args) -> dict:
    kind = args.child
    if kind == "stream":
        return stream_rate(
            args.folder, workers=args.n, steps=args.steps, batch=args.batch, patch=args.patch
        )
    if kind == "in_ram":
        return in_ram_rate(args.folder, steps=args.steps, batch=args.batch, patch=args.patch)
    if kind == "train_step":
        return train_step_rate(steps=args.steps)
    return train_run(args.folder, args.workdir, steps=args.steps)


def run_child(argv: list[str]) -> dict:
    """Runs this script with ``--child ...`` and returns its result with its peak RSS."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    rss = PeakRSS(proc.pid)
    out, _ = proc.communicate()
    peak = rss.stop()
    if proc.returncode:
        raise RuntimeError(f"{argv} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", default="/tmp/dssim_bench_input/images")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=200, help="batches timed per measurement")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--train-rss", action="store_true", help="also train.py on 50 / all images")
    p.add_argument("--skip-in-ram", action="store_true")
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="instead: alternate the train step and 1-worker streaming this many times",
    )
    p.add_argument("--output", help="write the results as JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    make_folder(args.folder, args.images)
    common = ["--folder", args.folder, "--batch", str(args.batch), "--patch", str(args.patch)]
    steps = ["--steps", str(args.steps)]
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    results["load_average"] = os.getloadavg()
    if args.rounds:
        results["rounds"] = _rounds(args, common, steps)
        if args.output:
            pathlib.Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    results["train_step"] = run_child(["--child", "train_step", "--steps", "20"])
    print("train_step", results["train_step"], flush=True)
    for n in args.workers:
        r = run_child(["--child", "stream", "--n", str(n), *common, *steps])
        results[f"stream_{n}_workers"] = r
        print(f"stream, {n} workers", r, flush=True)
    if not args.skip_in_ram:
        results["in_ram"] = run_child(["--child", "in_ram", *common, *steps])
        print("in_ram", results["in_ram"], flush=True)
    if args.train_rss:
        results.update(_train_rss_pair(args))
    results["load_average_after"] = os.getloadavg()
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _rounds(args, common, steps) -> list[dict]:
    """Train step and 1-worker stream, alternated: each ratio is of two adjacent measurements,
    so a shared machine's load changes affect both alike."""
    out = []
    for r in range(args.rounds):
        step = run_child(["--child", "train_step", "--steps", "20"])
        stream = run_child(["--child", "stream", "--n", "1", *common, *steps])
        row = {
            "train_step_patches_per_s": step["patches_per_s"],
            "stream_1_worker_patches_per_s": stream["patches_per_s"],
            "ratio": stream["patches_per_s"] / step["patches_per_s"],
            "load_average": os.getloadavg()[0],
        }
        print(f"round {r}", row, flush=True)
        out.append(row)
    return out


def _train_rss_pair(args) -> dict:
    """train.py on the bundled photographs, on the first 50 images and on all of them."""
    small = args.folder.rstrip("/") + "_50"
    os.makedirs(small, exist_ok=True)
    for name in sorted(os.listdir(args.folder))[:50]:
        link = os.path.join(small, name)
        if not os.path.exists(link):
            os.symlink(os.path.join(args.folder, name), link)
    out = {}
    runs = (("train_bundled", ""), ("train_50", small), (f"train_{args.images}", args.folder))
    for label, folder in runs:
        workdir = os.path.join(os.path.dirname(args.folder.rstrip("/")), f"{label}_run")
        subprocess.run(["rm", "-rf", workdir], check=True)
        argv = ["--child", "train", "--folder", folder, "--workdir", workdir, "--steps", "100"]
        out[label] = run_child(argv)
        print(label, out[label], flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
