"""Phased DSSIM+MAE training of an image-restoration model (denoising or super-resolution).

  python train.py                          # the default: a denoiser on bundled photographs
  python train.py --task sr --scale 4      # super-resolution x4
  python train.py --data-dir ~/photos      # your own PNG/JPEG folder
  python train.py --help                   # every config field, with its default

Running again with the same --workdir resumes from its latest checkpoint. See docs/training.md.
Errors in the options, the data or the workdir are one line on stderr, exit status 2
(--debug shows the traceback); a run that diverged exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import warnings


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _lock_existing_workdir(argv: list[str], hold: contextlib.ExitStack) -> None:
    """Takes the lock of an existing --workdir before JAX is imported (seconds), so that a
    second run on a busy workdir refuses at once. `train_and_evaluate` takes the same lock
    (re-entrant in this process); a new workdir is created and locked there, after the
    config is validated."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--workdir", default="runs/default")
    known, _ = pre.parse_known_args(argv)
    if not os.path.isdir(known.workdir) or {"-h", "--help"} & set(argv):
        return
    # In a multi-host run every process gets the same --workdir, and only process 0 holds the
    # lock (taken in `train_and_evaluate`): the others must not take it here.
    if {"--distributed", "--num-processes", "--process-id"} & {a.split("=")[0] for a in argv}:
        return
    # Loaded by path: importing it through the package would import JAX first.
    package = importlib.util.find_spec("dssim_mae_jax").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(
        "_train_workdir", os.path.join(package, "training", "_workdir.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hold.enter_context(module.locked(known.workdir))


def _train(argv: list[str]) -> int:
    from dssim_mae_jax import training

    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workdir",
        default="runs/default",
        help="output and checkpoint folder (default: %(default)s)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    training.Config.add_arguments(parser)
    _add_multi_host_arguments(parser)
    args = parser.parse_args(argv)
    config = training.Config.from_args(args)
    try:
        _start_multi_host(args)
        result = training.train_and_evaluate(config, args.workdir)
    except training.NonFiniteLossError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    return _report(config, args.workdir, result)


def _report(config, workdir: str, result: dict) -> int:
    if result["interrupted"] is not None:
        print(
            f"interrupted at step {result['step']} ({result['steps_run']} steps run since step "
            f"{result['start_step']}): checkpoint saved in {workdir}/checkpoints;"
            f" run the same command again to resume.",
            file=sys.stderr,
        )
        signum = result["interrupted"]
        return 128 + signum if isinstance(signum, int) else 1
    if not _is_chief():
        return 0  # process 0 reports for every process
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
    print(f"{trained}; held-out metrics in {workdir}/eval.json")
    print(json.dumps(ev, indent=2, sort_keys=True))
    gain = ev["model"]["psnr"] - ev["input"]["psnr"]
    baseline = "noisy" if config.task == "denoise" else "bicubic"
    print(f"PSNR gain over the {baseline} input: {gain:+.2f} dB")
    return 0


def _is_chief() -> bool:
    import jax

    return jax.process_index() == 0


def _add_multi_host_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "multi-host runs",
        "Run the same command once per host (process), adding these three flags, or only "
        "--distributed where jax.distributed.initialize() detects the cluster (TPU VMs, "
        "SLURM). See docs/training.md.",
    )
    group.add_argument("--coordinator-address", help="host:port of process 0")
    group.add_argument("--num-processes", type=int, help="number of processes in the run")
    group.add_argument("--process-id", type=int, help="this process's rank, 0 to N-1")
    group.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=30,
        help="seconds after which a silent (killed) process stops the others "
        "(default: %(default)s)",
    )


def _start_multi_host(args) -> None:
    """`jax.distributed.initialize` from the multi-host flags, when any is given."""
    from dssim_mae_jax.training import ConfigError, _distributed

    flags = (args.coordinator_address, args.num_processes, args.process_id)
    if all(v is None for v in flags):
        return
    try:
        _distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
            heartbeat_timeout_s=args.heartbeat_timeout,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    with warnings.catch_warnings():
        if not debug:  # "warning: <message>", without the file and line of the library
            warnings.showwarning = _show_warning
        try:
            with contextlib.ExitStack() as hold:  # the early workdir lock, if taken
                _lock_existing_workdir(argv, hold)
                return _train(argv)
        except (ValueError, OSError) as e:  # the config, the data, the workdir
            if debug:
                raise
            print(f"error: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
