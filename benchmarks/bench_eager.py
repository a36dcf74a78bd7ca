"""First-call cost of the public metrics called eagerly versus under ``jax.jit``.

Each measurement runs in a fresh Python process (nothing compiled or cached
before it; JAX's persistent compilation cache stays off), which times the
first call of one function on one input, including tracing and compilation:

* ``eager``: ``ssim(x, y, max_val=1.0)`` called directly;
* ``jit``: ``jax.jit(lambda a, b: ssim(a, b, max_val=1.0))(x, y)``;

and the same for ``dm_pix.ssim`` (the peer, measured in the same way on the
same machine) and a second, cached call. The ratio ``eager / jit`` of the first
calls is the target of the eager wrapper (``dssim_mae_jax._jit``): about 1.

Usage::

  python benchmarks/bench_eager.py                     # 256x256x3, 3 processes each
  python benchmarks/bench_eager.py --size 1x256x256x3 --repeats 5

The functions are importable (``tests/test_bench_eager.py`` runs them tiny).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

FUNCTIONS = ("ssim", "ms_ssim", "dm_pix.ssim")
ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = ("eager", "jit")


def parse_size(text: str) -> tuple[int, ...]:
    """``"1x256x256x3"`` -> ``(1, 256, 256, 3)``."""
    shape = tuple(int(v) for v in text.lower().split("x"))
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"a size is BxHxWxC, got {text!r}")
    return shape


def _function(name: str):
    if name == "dm_pix.ssim":
        import dm_pix

        return lambda a, b: dm_pix.ssim(a, b, max_val=1.0)
    import dssim_mae_jax

    metric = getattr(dssim_mae_jax, name)
    return lambda a, b: metric(a, b, max_val=1.0)


def measure_once(name: str, mode: str, shape: tuple[int, ...]) -> dict:
    """Seconds of the first and the second call of `name` in `mode` (this process)."""
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.random(shape, np.float32)
    x = np.clip(y + 0.1 * rng.standard_normal(shape, np.float32), 0, 1)
    x, y = jax.device_put(x), jax.device_put(y)
    fn = _function(name)
    if mode == "jit":
        fn = jax.jit(fn)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        jax.block_until_ready(fn(x, y))
        times.append(time.perf_counter() - start)
    return {"function": name, "mode": mode, "first_s": times[0], "second_s": times[1]}


def measure_in_fresh_process(name, mode, shape, root=ROOT) -> dict:
    """`measure_once` in a new process importing dssim_mae_jax from `root`."""
    size = "x".join(map(str, shape))
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false", PYTHONPATH=path)
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, mode, size],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(shape, repeats: int, functions=FUNCTIONS, root=ROOT, log=print) -> list[dict]:
    """Median first/second call times per (function, mode), interleaved over repeats."""
    samples: dict[tuple[str, str], list[dict]] = {}
    for _ in range(repeats):
        for name in functions:
            for mode in MODES:
                row = measure_in_fresh_process(name, mode, shape, root)
                samples.setdefault((name, mode), []).append(row)
                log(f"{name:12s} {mode:5s} first {row['first_s']:.3f} s ({row['package']})")
    rows = []
    for (name, mode), runs in samples.items():
        rows.append(
            {
                "function": name,
                "mode": mode,
                "first_s": statistics.median(r["first_s"] for r in runs),
                "second_s": statistics.median(r["second_s"] for r in runs),
                "runs": len(runs),
            }
        )
    return rows


def format_markdown(rows: list[dict], shape) -> str:
    first = {(r["function"], r["mode"]): r["first_s"] for r in rows}
    lines = [
        f"Input {'x'.join(map(str, shape))} float32; median of {rows[0]['runs']} fresh processes.",
        "",
        "| function | first eager call (s) | first jitted call (s) | eager / jit "
        "| second eager call (ms) |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["function"] for r in rows):
        eager = next(r for r in rows if r["function"] == name and r["mode"] == "eager")
        ratio = first[name, "eager"] / first[name, "jit"]
        lines.append(
            f"| {name} | {first[name, 'eager']:.2f} | {first[name, 'jit']:.2f} | {ratio:.2f} "
            f"| {1e3 * eager['second_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1x256x256x3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--functions", nargs="+", default=list(FUNCTIONS))
    parser.add_argument(
        "--package-root",
        default=str(ROOT),
        help="checkout whose dssim_mae_jax is measured (e.g. an older one, for a before/after)",
    )
    parser.add_argument("--child", nargs=3, metavar=("FUNCTION", "MODE", "SIZE"))
    args = parser.parse_args(argv)
    if args.child:
        name, mode, size = args.child
        row = measure_once(name, mode, parse_size(size))
        import dssim_mae_jax

        row["package"] = str(pathlib.Path(dssim_mae_jax.__file__).parent)
        print(json.dumps(row))
        return 0
    shape = parse_size(args.size)
    import jax

    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} {jax.default_backend()}"
    )
    print(f"dssim_mae_jax from {args.package_root}")
    rows = run(shape, args.repeats, args.functions, pathlib.Path(args.package_root))
    print(format_markdown(rows, shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
