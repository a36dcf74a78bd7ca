"""Speed and memory of SSIM, MS-SSIM and the DSSIM+MAE loss against dm_pix.ssim.

Every implementation is compiled once per size, then timed in interleaved
rounds (one call of each per round) so that load changes on a shared machine
affect all of them alike. Reported per (implementation, size, pass): the
median wall time in ms, the speed-up over dm_pix.ssim measured in the same
process (``dm_pix / ours``), and XLA's temporary memory
(``compiled.memory_analysis().temp_size_in_bytes``).

Passes: ``fwd`` is the mean SSIM of the batch; ``fwd+bwd`` its value and
gradient w.r.t. the predictions. pytorch_msssim and fused-ssim are timed too
when importable (on the GPU that torch sees, if any).

Usage::

  python benchmarks/bench_ssim.py                       # sizes for this backend
  python benchmarks/bench_ssim.py --sizes 16x256x256x3 --repeats 7
  python benchmarks/bench_ssim.py --output docs/results/gpu   # writes .md and .json

The functions are importable (``tests/test_benchmarks.py`` runs them tiny).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

import dssim_mae_jax
from dssim_mae_jax import _filters

DEFAULT_SIZES = {"cpu": ("16x256x256x3",), "gpu": ("32x512x512x3", "8x256x256x3")}
MS_SSIM_MIN_SIZE = 161  # 11-tap window, 5 scales
# multi_sigma_ssim and zhao-mix (31-tap windows) are timed from this size on; the tiny
# smoke-test sizes skip their compilation (five windows of 31 taps take a while).
MULTI_SIGMA_MIN_SIZE = 64


def parse_size(text: str) -> tuple[int, ...]:
    """``"16x256x256x3"`` -> ``(16, 256, 256, 3)`` (batch, height, width, channels)."""
    shape = tuple(int(v) for v in text.lower().split("x"))
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"a size is BxHxWxC, got {text!r}")
    return shape


def make_inputs(shape: Sequence[int], seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """A noisy prediction and its target in [0, 1], float32."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    targets = jax.random.uniform(k1, tuple(shape), jnp.float32)
    noise = 0.1 * jax.random.normal(k2, tuple(shape), jnp.float32)
    return jnp.clip(targets + noise, 0.0, 1.0), targets


def _loss_fn() -> Callable:
    if hasattr(dssim_mae_jax, "dssim_mae_loss"):
        return lambda x, y: dssim_mae_jax.dssim_mae_loss(x, y, max_val=1.0, alpha=0.84)
    # Before the losses module existed: the same terms in one jit.
    return lambda x, y: (
        0.84 * dssim_mae_jax.dssim(x, y, max_val=1.0) + 0.16 * dssim_mae_jax.mae(x, y, max_val=1.0)
    )


def jax_cases(shape: Sequence[int], *, with_dm_pix: bool = True) -> dict[str, Callable]:
    """Scalar functions ``f(predictions, targets)`` to time, by name."""
    cases = {
        "ssim": lambda x, y: jnp.mean(dssim_mae_jax.ssim(x, y, max_val=1.0)),
        "dssim_mae_loss": lambda x, y: jnp.mean(_loss_fn()(x, y)),
    }
    if min(shape[1], shape[2]) >= MS_SSIM_MIN_SIZE:
        cases["ms_ssim"] = lambda x, y: jnp.mean(dssim_mae_jax.ms_ssim(x, y, max_val=1.0))
    if min(shape[1], shape[2]) >= MULTI_SIGMA_MIN_SIZE and hasattr(
        dssim_mae_jax, "multi_sigma_ssim"
    ):
        cases["multi_sigma_ssim"] = lambda x, y: jnp.mean(
            dssim_mae_jax.multi_sigma_ssim(x, y, max_val=1.0)
        )
        zhao = dssim_mae_jax.make_loss("zhao-mix", reduction="mean")
        cases["zhao-mix"] = lambda x, y: zhao(x, y)[0]
    if with_dm_pix:
        try:
            import dm_pix
        except ImportError:  # pragma: no cover - dm_pix is a test dependency
            pass
        else:
            cases["dm_pix.ssim"] = lambda x, y: jnp.mean(dm_pix.ssim(x, y, max_val=1.0))
    return cases


def compile_pass(fn: Callable, x, y, pass_name: str):
    """The AOT-compiled forward, or value-and-gradient w.r.t. the predictions."""
    f = fn if pass_name == "fwd" else jax.value_and_grad(fn)
    return jax.jit(f).lower(x, y).compile()


def temp_bytes(compiled) -> int | None:
    analysis = compiled.memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def _torch_cases(shape: Sequence[int]) -> dict[str, Callable]:
    """pytorch_msssim / fused-ssim timers, when importable: name -> (pass -> seconds)."""
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

    def timer(ssim_fn):
        def run(pass_name: str) -> float:
            pred = pred0.clone().requires_grad_(pass_name != "fwd")
            sync()
            start = time.perf_counter()
            if pass_name == "fwd":
                with torch.no_grad():
                    ssim_fn(pred, target)
            else:
                ssim_fn(pred, target).backward()
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
    if device == "cuda":
        try:
            import fused_ssim

            cases["fused_ssim"] = timer(lambda p, t: fused_ssim.fused_ssim(p, t, padding="valid"))
        except ImportError:
            pass
    return cases


def run_benchmark(
    sizes: Sequence[Sequence[int]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    with_dm_pix: bool = True,
    with_torch: bool = True,
    method: str | None = None,
    chunk_elements: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Times every case at every size; one result row per (case, size, pass)."""
    rows = []
    for shape in sizes:
        shape = tuple(shape)
        x, y = make_inputs(shape)
        timers: dict[tuple[str, str], Callable[[], float]] = {}
        memory: dict[tuple[str, str], int | None] = {}
        with _filters.method_override(method), _filters.chunk_override(chunk_elements):
            for name, fn in jax_cases(shape, with_dm_pix=with_dm_pix).items():
                for pass_name in ("fwd", "fwd+bwd"):
                    compiled = compile_pass(fn, x, y, pass_name)
                    memory[name, pass_name] = temp_bytes(compiled)

                    def call(compiled=compiled, x=x, y=y) -> float:
                        start = time.perf_counter()
                        jax.block_until_ready(compiled(x, y))
                        return time.perf_counter() - start

                    timers[name, pass_name] = call
        if with_torch:
            for name, run in _torch_cases(shape).items():
                for pass_name in ("fwd", "fwd+bwd"):
                    timers[name, pass_name] = lambda run=run, p=pass_name: run(p)
                    memory[name, pass_name] = None
        for timer in timers.values():
            for _ in range(warmup):
                timer()
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in timers}
        for _ in range(repeats):
            for key, timer in timers.items():
                samples[key].append(timer())
        size_text = "x".join(map(str, shape))
        for (name, pass_name), values in samples.items():
            rows.append(
                {
                    "impl": name,
                    "size": size_text,
                    "pass": pass_name,
                    "median_ms": 1e3 * statistics.median(values),
                    "min_ms": 1e3 * min(values),
                    "temp_bytes": memory[name, pass_name],
                }
            )
        _add_ratios(rows, size_text)
        for row in rows:
            if row["size"] == size_text:
                log(_format_row(row))
    return rows


def _add_ratios(rows: list[dict[str, Any]], size: str) -> None:
    """Speed-up and memory ratio of each row over dm_pix.ssim's (same size, pass)."""
    ref = {r["pass"]: r for r in rows if r["size"] == size and r["impl"] == "dm_pix.ssim"}
    ssim_ref = {r["pass"]: r for r in rows if r["size"] == size and r["impl"] == "ssim"}
    for row in rows:
        if row["size"] != size:
            continue
        base = ref.get(row["pass"])
        row["speedup_vs_dm_pix"] = base["median_ms"] / row["median_ms"] if base else None
        if base and base["temp_bytes"] and row["temp_bytes"] is not None:
            row["temp_vs_dm_pix"] = row["temp_bytes"] / base["temp_bytes"]
        else:
            row["temp_vs_dm_pix"] = None
        own = ssim_ref.get(row["pass"])
        row["time_vs_ssim"] = row["median_ms"] / own["median_ms"] if own else None


def _fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def _format_row(row: dict[str, Any]) -> str:
    temp = None if row["temp_bytes"] is None else row["temp_bytes"] / 2**20
    return (
        f"{row['size']:>14s} {row['pass']:>8s} {row['impl']:>20s} "
        f"median {row['median_ms']:9.2f} ms  x{_fmt(row['speedup_vs_dm_pix'], '.2f'):>6s} "
        f"vs dm_pix  temp {_fmt(temp, '.1f'):>7s} MiB"
    )


_FIRST_CALL = """
import sys, time
import jax, jax.numpy as jnp
import dssim_mae_jax
shape = tuple(int(v) for v in sys.argv[1].split("x"))
x = jax.random.uniform(jax.random.PRNGKey(0), shape)
y = jnp.clip(x + 0.05, 0.0, 1.0)
jax.block_until_ready((x, y))
fn = lambda a, b: dssim_mae_jax.multi_sigma_ssim(a, b, max_val=1.0)
if sys.argv[2] == "jit":
    fn = jax.jit(fn)
start = time.perf_counter()
jax.block_until_ready(fn(x, y))
print(time.perf_counter() - start)
"""


def first_calls(shape: Sequence[int], repeats: int = 3) -> dict[str, float]:
    """Seconds of the first eager and the first jitted call of multi_sigma_ssim (medians).

    Each call runs in a fresh Python process, so neither finds anything compiled
    or traced by the other.
    """
    size = "x".join(map(str, shape))
    out = {}
    for mode in ("eager", "jit"):
        runs = [
            float(
                subprocess.run(
                    [sys.executable, "-c", _FIRST_CALL, size, mode],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()[-1]
            )
            for _ in range(repeats)
        ]
        out[mode] = statistics.median(runs)
    out["eager_vs_jit"] = out["eager"] / out["jit"]
    return out


def machine_description() -> dict[str, str]:
    device = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return {
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "cpu": cpu,
        "cpu_count": str(os.cpu_count()),
        "jax": jax.__version__,
        "filter_method": _filters.resolve_method(),
        "chunk_elements": str(_filters.CPU_CHUNK_ELEMENTS)
        if _filters.resolve_method() == "stacked"
        else "none",
        "python": platform.python_version(),
    }


def format_markdown(rows: Sequence[dict[str, Any]], machine: dict[str, str]) -> str:
    """A markdown table of the results, with the machine named."""
    lines = [
        f"Machine: {machine['device']} ({machine['backend']}); CPU {machine['cpu']}, "
        f"{machine['cpu_count']} cores; jax {machine['jax']}; "
        f"filter method {machine['filter_method']}; "
        f"batch chunks of {machine.get('chunk_elements', 'none')} elements.",
        "",
        "| size | pass | implementation | median ms | speed-up vs dm_pix | "
        "temp MiB | temp vs dm_pix | time vs ssim |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        temp = None if r["temp_bytes"] is None else r["temp_bytes"] / 2**20
        lines.append(
            f"| {r['size']} | {r['pass']} | {r['impl']} | {r['median_ms']:.2f} | "
            f"{_fmt(r['speedup_vs_dm_pix'], '.2f')} | {_fmt(temp, '.1f')} | "
            f"{_fmt(r['temp_vs_dm_pix'], '.2f')} | {_fmt(r['time_vs_ssim'], '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", help="BxHxWxC sizes (default: per backend)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (default 1)")
    parser.add_argument(
        "--output",
        default="benchmarks/results/latest",
        help="path prefix of the .md and .json written (default benchmarks/results/latest)",
    )
    parser.add_argument("--no-dm-pix", action="store_true", help="skip dm_pix.ssim")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers")
    parser.add_argument("--method", choices=_filters.METHODS, help="force a filtering method")
    parser.add_argument(
        "--first-calls",
        action="store_true",
        help="instead: time the first eager and first jitted call of multi_sigma_ssim",
    )
    parser.add_argument(
        "--chunk-elements",
        type=int,
        help="force the batch chunk size in elements (a huge value: no chunks)",
    )
    args = parser.parse_args(argv)

    backend = jax.default_backend()
    sizes = args.sizes or DEFAULT_SIZES.get(backend, DEFAULT_SIZES["gpu"])
    if args.first_calls:
        for size in sizes:
            result = first_calls(parse_size(size), repeats=args.repeats)
            print(size, json.dumps({k: round(v, 3) for k, v in result.items()}), flush=True)
        return 0
    machine = machine_description()
    if args.method:
        machine["filter_method"] = args.method
        if args.method != "stacked":
            machine["chunk_elements"] = "none"
    if args.chunk_elements:
        machine["chunk_elements"] = str(args.chunk_elements)
    print("machine:", json.dumps(machine), flush=True)
    rows = run_benchmark(
        [parse_size(s) for s in sizes],
        repeats=args.repeats,
        warmup=args.warmup,
        with_dm_pix=not args.no_dm_pix,
        with_torch=not args.no_torch,
        method=args.method,
        chunk_elements=args.chunk_elements,
        log=lambda line: print(line, flush=True),
    )
    table = format_markdown(rows, machine)
    print()
    print(table)
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table)
    record = {
        "machine": machine,
        "command": " ".join([pathlib.Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "repeats": args.repeats,
        "rows": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
