"""predict.py: a run applied to image files (8/16-bit, gray/RGB, any size), and its refusals."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import restore_runs
import scripts
from PIL import Image

from dssim_mae_jax import training
from dssim_mae_jax.training._images import read_photo, write_png

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sr")
    restore_runs.make_run(str(workdir), task="sr", scale=2)
    return str(workdir)


def _inputs(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    arrays = {
        "rgb8.png": rng.integers(0, 256, (61, 83, 3), dtype=np.uint8),
        "gray16.png": rng.integers(0, 65536, (70, 45, 1), dtype=np.uint16),
        "rgb16.png": rng.integers(0, 65536, (33, 40, 3), dtype=np.uint16),
    }
    for name, a in arrays.items():
        write_png(str(folder / name), a)
    Image.fromarray(rng.integers(0, 256, (50, 52), dtype=np.uint8)).save(folder / "gray8.jpg")
    return [str(folder / n) for n in (*arrays, "gray8.jpg")]


def test_predict_writes_each_image_at_its_bit_depth_scaled_and_tiled(sr_run, tmp_path):
    images = _inputs(tmp_path / "in")
    out = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), "--workdir", sr_run, *images,
         "--output", str(tmp_path / "out"), "--max-pixels", "2500"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    restore = training.load_restorer(sr_run)  # untiled: every input has < 2**20 pixels
    for image in images:
        pixels = read_photo(image)
        written_path = tmp_path / "out" / (Path(image).stem + ".png")
        assert f"{image} -> {written_path}" in out.stdout
        written = read_photo(str(written_path))
        h, w, c = pixels.shape
        assert written.shape == (2 * h, 2 * w, c) and written.dtype == pixels.dtype, image
        top = np.iinfo(pixels.dtype).max
        want = np.clip(restore(pixels), 0, 1) * top
        # Tiled (the CLI) against untiled: the same after rounding, but for values that sit
        # on a rounding boundary (1 level).
        assert np.abs(written.astype(np.float64) - want).max() <= 0.5 + 1e-3 * top / 255, image
    assert "6 tiles" in out.stdout  # rgb8.png: 61x83 in tiles of 50x50 with 8-pixel margins
    with Image.open(tmp_path / "out" / "gray16.png") as im:
        assert im.mode == "I;16"


def _cli(argv, capsys):
    predict = scripts.load("predict.py")
    code = predict.main(argv)
    return code, capsys.readouterr().err


def test_bad_inputs_are_one_error_line_with_status_2(sr_run, tmp_path, capsys):
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(rgba)
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    good = tmp_path / "good.png"
    write_png(str(good), np.zeros((8, 8, 3), np.uint8))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text('{"task": "denoise"}')
    out = str(tmp_path / "out")
    cases = {
        "RGBA": ([str(rgba)], sr_run, "4 channels (RGBA); expected 1 (grayscale) or 3 (RGB)"),
        "junk": ([str(junk)], sr_run, "not an image file"),
        "missing": ([str(tmp_path / "nope.png")], sr_run, "not a file"),
        "no run": ([str(good)], str(tmp_path), "no config.json"),
        "no ckpt": ([str(good)], str(empty), "has no checkpoint"),
        "clash": ([str(good), str(good)], sr_run, "would both be written"),
    }
    for name, (images, workdir, message) in cases.items():
        code, err = _cli(["--workdir", workdir, *images, "--output", out], capsys)
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            name,
            err,
        )
    assert not Path(out).exists()  # every refusal came before any output
