#!/usr/bin/env bash
# The dependency floors: installs the lowest versions pyproject.toml declares for the package
# and its [train] extra (uv's --resolution lowest-direct: each direct dependency at its floor,
# what they pull in at the newest version that fits), then runs the core tests there.
# Usage: floors.sh [VENV]   (default .venv-floors; `make floors` passes $(FLOORS_VENV)).
# Needs `uv` on PATH (`make floors` installs it: the [release] extra).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-floors}
PYTHON=${FLOORS_PYTHON:-$(python -c 'import sys; print(sys.executable)')}

# The test tools at the floors the [test] extra declares (read from pyproject.toml).
mapfile -t TOOLS < <(python - <<'PY'
import tomllib

test = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]
for requirement in test:
    if requirement.split(">")[0].split("=")[0] in ("pytest", "pytest-xdist", "dm-pix"):
        print(requirement)
PY
)

rm -rf "$VENV"
uv venv -q -p "$PYTHON" "$VENV"
uv pip install -q --python "$VENV/bin/python" --resolution lowest-direct -e ".[train]" "${TOOLS[@]}"
echo "floors: installed at the declared floors (python $("$VENV/bin/python" -V 2>&1 | cut -d' ' -f2)):"
uv pip list --python "$VENV/bin/python" 2>/dev/null | grep -iE \
  '^(jax|jaxlib|numpy|flax|optax|chex|orbax-checkpoint|scikit-image|pillow|grain|tqdm|tensorboardx|matplotlib|dm-pix|pytest) ' \
  | awk '{printf "  %s==%s\n", $1, $2}'

# The core tests (metrics, losses, presets, jit), the quick training tests, and two short runs
# that save and restore checkpoints (orbax) through the whole loop.
"$VENV/bin/python" -m pytest -q -n 2 -p no:cacheprovider \
  tests/test_api.py tests/test_filters.py tests/test_ssim.py tests/test_ms_ssim.py \
  tests/test_multi_sigma.py tests/test_losses.py tests/test_metrics.py tests/test_presets.py \
  tests/test_balance.py tests/test_jit.py \
  tests/test_training_config.py tests/test_training_schedules.py tests/test_training_models.py \
  "tests/test_training_loop.py::test_run_writes_outputs_switches_phase_and_never_retraces" \
  "tests/test_training_loop.py::test_interrupted_and_resumed_run_matches_uninterrupted"
