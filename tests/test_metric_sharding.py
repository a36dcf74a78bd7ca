"""Metric states across devices and processes, each run in a fresh subprocess.

- A batch sharded over 4 CPU devices (``--xla_force_host_platform_device_count=4``) gives
  the single-device state, with a ``jax.sharding.Mesh`` (Auto axes) and with
  ``jax.make_mesh`` (Explicit axes).
- A dataset split over 2 processes (``jax.distributed`` on CPU, gloo collectives), each
  updating its own state, merged with ``merge_processes``, gives the one-process result.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

_COMMON = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
import dssim_mae_jax as dmj
from dssim_mae_jax.metrics import MAE, MSSSIM, PSNR, SSIM, MultiSigmaSSIM, merge_processes

def pairs(n, h, w, seed):
    rng = np.random.default_rng(seed)
    t = rng.random((n, h, w, 3)).astype(np.float32)
    t = (t + np.roll(t, 1, 1) + np.roll(t, 1, 2)) / 3  # some structure
    p = np.clip(t + rng.normal(0, 0.05, t.shape), 0, 1).astype(np.float32)
    return p, t

STATES = {
    "ssim": (SSIM, {}),
    "ms_ssim": (MSSSIM, {"fit_scales": True}),
    "multi_sigma_ssim": (MultiSigmaSSIM, {"filter_size": 11}),
    "psnr": (PSNR, {}),
    "mae": (MAE, {}),
}
"""

_SHARDED = """
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
assert jax.device_count() == 4, jax.devices()
kind = sys.argv[1]
p, t = pairs(8, 48, 56, 0)
mask = (np.random.default_rng(1).random((8, 48, 56, 1)) > 0.2).astype(np.float32)
if kind == "auto":
    mesh = Mesh(np.array(jax.devices()), ("batch",))
else:
    mesh = jax.make_mesh((4,), ("batch",), axis_types=(jax.sharding.AxisType.Explicit,))
sharding = NamedSharding(mesh, P("batch"))
step = jax.jit(lambda s, a, b, m: s.update(a, b, mask=m))
out = {}
for name, (cls, options) in STATES.items():
    empty = cls.empty(max_val=1.0, keep_values=8, **options)
    single = step(empty, p, t, mask)
    args = [jax.device_put(a, sharding) for a in (p, t, mask)]
    if kind == "auto":
        sharded = step(empty, *args)
    else:
        with jax.set_mesh(mesh):
            sharded = step(empty, *args)
    assert len(args[0].sharding.device_set) == 4
    out[name] = [float(single.compute()), float(sharded.compute()),
                 np.asarray(single.per_image()).tolist(), np.asarray(sharded.per_image()).tolist()]
print("RESULT", json.dumps(out))
"""

_PROCESS = """
pid, port = int(sys.argv[1]), int(sys.argv[2])
images = [pairs(1, 40 + 7 * i, 60 - 5 * i, i) for i in range(6)]
if pid >= 0:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    mine = images[pid * 3 : pid * 3 + 3]
else:
    mine = images
out = {}
for name in ("ssim", "ms_ssim", "psnr"):
    cls, options = STATES[name]
    state = cls.empty(max_val=1.0, keep_values=8, **options)
    state = state.update([p[0] for p, _ in mine], [t[0] for _, t in mine])
    state = merge_processes(state)
    out[name] = [float(state.compute()), np.asarray(state.per_image()).tolist()]
print("RESULT", json.dumps(out))
"""


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout
    return json.loads(lines[-1][len("RESULT ") :])


def _script(body: str) -> str:
    return textwrap.dedent(_COMMON) + textwrap.dedent(body)


def _run_sharded(kind):
    proc = subprocess.run(
        [sys.executable, "-c", _script(_SHARDED), kind],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _result(proc.stdout)


def _check_equal(results):
    # Sharded sums add in another order: up to 2 float32 ulps (PSNR near 26 dB: 1 ulp = 1.9e-6).
    for name, (single, sharded, single_values, sharded_values) in results.items():
        np.testing.assert_allclose(sharded, single, rtol=2.5e-7, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            sharded_values, single_values, rtol=2.5e-7, atol=1e-6, err_msg=name
        )
        assert len(single_values) == 8


def test_batch_sharded_over_four_devices_auto_mesh():
    _check_equal(_run_sharded("auto"))


def test_batch_sharded_over_four_devices_explicit_mesh():
    # jax.make_mesh gives Explicit axes (jax >= 0.7): the per-image scores are gathered to
    # every device before they are numbered and stored (_states._replicated).
    _check_equal(_run_sharded("explicit"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dataset_split_over_two_processes_merges_to_one_process_result():
    script = _script(_PROCESS)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(pid), str(port)],
            env=_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for pid in (0, 1)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    alone = subprocess.run(
        [sys.executable, "-c", script, "-1", "0"],
        env=_env(1),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert alone.returncode == 0, alone.stderr[-4000:]
    want = _result(alone.stdout)
    for out, _ in outs:
        got = _result(out)
        for name, (value, values) in want.items():
            np.testing.assert_allclose(got[name][0], value, rtol=0, atol=1e-6, err_msg=name)
            np.testing.assert_allclose(got[name][1], values, rtol=0, atol=1e-6, err_msg=name)
            assert len(values) == 6


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
