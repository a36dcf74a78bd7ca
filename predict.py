"""Restores images with a model trained by train.py (denoising or super-resolution).

  python predict.py --workdir runs/default photo.png scan.tif --output restored/
  python predict.py --workdir runs/sr4 small.jpg --output big/        # x4, from the run

Each IMAGE (PNG, JPEG, TIFF, ...; grayscale or RGB, 8 or 16 bits) is written to
OUTPUT/<name>.png at its own bit depth and channels; the super-resolution scale is the run's.
Images larger than --max-pixels are restored in overlapping tiles (the same result).
Errors (an unreadable image, a wrong channel count, a workdir without a finished checkpoint)
are one line on stderr, exit status 2 (--debug shows the traceback). See docs/predict.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to restore")
    parser.add_argument("--workdir", required=True, help="the train.py run to apply")
    parser.add_argument("--output", required=True, help="folder for the restored PNGs")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=1 << 20,
        help="input pixels restored at once; larger images are tiled (default: %(default)s)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser.parse_args(argv)


def _output_paths(images: list[str], output: str) -> list[str]:
    stems = [os.path.splitext(os.path.basename(p))[0] for p in images]
    paths = [os.path.join(output, stem + ".png") for stem in stems]
    seen: dict[str, str] = {}
    for image, path in zip(images, paths, strict=True):
        if path in seen:
            raise ValueError(
                f"IMAGE: {seen[path]!r} and {image!r} would both be written to {path!r}; "
                "restore them in two calls with different --output folders"
            )
        if os.path.abspath(path) == os.path.abspath(image):
            raise ValueError(f"IMAGE: {image!r} would be overwritten; use another --output")
        seen[path] = image
    return paths


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from dssim_mae_jax import training
    from dssim_mae_jax.training import _images

    outputs = _output_paths(args.images, args.output)
    for path in args.images:  # every input is checked (from its header) before the model loads
        _images.check_photo(path)
    restore = training.load_restorer(args.workdir, max_pixels=args.max_pixels)
    os.makedirs(args.output, exist_ok=True)
    c = restore.config
    what = f"super-resolution x{restore.scale}" if c.task == "sr" else "denoising"
    print(f"{args.workdir}: {what} model, step {restore.step} of {c.steps}", flush=True)
    for image, out_path in zip(args.images, outputs, strict=True):
        pixels = _images.read_photo(image)
        t0 = time.perf_counter()
        restored = restore(pixels)
        top = np.iinfo(pixels.dtype).max
        levels = np.rint(np.clip(restored, 0.0, 1.0) * top).astype(pixels.dtype)
        _images.write_png(out_path, levels)
        h, w, ch = pixels.shape
        tiles = restore.tiles(h, w)
        print(
            f"{image} -> {out_path}: {w}x{h} -> {levels.shape[1]}x{levels.shape[0]}, "
            f"{'gray' if ch == 1 else 'RGB'} {8 * pixels.itemsize}-bit, "
            f"{tiles} tile{'s' if tiles > 1 else ''}, {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    with warnings.catch_warnings():
        if not args.debug:  # "warning: <message>", without the file and line of the library
            warnings.showwarning = _show_warning
        try:
            return _predict(args)
        except (ValueError, TypeError, OSError) as e:  # inputs, the workdir, the output
            if args.debug:
                raise
            print(f"error: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
