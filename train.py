"""Phased DSSIM+MAE training of an image-restoration model (denoising or super-resolution).

  python train.py                          # the default: a denoiser on bundled photographs
  python train.py --task sr --scale 4      # super-resolution x4
  python train.py --data-dir ~/photos      # your own PNG/JPEG folder
  python train.py --help                   # every config field, with its default

Running again with the same --workdir resumes from its latest checkpoint. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from dssim_mae_jax import training

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workdir",
        default="runs/default",
        help="output and checkpoint folder (default: %(default)s)",
    )
    training.Config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = training.Config.from_args(args)
    except ValueError as e:  # includes training.ConfigError
        parser.error(str(e))
    try:
        result = training.train_and_evaluate(config, args.workdir)
    except training.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except training.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result["interrupted"] is not None:
        print(
            f"interrupted at step {result['step']} ({result['steps_run']} steps run since step "
            f"{result['start_step']}): checkpoint saved in {args.workdir}/checkpoints;"
            f" run the same command again to resume.",
            file=sys.stderr,
        )
        signum = result["interrupted"]
        return 128 + signum if isinstance(signum, int) else 1
    ev = result["eval"]
    start, ran = result["start_step"], result["steps_run"]
    if ran == 0:
        trained = f"run already finished ({result['step']} steps); nothing to train"
    else:
        trained = (
            f"trained {ran} steps in {result['train_seconds']:.1f} s "
            f"({result['steps_per_second']:.2f} steps/s)"
        )
        if start:
            trained += f", resumed from step {start} (now at step {result['step']})"
    print(f"{trained}; held-out metrics in {args.workdir}/eval.json")
    print(json.dumps(ev, indent=2, sort_keys=True))
    gain = ev["model"]["psnr"] - ev["input"]["psnr"]
    baseline = "noisy" if config.task == "denoise" else "bicubic"
    print(f"PSNR gain over the {baseline} input: {gain:+.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
