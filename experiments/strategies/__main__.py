"""Command line of the strategy comparison: ``python -m experiments.strategies --help``.

Trains every strategy and seed with the same base config, prints the Markdown report and,
with ``--out``, writes it. Every `train.py` flag sets the base config (the comparison's own
defaults: no progress bar, one checkpoint kept, written at the end).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence

from dssim_mae_jax import training
from experiments.strategies.report import comparison_report
from experiments.strategies.runs import (
    STRATEGIES,
    compare_strategies,
    comparison_config,
    default_strategies,
)

PROG = "python -m experiments.strategies"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="(%(default)s)")
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES)
    )
    parser.add_argument("--alpha", type=float, default=0.84, help="DSSIM weight of the mix")
    parser.add_argument("--workdir", default="runs/strategies", help="(%(default)s)")
    parser.add_argument("--out", default="", help="write the Markdown report here")
    training.Config.add_arguments(parser.add_argument_group("base config (train.py flags)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        chosen = default_strategies(alpha=args.alpha)
        # Only the flags given on the command line change the comparison's defaults.
        given, default = training.Config.from_args(args).to_dict(), training.Config().to_dict()
        base = comparison_config(**{k: v for k, v in given.items() if v != default[k]})
    except ValueError as e:  # includes training.ConfigError
        parser.error(str(e))
    data = training.load_dataset(base)
    t0 = time.perf_counter()
    runs = compare_strategies(
        base,
        args.workdir,
        strategies=[chosen[n] for n in args.strategies],
        seeds=args.seeds,
        log=lambda line: print(line, flush=True),
    )
    text = comparison_report(
        runs,
        command=f"{PROG} {shlex.join(argv)}".strip(),
        wall_seconds=time.perf_counter() - t0,
        train_names=data.train_names,
        eval_names=data.eval_names,
    )
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
