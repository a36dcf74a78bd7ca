"""Zhao et al.'s loss comparison at CPU scale: which loss should I train with?

Trains the same small fully-convolutional net with l2, l1, SSIM, MS-SSIM, Mix (0.84 MS-SSIM +
0.16 Gaussian-weighted l1), the phased schedule l1 -> Mix, and two colour-cast remedies (Mix
with MS-SSIM on luma, Mix with alpha 0.5), on 31x31 patches, for several tasks and seeds, each
run until its validation curve has flattened (doubling its steps, see `zhao_study.run`);
evaluates on full held-out images; writes a markdown report with tables, paired differences
with 95% intervals, curves and the colour cast. Finished runs (one JSON per budget under
--runs-dir) are reused.

  python experiments/zhao.py --task all --out docs/results_zhao.md
  python experiments/zhao.py --task denoise --quick --out /tmp/zhao_quick.md
  python experiments/zhao.py --task denoise --losses mix --out /tmp/mix.md \
      --runs-dir /tmp/runs --compare docs/results_zhao.json   # re-run one cell, check it
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# The repository's dssim_mae_jax first (not an older installed copy), then zhao_study.
sys.path[:0] = [os.path.dirname(HERE), HERE]

from zhao_study import data, losses, report, run  # noqa: E402  (after the path)

QUICK = {"steps": 24, "batch": 4, "eval_every": 8, "features": 8, "val_crop": 48}
QUICK_SIZE = 176  # quick mode: crop every image to this (MS-SSIM needs 161)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--task", nargs="+", default=["all"], choices=(*data.TASKS, "all"), help="one or more"
    )
    p.add_argument("--out", default="docs/results_zhao.md", help="markdown report to write")
    p.add_argument(
        "--runs-dir",
        default=None,
        help="per-run JSON (default runs/zhao[_quick], or runs/zhao_<folder> with --data-dir)",
    )
    p.add_argument("--data-dir", default=None, help="folder of PNG/JPEG (default: bundled)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--losses", nargs="+", default=list(losses.LOSSES), choices=losses.LOSSES)
    p.add_argument("--steps", type=int, default=None, help="training steps per run")
    p.add_argument(
        "--max-doublings",
        type=int,
        default=None,
        help="train a run that has not flattened again with 2x, 4x, ... the steps, up to "
        "2**N times (default 2; 0 in --quick mode)",
    )
    p.add_argument("--quick", action="store_true", help="tiny and fast (tests, notebook)")
    p.add_argument(
        "--compare",
        default=None,
        metavar="SUMMARY_JSON",
        help="after the runs, print each run's largest per-image difference to the same run "
        "in this summary (e.g. docs/results_zhao.json): re-run a cell and check the tables",
    )
    p.add_argument(
        "--crop",
        type=int,
        default=losses.PATCH,
        help="training crop side; above 31 every loss is its mean over all 31x31 sub-patches "
        "(dense supervision; l2, l1, msssim, mix, phased only; runs in runs/zhao_crop<N>)",
    )
    p.add_argument("--report-only", action="store_true", help="no training, report what exists")
    args = p.parse_args(argv)
    if args.data_dir:  # one spelling per folder: the stored settings and the runs dir
        args.data_dir = os.path.abspath(os.path.normpath(os.path.expanduser(args.data_dir)))
    if args.max_doublings is None:
        args.max_doublings = 0 if args.quick else 2
    if not 0 <= args.max_doublings <= 4:
        p.error(f"--max-doublings: got {args.max_doublings}, expected 0 to 4")
    if args.steps is not None and args.steps < 5:
        p.error(f"--steps: got {args.steps}, expected 5 or more")
    dense_ok = (*losses.DENSE_LOSSES, "phased")
    if args.crop < losses.PATCH:
        p.error(f"--crop: got {args.crop}, expected a side of {losses.PATCH} or more")
    if args.crop != losses.PATCH and not set(args.losses) <= set(dense_ok):
        p.error(f"--crop {args.crop}: --losses must be among {dense_ok}, got {args.losses}")
    return args


def _split(args) -> data.Split:
    split = data.load_split(args.data_dir)
    if not args.quick:
        return split
    crop = lambda ims: tuple(im[:QUICK_SIZE, :QUICK_SIZE] for im in ims)
    return dataclasses.replace(
        split,
        train=crop(split.train[:3]),
        eval=crop(split.eval[:2]),
        train_names=split.train_names[:3],
        eval_names=split.eval_names[:2],
    )


def _configs(args, tasks):
    """Per cell (task, loss): the configs of its seeds."""
    extra = dict(QUICK) if args.quick else {}
    if args.steps:
        extra.update(steps=args.steps, eval_every=max(1, args.steps // 20))
    if args.crop != losses.PATCH:
        extra["patch"] = args.crop
    for task in tasks:
        for name in args.losses:
            yield [
                run.RunConfig(task=task, loss=name, seed=s, data_dir=args.data_dir, **extra)
                for s in args.seeds
            ]


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    tasks = data.TASKS if "all" in args.task else tuple(dict.fromkeys(args.task))
    runs_dir = args.runs_dir or default_runs_dir(args)
    if args.crop != losses.PATCH and not args.runs_dir:
        runs_dir += f"_crop{args.crop}"  # never mixed with the 31x31 runs
    split = _split(args)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    results, skipped = {}, set()
    for cell in _configs(args, tasks):
        task, name = cell[0].task, cell[0].loss
        if name in losses.NEEDS_MULTI_SIGMA and not losses.has_multi_sigma():
            skipped.add(name)
            continue
        by_seed = run.run_cell(
            cell,
            split,
            runs_dir,
            max_doublings=args.max_doublings,
            train=not args.report_only,
            log=log,
        )
        results.update({(task, name, seed): r for seed, r in by_seed.items()})
    if skipped:
        log(f"skipped (dssim_mae_jax has no multi_sigma_ssim): {sorted(skipped)}")
    write_report(args, tasks, results, split, wall=time.time() - t0)
    log(f"wrote {args.out}")
    if args.compare:
        for line in compare(results, report.load_summary(args.compare), source=args.compare):
            log(line)
    return 0


def default_runs_dir(args) -> str:
    """runs/zhao, runs/zhao_quick, or runs/zhao_<folder name>_<hash of its path> for
    --data-dir (two folders of the same name never share runs)."""
    name = "zhao"
    if args.data_dir:
        digest = hashlib.sha1(args.data_dir.encode()).hexdigest()[:6]
        name += f"_{os.path.basename(args.data_dir)}_{digest}"
    return os.path.join("runs", name + ("_quick" if args.quick else ""))


COMPARED = ("psnr", "ssim", "ms_ssim", "l1x1000")


def compare(results: dict, reference: dict, *, source: str) -> list[str]:
    """Lines: per run, the steps and the largest per-image |difference| of each metric to the
    same (task, loss, seed) in `reference` (a summary JSON, values rounded to 5 decimals)."""
    lines = [f"compared with {source} (largest |difference| over the held-out images):"]
    for key, res in sorted(results.items()):
        ref = reference.get(key)
        if ref is None:
            lines.append(f"  {'/'.join(map(str, key))}: not in {source}")
            continue
        diffs = []
        for m in COMPARED:
            a = np.asarray([im[m] for im in res["per_image"]], np.float64)
            b = np.asarray([im[m] for im in ref["per_image"]], np.float64)
            d = float(np.max(np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))))
            diffs.append(f"{m} {d:.2g}")
        steps = f"steps {res['config']['steps']} (there {ref['config']['steps']})"
        lines.append(f"  {'/'.join(map(str, key))}: {steps}; " + ", ".join(diffs))
    return lines


def machine() -> str:
    import jax

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return (
        f"{cpu}, {os.cpu_count()} cores visible, "
        f"JAX {jax.__version__} on {jax.default_backend()}; load average (1, 5, 15 min) "
        f"when the report was written: {load} (shared machine)"
    )


def write_report(args, tasks, results, split, *, wall: float) -> None:
    from zhao_study import text

    os.makedirs(os.path.join(os.path.dirname(args.out) or ".", "figures"), exist_ok=True)
    lines = text.header(args, split, results, machine=machine(), wall=wall)
    for task in tasks:
        lines += text.task_section(args, task, results, out_md=args.out)
    lines += text.footer(results, tasks, args.seeds)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    report.write_summary(results, os.path.splitext(args.out)[0] + ".json")


if __name__ == "__main__":
    raise SystemExit(main())
