"""Report of the dense-supervision check: l1 and Mix trained on --crop crops (experiments/zhao.py
--crop) beside the same losses of the 31x31 study (its summary JSON). Trains nothing.

  python experiments/zhao.py --task denoise --crop 61 --losses l1 mix
  python experiments/zhao_dense.py --crop 61 --out docs/results_zhao_dense.md
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import zhao  # noqa: E402  (after the path)
from zhao_study import dense, report  # noqa: E402


def _budgets(results: dict) -> str:
    seen = {name: report.budget_note(r) for (_, name, _), r in sorted(results.items())}
    return ", ".join(f"{report.LABELS[n]} {b}" for n, b in seen.items())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crop", type=int, default=61)
    p.add_argument("--task", default="denoise")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs-dir", default=None, help="dense runs (default runs/zhao_crop<N>)")
    p.add_argument("--study", default="docs/results_zhao.json", help="the 31x31 study's summary")
    p.add_argument("--out", default="docs/results_zhao_dense.md")
    p.add_argument("--note", action="append", default=[], help="extra setup line (repeatable)")
    args = p.parse_args(argv)
    runs_dir = args.runs_dir or os.path.join("runs", f"zhao_crop{args.crop}")
    dense_runs = dense.load_runs(runs_dir, args.task)
    if not dense_runs:
        p.error(f"--runs-dir: no runs of task {args.task!r} under {runs_dir!r}")
    cfg = next(iter(dense_runs.values()))["config"]
    setup = [
        f"Runs: `{runs_dir}/{args.task}/*.json` (crop {cfg['patch']}×{cfg['patch']}, batch "
        f"{cfg['batch']}, seeds {args.seeds}; steps per loss, * where doubling them still "
        f"changed the result: {_budgets(dense_runs)}) beside the 31×31 study's runs of the same "
        f"losses and seeds (`{args.study}`).",
        f"Report machine: {zhao.machine()}.",
        *args.note,
    ]
    sets = [(31, report.load_summary(args.study)), (args.crop, dense_runs)]
    dense.write(args.out, sets=sets, task=args.task, seeds=args.seeds, setup=setup)
    report.write_summary(dense_runs, os.path.splitext(args.out)[0] + ".json")  # the runs, kept
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
