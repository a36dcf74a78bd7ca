"""Train one denoiser under MAE only, DSSIM only, DSSIM+MAE and phased MAE -> DSSIM+MAE.

Equal step budget, schedule and seeds; writes a Markdown report of held-out PSNR, SSIM,
MS-SSIM and MAE (mean ± std over seeds) with the command, machine and wall time:

  python benchmarks/compare_strategies.py --steps 500 --seeds 0 1 --out docs/results.md

A thin command line over `dssim_mae_jax.training.compare_strategies`; `--help` lists options.
"""

import sys

from dssim_mae_jax.training._strategies import main

if __name__ == "__main__":
    sys.exit(main(prog="python benchmarks/compare_strategies.py"))
