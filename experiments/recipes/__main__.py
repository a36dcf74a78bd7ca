"""Command line of the recipe study: ``python -m experiments.recipes --help``.

Trains the grid (`grid.GRID`, in priority order; seeds innermost), one JSON record per run under
``--runs-dir`` (reused: an interrupted study resumes), then writes the Markdown report and
its figures. Several workers may share one ``--runs-dir``: each run is claimed by one of them
(a ``.claim`` file holding its process id; a claim whose process is gone is taken over).
``--report-only`` trains nothing and reports the finished runs. Records missing from
``--runs-dir`` but present in the report's JSON summary (``--out`` with ``.json``, committed as
``docs/results_recipes.json``) are written back first, so a fresh clone resumes the study where
the committed report left it instead of training those runs again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from experiments.recipes import grid, report, run

PROG = "python -m experiments.recipes"
QUICK = {"features": 4, "depth": 2, "batch_size": 4, "eval_crop": 64}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1])
    p.add_argument("--out", default="", help="write the Markdown report here")
    p.add_argument(
        "--task", choices=("denoise", "sr"), default="denoise",
        help="train.py's task: the default denoiser, or x2 super-resolution (%(default)s)",
    )  # fmt: skip
    p.add_argument("--runs-dir", default="", help="(runs/recipes, or runs/recipes_sr)")
    p.add_argument("--figures-dir", default="", help="figures (default: <out dir>/figures)")
    p.add_argument("--steps", type=int, default=500, help="training steps (%(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(%(default)s)")
    p.add_argument("--cells", type=int, default=len(grid.GRID), help="first N cells of the grid")
    p.add_argument("--deadline", default="", help="start no run after this UTC time (HH:MM)")
    p.add_argument("--report-only", action="store_true", help="train nothing")
    p.add_argument("--train-only", action="store_true", help="write no report")
    p.add_argument("--quick", action="store_true", help="tiny budget for tests: 3 cells, 8 steps")
    return p


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(path: str) -> bool:
    claim = path + ".claim"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(claim) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return False
            try:
                os.remove(claim)  # its worker is gone
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _past(deadline: str) -> bool:
    if not deadline:
        return False
    hh, mm = (int(v) for v in deadline.split(":"))
    now = time.gmtime()
    return (now.tm_hour, now.tm_min) >= (hh, mm)


def train_grid(
    recipes, *, seeds, steps, runs_dir, deadline="", log=print, eval_points=10, overrides=None
):
    """Trains every (recipe, seed) without a record yet, in order; returns how many ran."""
    from dssim_mae_jax import training

    data = None
    ran = 0
    for recipe in recipes:
        for seed in seeds:
            path = run.record_path(runs_dir, recipe, seed=seed, steps=steps)
            if os.path.exists(path) or _past(deadline) or not _claim(path):
                continue
            try:
                if data is None:
                    ds = training.load_dataset(training.Config(**(overrides or {})))
                    data = {
                        "train_images": ds.train,
                        "validation": run.load_validation(),
                        "test": ds.eval,
                    }
                run.ensure_run(
                    recipe, seed=seed, steps=steps, runs_dir=runs_dir, data=data, log=log,
                    eval_points=eval_points, overrides=overrides,
                )  # fmt: skip
                ran += 1
            finally:
                os.remove(path + ".claim")
    return ran


def restore_records(summary_path: str, *, runs_dir: str, steps: int, log=print) -> int:
    """Writes the runs of a report's JSON summary that ``runs_dir`` lacks; returns how many.

    The summary holds each record without its training-loss curve (``train_loss``), which the
    report does not use; the held-out curve, per-image metrics and timings are kept.
    """
    if not summary_path or not os.path.exists(summary_path):
        return 0
    records, recipes, _, summary_steps = report.read_summary(summary_path)
    if summary_steps != steps:
        return 0
    written = 0
    for recipe in recipes:
        for seed, rec in records[recipe.name].items():
            path = run.record_path(runs_dir, recipe, seed=seed, steps=steps)
            if os.path.exists(path):
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(rec, f, indent=1)
            os.replace(path + ".tmp", path)
            written += 1
    if written:
        log(f"restored {written} finished runs from {summary_path}")
    return written


def _command(argv: Sequence[str]) -> str:
    """The command that trains and reports (``--report-only`` / ``--train-only`` left out)."""
    kept = [a for a in argv if a not in ("--report-only", "--train-only")]
    return " ".join([PROG, *kept])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    cells = grid.GRID if args.task == "denoise" else grid.SR_GRID
    recipes = list(cells[: args.cells])
    steps, seeds, eval_points = args.steps, args.seeds, 10
    overrides = None if args.task == "denoise" else {"task": args.task}
    default_dir = "runs/recipes" if args.task == "denoise" else "runs/recipes_sr"
    args.runs_dir = args.runs_dir or default_dir
    if args.quick:  # seconds: a tiny model on small crops, for the tests
        recipes, steps, eval_points, seeds = recipes[:3], 8, 2, seeds[:2]
        overrides = {**(overrides or {}), **QUICK}
    t0 = time.perf_counter()
    if args.out:
        restore_records(
            os.path.splitext(args.out)[0] + ".json", runs_dir=args.runs_dir, steps=steps
        )
    if not args.report_only:
        log = lambda line: print(line, flush=True)
        train_grid(
            recipes, seeds=seeds, steps=steps, runs_dir=args.runs_dir, deadline=args.deadline,
            log=log, eval_points=eval_points, overrides=overrides,
        )  # fmt: skip
    if args.train_only:
        return 0
    figures = args.figures_dir or os.path.join(os.path.dirname(args.out) or ".", "figures")
    text = report.write_report(
        recipes, seeds=seeds, steps=steps, runs_dir=args.runs_dir, figures_dir=figures,
        out=args.out, command=_command(sys.argv[1:] if argv is None else argv),
        wall_s=None if args.report_only else time.perf_counter() - t0,
    )  # fmt: skip
    if not args.out:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
