"""Multi-host training on one machine: 2 processes x 2 CPU devices joined by gloo on localhost.

The two-process run must give the held-out metrics of a 1 process x 4 devices run with the
same seed and global batch (within float reduction noise), only process 0 writes the run's
files, and after one process is killed both stop and the same command resumes the run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dssim_mae_jax import training
from dssim_mae_jax.training import _distributed

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 5  # a killed process is noticed after this long

TINY = [
    "--features", "4", "--depth", "3", "--batch-size", "8", "--patch-size", "24",
    "--eval-crop", "48", "--steps", "16", "--log-every", "4", "--checkpoint-every", "4",
    "--num-samples", "1", "--no-progress-bar", "--num-eval-images", "1", "--data-workers", "0",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _start(args, devices, *, process_id=None, port=None):
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, *args]
    if process_id is not None:
        cmd += [
            "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2",
            "--process-id", str(process_id), "--heartbeat-timeout", str(HEARTBEAT_S),
        ]  # fmt: skip
    return subprocess.Popen(
        cmd, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _run_pair(args, timeout=240):
    port = _free_port()
    procs = [_start(args, 2, process_id=i, port=port) for i in (0, 1)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [p.returncode for p in procs], outs


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        yy, xx = np.mgrid[0:64, 0:72]
        base = np.stack([xx * 3 + 20 * i, yy * 3, (xx + yy) * 2], -1) % 256
        noise = rng.integers(0, 40, (64, 72, 3))
        Image.fromarray(((base + noise) % 256).astype(np.uint8)).save(d / f"img{i}.png")
    return d


def _eval(workdir):
    return json.loads((workdir / "eval.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one_process_and_only_process_0_writes(folder, tmp_path):
    data = ["--data-dir", str(folder)]
    one = tmp_path / "one"
    single = _start([*data, "--workdir", str(one)], 4)
    _, err = single.communicate(timeout=240)
    assert single.returncode == 0, err
    two = tmp_path / "two"
    codes, outs = _run_pair([*data, "--workdir", str(two)])
    assert codes == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    a, b = _eval(one), _eval(two)
    assert abs(a["model"]["psnr"] - b["model"]["psnr"]) < 0.01
    assert abs(a["input"]["psnr"] - b["input"]["psnr"]) < 0.01
    assert abs(a["model"]["ssim"] - b["model"]["ssim"]) < 1e-4
    # Process 1 printed no results and wrote nothing of its own.
    assert "held-out metrics" in outs[0][0] and "held-out metrics" not in outs[1][0]
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    switch = training.Config(steps=16).phase_boundaries[1]  # a line ends each phase
    assert [r["step"] for r in records] == sorted({4, 8, 12, 16, switch})  # once each
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["12", "16", "8"]


@pytest.mark.slow
def test_killing_one_process_stops_both_and_the_rerun_resumes(folder, tmp_path):
    workdir = tmp_path / "run"
    args = ["--data-dir", str(folder), "--workdir", str(workdir), "--steps", "48"]
    port = _free_port()
    procs = [_start(args, 2, process_id=i, port=port) for i in (0, 1)]
    deadline = time.monotonic() + 180
    ckpts = workdir / "checkpoints"
    while not (ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())):
        assert time.monotonic() < deadline, procs[0].stderr.read()
        assert procs[0].poll() is None and procs[1].poll() is None
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    procs[0].communicate(timeout=HEARTBEAT_S * 12)  # it stops by itself, not by timeout
    procs[1].communicate(timeout=10)
    assert procs[0].returncode != 0 and procs[1].returncode == -signal.SIGKILL
    assert time.monotonic() - t_kill < HEARTBEAT_S * 12
    saved = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert 0 < saved < 48  # killed mid-run
    codes, outs = _run_pair(args, timeout=400)
    assert codes == [0, 0], outs[0][1][-3000:]
    assert f"resuming {workdir} from step " in outs[0][1]
    resumed_from = int(outs[0][1].split(f"resuming {workdir} from step ")[1].split()[0])
    assert resumed_from >= saved
    assert f"resumed from step {resumed_from} (now at step 48)" in outs[0][0]
    assert set(_eval(workdir)) == {"input", "model", "images", "conventions"}


def test_multi_host_flags_must_come_together():
    with pytest.raises(ValueError, match="give all of --coordinator-address"):
        _distributed.initialize(coordinator_address="127.0.0.1:1234")
    with pytest.raises(ValueError, match="--process-id: got 2"):
        _distributed.initialize(coordinator_address="127.0.0.1:1", num_processes=2, process_id=2)


def test_process_share_splits_the_global_batch():
    assert _distributed.process_share(8) == (0, 8)  # one process here
    assert _distributed.any_process(True) and not _distributed.any_process(False)
