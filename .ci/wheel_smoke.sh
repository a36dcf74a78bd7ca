#!/usr/bin/env bash
# Builds the sdist and the wheel, installs the wheel (not editable) into a fresh venv and uses
# it there: import, ssim, a loss gradient, `train.py --help` run against the installed wheel.
# Needs `python -m build` and `uv` on PATH (`make wheel-smoke` installs them: the [release] extra).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

rm -rf dist
python -m build --installer uv --outdir dist . > "$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
WHEEL=$(ls dist/*.whl)
SDIST=$(ls dist/*.tar.gz)
echo "wheel-smoke: built $WHEEL and $SDIST"

# One version: dssim_mae_jax/_version.py; the built files and CITATION.cff must agree with it.
VERSION=$(python -c 'exec(open("dssim_mae_jax/_version.py").read()); print(__version__)')
case "$WHEEL" in dist/dssim_mae_jax-"$VERSION"-*) ;; *) echo "wheel-smoke: $WHEEL is not $VERSION"; exit 1;; esac
grep -qx "version: $VERSION" CITATION.cff || { echo "wheel-smoke: CITATION.cff version is not $VERSION"; exit 1; }

# The wheel holds the package and its data only (no tests, experiments, notebooks, docs).
python - "$WHEEL" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
stray = [n for n in names if not n.startswith(("dssim_mae_jax/", "dssim_mae_jax-"))]
assert not stray, f"files outside the package in the wheel: {stray}"
data = [n for n in names if n.startswith("dssim_mae_jax/") and not n.endswith(".py")]
assert data == ["dssim_mae_jax/py.typed"], f"unexpected package data: {data}"
licenses = [n for n in names if n.endswith("/licenses/LICENSE")]
assert licenses, "LICENSE missing from the wheel metadata"
print(f"wheel-smoke: {len(names)} files in the wheel, all under dssim_mae_jax/ or its metadata")
PY

# The sdist carries what a user needs besides the package: train.py, the tests, the changelog.
tar -tzf "$SDIST" | sed 's|^[^/]*/||' > "$WORK/sdist.txt"
for needed in train.py LICENSE README.md CHANGELOG.md CITATION.cff pyproject.toml \
    dssim_mae_jax/_version.py tests/conftest.py; do
  grep -qx "$needed" "$WORK/sdist.txt" || { echo "wheel-smoke: $needed missing from $SDIST"; exit 1; }
done

uv venv -q -p "$(python -c 'import sys; print(sys.executable)')" "$WORK/venv"
uv pip install -q --python "$WORK/venv/bin/python" "$WHEEL[train]"
PY="$WORK/venv/bin/python"

# Run from an empty folder, so that nothing can be imported from this checkout.
mkdir "$WORK/run"
cd "$WORK/run"
"$PY" - "$ROOT" <<'PY'
import sys

import jax
import jax.numpy as jnp

import dssim_mae_jax as dmj
from dssim_mae_jax import training

root = sys.argv[1]
assert not dmj.__file__.startswith(root), f"imported from the checkout: {dmj.__file__}"
assert "site-packages" in dmj.__file__, dmj.__file__
x = jnp.full((2, 32, 32, 3), 0.5)
y = x + 0.1 * jax.random.normal(jax.random.key(0), x.shape)
s = dmj.ssim(x, y, max_val=1.0)
assert s.shape == (2,) and bool(jnp.all((s > 0) & (s < 1))), s
assert float(dmj.ssim(x, x, max_val=1.0)[0]) == 1.0
loss_fn = dmj.make_loss("seed-naive")
g = jax.grad(lambda p: loss_fn(p, x)[0].mean())(y)
assert g.shape == y.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
assert training.Config().steps > 0
print(f"wheel-smoke: dssim_mae_jax {dmj.__version__} from {dmj.__file__}")
print(f"wheel-smoke: ssim {s.tolist()}, loss gradient finite, max |g| {float(jnp.abs(g).max()):.3g}")
PY

# train.py is a script of the checkout / sdist, not part of the wheel: it runs against whatever
# dssim_mae_jax is installed. Run a copy from outside the checkout so the wheel is what it uses.
cp "$ROOT/train.py" "$WORK/run/train.py"
"$PY" train.py --help > "$WORK/help.txt"
grep -q -- "--workdir" "$WORK/help.txt"
echo "wheel-smoke: train.py --help ($(wc -l < "$WORK/help.txt") lines) against the installed wheel"
echo "wheel-smoke: ok"
