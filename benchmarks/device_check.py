"""One prepared check of a GPU machine: install, verify, time, train; every figure in one file.

Run on a bare machine (no network) from the repository root::

  bash benchmarks/fetch_device_wheels.sh          # beforehand, on a machine with network
  python benchmarks/device_check.py               # on the device: about 6 minutes on one GPU
  python benchmarks/device_check.py --smoke       # tiny sizes, any backend (CPU: interpret mode)

Stages (each records its figures, or the reason it was skipped, in the results file; a stage
that fails does not stop the next one; a stage that would pass the time budget is skipped):

1. ``install``: pip-installs, from the wheel folder (``--wheels``, default ``.whl/device``),
   the packages that do not import (grain, dm-pix, tensorboardX, pytorch_msssim, pytest, ...).
2. ``checks``: in-process numerics on the device: the XLA path against the float64 reference
   of tests/reference.py under the default (TF32) matmul precision, bfloat16 inputs against
   float32, and the Pallas kernels against the XLA path (maps and gradients, max |difference|).
3. ``timing``: SSIM and the DSSIM+MAE loss, fwd and fwd+bwd, XLA and Pallas, and the peers
   dm_pix.ssim, pytorch_msssim.ssim, torchmetrics' SSIM and fused-ssim when importable, at
   32x512x512x3 and 4x1080x1920x3 (float32), all in this process, interleaved rounds, median.
4. ``tiles``: the Pallas fwd+bwd at 32x512x512x3 for a few tile shapes and warp counts.
5. ``tests``: ``pytest`` on the GPU-relevant test files (Pallas, SSIM precision, losses).
6. ``train``: a short ``train.py`` run on the device, its wall time and last metrics.

The results go to ``--output`` (default ``benchmarks/results/device_check_<device>.json``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# import name -> pip requirement, installed from the wheel folder when missing.
WHEELS = {
    "grain": "grain",
    "dm_pix": "dm-pix",
    "tensorboardX": "tensorboardX",
    "pytorch_msssim": "pytorch_msssim",
    "pytest": "pytest",
    "xdist": "pytest-xdist",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "PIL": "pillow",
    "pygments": "pygments",
}
SIZES = ((32, 512, 512, 3), (4, 1080, 1920, 3))
SMOKE_SIZES = ((2, 40, 48, 3), (1, 36, 70, 3))
TILES = ((32, 128, 4), (16, 128, 4), (64, 128, 4), (32, 256, 4), (32, 256, 8), (64, 64, 2))
TEST_FILES = ("tests/test_pallas.py", "tests/test_ssim.py", "tests/test_losses.py")
SMOKE_TEST_SELECTION = ("tests/test_pallas.py", "-k", "identical or flat")


class Budget:
    """Wall-clock budget of the whole check; stages ask before starting."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def stage(results: dict, name: str, budget: Budget, need_s: float, fn: Callable[[], dict]):
    """Runs `fn` as stage `name` if `need_s` seconds are left; records its dict or its error."""
    start = time.monotonic()
    if budget.left() < need_s:
        results[name] = {"skipped": f"needs about {need_s:.0f} s, {budget.left():.0f} s left"}
    else:
        try:
            results[name] = fn()
        except Exception as error:  # a failed stage is recorded; the next one still runs
            results[name] = {"error": repr(error), "traceback": traceback.format_exc()[-4000:]}
    results[name]["stage_s"] = round(time.monotonic() - start, 1)
    print(f"[{name}] {time.monotonic() - start:.1f} s: {_short(results[name])}", flush=True)


def _short(d: dict) -> str:
    text = json.dumps(d, default=str)
    return text if len(text) < 400 else text[:400] + " ..."


# ------------------------------------------------------------------ 1. install


def install(wheels: pathlib.Path) -> dict:
    missing = []
    for module, requirement in WHEELS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(requirement)
    out = {"missing": missing, "wheel_dir": str(wheels)}
    if missing and wheels.is_dir():
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels)]
        proc = subprocess.run([*cmd, *missing], capture_output=True, text=True, timeout=240)
        out["pip_rc"] = proc.returncode
        out["pip_tail"] = (proc.stdout + proc.stderr)[-1500:]
        if proc.returncode:
            # A dependency missing from the folder: install what is there, one by one.
            out["no_deps_rc"] = {
                r: subprocess.run(
                    [*cmd, "--no-deps", r], capture_output=True, text=True, timeout=120
                ).returncode
                for r in missing
            }
        importlib.invalidate_caches()
    elif missing:
        out["note"] = "wheel folder absent: nothing installed"
    return out


def environment() -> dict:
    import jax

    env = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "host": platform.node(),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    for name in ("jaxlib", "torch", "triton", "torchmetrics", "dm_pix", "pytorch_msssim"):
        try:
            env[name] = importlib.import_module(name).__version__
        except Exception as error:
            env[name] = f"unavailable ({type(error).__name__})"
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        env["git_commit"] = None
    return env


# ------------------------------------------------------------------ the functions compared


def pallas_ssim(x, y, **tiles):
    """Mean SSIM per image by the fused kernels (the defaults of dssim_mae_jax.ssim)."""
    from dssim_mae_jax import _filters, _pallas

    taps = _filters.window_taps("gaussian", 11, 1.5)
    return _pallas.ssim_map(x, y, None, taps=taps, padding="valid", c1=1e-4, c2=9e-4, **tiles)


def jax_cases(with_peers: bool = True) -> dict[str, Callable]:
    """Scalar functions ``f(predictions, targets)`` (float32, [0, 1]) by name."""
    import jax.numpy as jnp

    import dssim_mae_jax as dmj

    cases = {
        "xla.ssim": lambda x, y: jnp.mean(dmj.ssim(x, y, max_val=1.0)),
        "pallas.ssim": lambda x, y: jnp.mean(pallas_ssim(x, y)[1]),
        # The library's DSSIM+MAE loss (its defaults), and a DSSIM+MAE loss of the same cost
        # (0.84 DSSIM + 0.16 MAE) on the Pallas SSIM, until the losses take
        # implementation="pallas"; the two may weight the terms differently.
        "xla.dssim_mae_loss": lambda x, y: jnp.mean(dmj.dssim_mae_loss(x, y, max_val=1.0)),
        "pallas.dssim_mae_loss": lambda x, y: jnp.mean(
            0.84 * (1.0 - pallas_ssim(x, y)[1]) / 2.0 + 0.16 * dmj.mae(x, y, max_val=1.0)
        ),
    }
    if with_peers:
        try:
            import dm_pix

            cases["dm_pix.ssim"] = lambda x, y: jnp.mean(dm_pix.ssim(x, y, max_val=1.0))
        except ImportError:
            pass
    return cases


def torch_cases(shape) -> dict[str, Callable[[str], float]]:
    """PyTorch peers (timers: pass -> seconds) on the GPU torch sees, when importable."""
    try:
        import torch
    except ImportError:
        return {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    b, h, w, c = shape
    gen = torch.Generator(device="cpu").manual_seed(0)
    target = torch.rand((b, c, h, w), generator=gen).to(device)
    pred0 = (target + 0.1 * torch.randn((b, c, h, w), generator=gen).to(device)).clamp(0, 1)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timer(fn):
        def run(pass_name: str) -> float:
            pred = pred0.clone().requires_grad_(pass_name != "fwd")
            sync()
            start = time.perf_counter()
            if pass_name == "fwd":
                with torch.no_grad():
                    fn(pred, target)
            else:
                fn(pred, target).backward()
            sync()
            return time.perf_counter() - start

        return run

    cases = {}
    try:
        import pytorch_msssim

        cases["pytorch_msssim.ssim"] = timer(
            lambda p, t: pytorch_msssim.ssim(p, t, data_range=1.0, size_average=True)
        )
    except ImportError:
        pass
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure

        cases["torchmetrics.ssim"] = timer(
            lambda p, t: structural_similarity_index_measure(p, t, data_range=1.0)
        )
    except ImportError:
        pass
    if device == "cuda":
        try:
            import fused_ssim

            cases["fused_ssim"] = timer(lambda p, t: fused_ssim.fused_ssim(p, t, padding="valid"))
        except ImportError:
            pass
    return cases


def make_inputs(shape, seed: int = 0):
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    targets = jax.random.uniform(k1, tuple(shape), jnp.float32)
    noise = 0.1 * jax.random.normal(k2, tuple(shape), jnp.float32)
    return jnp.clip(targets + noise, 0.0, 1.0), targets


# ------------------------------------------------------------------ 2. checks


def checks(smoke: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import reference
    from skimage import data

    import dssim_mae_jax as dmj

    out = {}
    clean = data.astronaut()[100:292, 150:342].astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0.0, 0.08, clean.shape), 0.0, 1.0)
    x32, y32 = jnp.asarray(noisy, jnp.float32), jnp.asarray(clean, jnp.float32)
    # 1. XLA path under the backend's default precision (TF32 matmuls on NVIDIA GPUs).
    want = reference.ssim(np.asarray(x32, np.float64), np.asarray(y32, np.float64))
    for padding in ("valid", "same", "reflect"):
        got = float(dmj.ssim(x32, y32, max_val=1.0, padding=padding))
        ref = reference.ssim(
            np.asarray(x32, np.float64), np.asarray(y32, np.float64), padding=padding
        )
        out[f"xla_vs_float64_{padding}"] = abs(got - ref)
    # 2. bfloat16 inputs: statistics in float32, close to float32 of the same values.
    xb, yb = x32.astype(jnp.bfloat16), y32.astype(jnp.bfloat16)
    got_b = dmj.ssim(xb, yb, max_val=1.0)
    same_values = dmj.ssim(xb.astype(jnp.float32), yb.astype(jnp.float32), max_val=1.0)
    out["bf16_dtype"] = str(got_b.dtype)
    out["bf16_vs_float32_same_values"] = abs(float(got_b) - float(same_values))
    out["bf16_vs_float64"] = abs(float(got_b) - want)
    grad_b = jax.grad(lambda a: dmj.ssim(a, yb, max_val=1.0))(xb)
    out["bf16_grad_finite"] = bool(jnp.isfinite(grad_b.astype(jnp.float32)).all())
    # 3. Pallas against XLA: maps, means and gradients (the interpreter on CPU).
    shapes = SMOKE_SIZES[:1] if smoke else ((4, 256, 256, 3), (2, 270, 481, 3))
    for shape in shapes:
        x, y = make_inputs(shape, 1)
        key = "x".join(map(str, shape))
        for padding in ("valid", "same", "reflect"):
            from dssim_mae_jax import _filters, _pallas

            taps = _filters.window_taps("gaussian", 11, 1.5)

            def fused(a, b, padding=padding, taps=taps):
                return _pallas.ssim_map(a, b, None, taps=taps, padding=padding, c1=1e-4, c2=9e-4)

            def xla(a, b, padding=padding):
                return dmj.ssim(a, b, max_val=1.0, padding=padding, return_map=True)

            p_map, p_mean, _ = jax.jit(fused)(x, y)
            x_map = jax.jit(xla)(x, y)
            w = jax.random.uniform(jax.random.PRNGKey(2), x_map.shape)
            gp = jax.jit(jax.grad(lambda a, b, w=w: jnp.sum(w * fused(a, b)[0]), (0, 1)))(x, y)
            gx = jax.jit(jax.grad(lambda a, b, w=w: jnp.sum(w * xla(a, b)), (0, 1)))(x, y)
            out[f"pallas_vs_xla_{key}_{padding}"] = {
                "map_max_abs": float(jnp.max(jnp.abs(p_map - x_map))),
                "mean_max_abs": float(
                    jnp.max(jnp.abs(p_mean - dmj.ssim(x, y, max_val=1.0, padding=padding)))
                ),
                "grad_x_max_abs": float(jnp.max(jnp.abs(gp[0] - gx[0]))),
                "grad_y_max_abs": float(jnp.max(jnp.abs(gp[1] - gx[1]))),
                "grad_scale": float(jnp.max(jnp.abs(gx[0]))),
            }
        same = jax.jit(jax.grad(lambda a: jnp.sum(pallas_ssim(a, a)[1])))(x)
        out[f"pallas_identical_{key}"] = {
            "ssim": float(jnp.min(pallas_ssim(x, x)[1])),
            "grad_max_abs": float(jnp.max(jnp.abs(same))),
        }
    return out


# ------------------------------------------------------------------ 3./4. timing


def _jax_timer(fn, x, y, pass_name):
    import jax

    f = fn if pass_name == "fwd" else jax.value_and_grad(fn, argnums=0)
    compiled = jax.jit(f).lower(x, y).compile()

    def call() -> float:
        start = time.perf_counter()
        jax.block_until_ready(compiled(x, y))
        return time.perf_counter() - start

    return call


def time_cases(timers: dict, repeats: int, warmup: int = 2) -> dict:
    for timer in timers.values():
        for _ in range(warmup):
            timer()
    samples = {key: [] for key in timers}
    for _ in range(repeats):  # interleaved rounds: load changes hit every case alike
        for key, timer in timers.items():
            samples[key].append(timer())
    return {
        f"{name} {pass_name}": {
            "median_ms": 1e3 * statistics.median(v),
            "min_ms": 1e3 * min(v),
            "repeats": len(v),
        }
        for (name, pass_name), v in samples.items()
    }


def timing(sizes, repeats: int, budget: Budget) -> dict:
    out = {}
    for shape in sizes:
        if budget.left() < 60:
            out["x".join(map(str, shape))] = {"skipped": "time budget"}
            continue
        x, y = make_inputs(shape)
        timers = {}
        errors = {}
        for name, fn in jax_cases().items():
            for pass_name in ("fwd", "fwd+bwd"):
                try:
                    timers[name, pass_name] = _jax_timer(fn, x, y, pass_name)
                except Exception as error:
                    errors[f"{name} {pass_name}"] = repr(error)[:500]
        for name, run in torch_cases(shape).items():
            for pass_name in ("fwd", "fwd+bwd"):
                timers[name, pass_name] = lambda run=run, p=pass_name: run(p)
        rows = time_cases(timers, repeats)
        for key in [k for k in rows if k.startswith("pallas.")]:
            peer = rows.get(key.replace("pallas.", "xla.", 1))
            if peer:
                rows[key]["xla_over_pallas"] = peer["median_ms"] / rows[key]["median_ms"]
            ref = rows.get("fused_ssim " + key.split(" ", 1)[1])
            if ref and key.startswith("pallas.ssim "):
                rows[key]["fused_ssim_over_pallas"] = ref["median_ms"] / rows[key]["median_ms"]
        out["x".join(map(str, shape))] = {"rows": rows, "errors": errors}
    return out


def tiles(shape, repeats: int, count: int = len(TILES)) -> dict:
    import jax.numpy as jnp

    x, y = make_inputs(shape)
    timers = {}
    for tile_rows, tile_cols, num_warps in TILES[:count]:
        options = {"tile_rows": tile_rows, "tile_cols": tile_cols, "num_warps": num_warps}

        def fn(a, b, options=options):
            return jnp.mean(pallas_ssim(a, b, **options)[1])

        for pass_name in ("fwd", "fwd+bwd"):
            timers[f"rows{tile_rows}_cols{tile_cols}_warps{num_warps}", pass_name] = _jax_timer(
                fn, x, y, pass_name
            )
    return {"size": "x".join(map(str, shape)), "rows": time_cases(timers, repeats, warmup=1)}


# ------------------------------------------------------------------ 5./6. tests, train


def run_tests(smoke: bool, timeout: float) -> dict:
    args = list(SMOKE_TEST_SELECTION) if smoke else list(TEST_FILES)
    cmd = [sys.executable, "-m", "pytest", *args, "-q", "-n", "0", "-p", "no:randomly"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        tail = (error.stdout or b"")[-3000:]
        return {"timeout_s": timeout, "tail": tail.decode() if isinstance(tail, bytes) else tail}
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return {"rc": proc.returncode, "summary": lines[-1] if lines else "", "tail": lines[-40:]}


def train(smoke: bool, timeout: float) -> dict:
    workdir = pathlib.Path("/tmp") / f"device_check_train_{os.getpid()}"
    steps = 4 if smoke else 300
    cmd = [sys.executable, "train.py", "--workdir", str(workdir), "--steps", str(steps),
           "--log-every", "2" if smoke else "50"]  # fmt: skip
    if smoke:
        cmd += ["--batch-size", "2", "--patch-size", "24", "--eval-crop", "32"]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout_s": timeout, "steps": steps}
    out = {"rc": proc.returncode, "wall_s": time.monotonic() - start, "steps": steps}
    metrics = workdir / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_text().strip().splitlines()
        out["metrics_lines"] = len(lines)
        out["last_metrics"] = json.loads(lines[-1]) if lines else None
    out["tail"] = (proc.stdout + proc.stderr)[-2000:]
    return out


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, short stages")
    parser.add_argument("--wheels", default=str(ROOT / ".whl" / "device"))
    parser.add_argument(
        "--install",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="install missing packages from --wheels (default: yes, except with --smoke)",
    )
    parser.add_argument("--output", default=None, help="results file (.json)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="total wall-clock budget")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    budget = Budget(args.budget_s)
    results: dict = {"smoke": args.smoke}
    if args.install if args.install is not None else not args.smoke:
        stage(results, "install", budget, 0, lambda: install(pathlib.Path(args.wheels)))
    stage(results, "environment", budget, 0, environment)
    sizes = SMOKE_SIZES if args.smoke else SIZES
    repeats = args.repeats or (3 if args.smoke else 20)
    stage(results, "checks", budget, 30, lambda: checks(args.smoke))
    stage(results, "timing", budget, 90, lambda: timing(sizes, repeats, budget))
    stage(
        results,
        "tiles",
        budget,
        60,
        lambda: tiles(sizes[0], max(3, repeats // 2), 2 if args.smoke else len(TILES)),
    )
    stage(results, "train", budget, 40, lambda: train(args.smoke, max(30, budget.left() - 100)))
    stage(results, "tests", budget, 30, lambda: run_tests(args.smoke, max(20, budget.left() - 5)))
    kind = str(results.get("environment", {}).get("device_kind", "unknown"))
    name = "smoke" if args.smoke else kind.replace(" ", "_").lower()
    output = pathlib.Path(
        args.output or ROOT / "benchmarks" / "results" / f"device_check_{name}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
