#!/usr/bin/env bash
# Downloads the wheels that benchmarks/device_check.py installs on a GPU machine without
# network (Python 3.12, x86-64 Linux; that machine already has jax, flax, optax, orbax, chex,
# scikit-image, torch, triton and torchmetrics). Run from the repository root on a machine
# with network; the folder (.whl/device, ignored by git) travels with the checkout.
#
#   bash benchmarks/fetch_device_wheels.sh [DEST]
#
# Only the packages missing there and their own small dependencies are fetched; pip skips
# nothing it cannot resolve for the target, so the folder is complete or the script fails.
set -euo pipefail
dest="${1:-.whl/device}"
mkdir -p "$dest"
python="${PYTHON:-python3}"
common=(--dest "$dest" --only-binary=:all: --python-version 3.12 --implementation cp
        --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux_2_28_x86_64 --platform any)
# Without dependencies: these would pull jax, numpy, torch, ... already on the machine.
"$python" -m pip download "${common[@]}" --no-deps \
  "grain>=0.2.18" "dm-pix>=0.4.3" "tensorboardX>=2.6" "pytorch_msssim>=1.0" \
  "array-record" "pytest>=8.0" "pytest-xdist>=3.5" "execnet" "iniconfig" "pluggy" \
  "tqdm>=4.66" "cloudpickle" "etils" "more-itertools" "dm-tree" "pygments" "packaging" \
  "matplotlib>=3.8" "contourpy" "cycler" "fonttools" "kiwisolver" "pyparsing" "pillow>=10.0"
size_kib=$(du -sk "$dest" | cut -f1)
echo "$(ls "$dest" | wc -l) wheels, ${size_kib} KiB in $dest"
if [ "$size_kib" -gt $((64 * 1024)) ]; then
  echo "error: $dest is over 64 MiB; the device run cannot carry it" >&2
  exit 1
fi
