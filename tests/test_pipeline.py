"""The streaming input: the header index, hostile data folders, strict decoding, and batches
that are a pure function of (seed, step) whatever the workers, processes or resume point."""

import contextlib
import dataclasses
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import scripts
from PIL import Image, ImageFile, ImageOps

from dssim_mae_jax import training
from dssim_mae_jax.training import _images, _pipeline
from dssim_mae_jax.training._data import to_channels

CAP = 50_000_000


def _write(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def _random(shape, seed=0, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


def _chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png_with_rows(path, width, height, rows):
    """An 8-bit RGB PNG whose header says `width` x `height` but whose data has `rows` rows."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress((b"\x00" + bytes(3 * width)) * rows, 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )
    return path


def _index(folder, **kw):
    kw = {"min_side": 16, "max_pixels": CAP, "num_eval": 1, **kw}
    return _images.index_folder(str(folder), **kw)


# --------------------------------------------------------------------- hostile folders
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifo_named_like_an_image_is_skipped_without_being_opened(tmp_path):
    _write(tmp_path / "a.png", _random((32, 32, 3)))
    _write(tmp_path / "b.png", _random((32, 32, 3), 1))
    os.mkfifo(tmp_path / "x.png")  # opening it for reading would block forever
    with pytest.warns(RuntimeWarning, match=r"x\.png \(not a regular file\)"):
        index = _index(tmp_path)
    assert [e.name for e in index.train + index.eval] == ["a.png", "b.png"]
    # A file replaced by a FIFO after indexing is rejected by the decoder, not waited on.
    entry = dataclasses.replace(index.train[0], path=str(tmp_path / "x.png"))
    with pytest.raises(_images.UnusableImageError, match="not a regular file"):
        _images.read_image(entry)


def test_header_claiming_more_pixels_than_the_cap_is_skipped_with_the_cap_named(tmp_path):
    _write(tmp_path / "ok.png", _random((32, 32, 3)))
    _write(tmp_path / "ok2.png", _random((32, 32, 3), 1))
    bomb = _png_with_rows(tmp_path / "bomb.png", 9000, 9000, 1)
    assert bomb.stat().st_size < 200  # the 185-byte file
    with pytest.warns(
        RuntimeWarning,
        match=r"bomb\.png \(9000x9000 = 81000000 pixels, more than max_image_pixels=50000000\)",
    ):
        index = _index(tmp_path)
    assert [e.name for e in index.train + index.eval] == ["ok.png", "ok2.png"]
    # The cap is a parameter: an ordinary image above a low cap is skipped the same way.
    with pytest.warns(
        RuntimeWarning, match=r"ok\.png \(32x32 = 1024 pixels, more than max_image_pixels=1000\)"
    ):
        with pytest.raises(ValueError, match="no usable PNG/JPEG"):
            _index(tmp_path, max_pixels=1000)


def test_png_whose_pixel_data_ends_early_is_rejected_not_read_as_black(tmp_path):
    short = _png_with_rows(tmp_path / "short.png", 60, 40, 10)
    full = _png_with_rows(tmp_path / "full.png", 60, 40, 40)
    entry = _images.read_header(str(short), max_pixels=CAP)
    assert (entry.width, entry.height) == (60, 40)
    with pytest.raises(_images.UnusableImageError, match=r"incomplete PNG.*1810 of the 7240 bytes"):
        _images.read_image(entry)
    img = _images.read_image(_images.read_header(str(full), max_pixels=CAP))
    assert img.shape == (40, 60, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_file_is_rejected_even_if_pillow_was_told_to_accept_it(
    tmp_path, fmt, monkeypatch
):
    path = _write(tmp_path / f"a.{fmt}", _random((64, 64, 3)))
    entry = _images.read_header(str(path), max_pixels=CAP)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries do
    entry = dataclasses.replace(entry, size=len(data) // 2)
    with pytest.raises(_images.UnusableImageError, match=r"cannot decode|incomplete PNG"):
        _images.read_image(entry)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_decoded_image_is_checked_against_its_indexed_header(tmp_path):
    path = _write(tmp_path / "a.png", _random((40, 30, 3)))
    entry = _images.read_header(str(path), max_pixels=CAP)
    _write(path, _random((30, 30, 3)))  # replaced after indexing
    with pytest.raises(
        _images.UnusableImageError, match=r"decoded 30x30x3 uint8, but the index says 30x40x3"
    ):
        _images.read_image(entry)


def test_complete_pngs_of_every_mode_pass_the_completeness_check(tmp_path):
    arrays = {
        "L": _random((33, 17)),
        "LA": _random((33, 17, 2)),
        "RGB": _random((33, 17, 3)),
        "RGBA": _random((33, 17, 4)),
        "I;16": _random((33, 17), dtype=np.uint16),
    }
    for mode, arr in arrays.items():
        path = _write(tmp_path / f"{mode}.png", arr)
        _images.read_image(_images.read_header(str(path), max_pixels=CAP))
    for mode in ("P", "1"):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(_random((33, 17, 3))).convert(mode).save(path)
        assert _images.read_image(_images.read_header(str(path), max_pixels=CAP)).shape == (
            33,
            17,
            3,
        )


def test_png_raw_size_counts_adam7_passes():
    # 8x8 RGB: pass sizes (cols x rows) 1x1, 1x1, 2x1, 2x2, 4x2, 4x4, 8x4.
    passes = [(1, 1), (1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]
    want = sum(h * (1 + 3 * w) for w, h in passes)
    assert _images._png_raw_size(8, 8, 8, 2, 1) == want
    assert _images._png_raw_size(8, 8, 8, 2, 0) == 8 * (1 + 24)
    assert _images._png_raw_size(3, 1, 1, 0, 0) == 1 + 1  # 3 bits round up to a byte


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_and_the_index_is_upright(tmp_path, orientation):
    pixels = _random((20, 30, 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _write(tmp_path / "a.png", pixels, exif=exif)
    entry = _images.read_header(str(path), max_pixels=CAP)
    with Image.open(path) as im:
        want = np.asarray(ImageOps.exif_transpose(im))
    assert (entry.height, entry.width) == want.shape[:2]
    np.testing.assert_array_equal(_images.read_image(entry), want)


# ----------------------------------------------------------------------------- batches
def _stream(index, **kw):
    kw = {
        "seed": 3, "batch_size": 8, "patch_size": 16, "start": 0, "stop": 6,
        "wire_channels": index.wire_channels, "wire_dtype": index.wire_dtype, **kw,
    }  # fmt: skip
    stream = _pipeline.PatchStream(index.train, **kw)
    try:
        return dict(stream)
    finally:
        stream.close()


def test_streamed_batches_are_those_of_sample_batch_on_the_bundled_photographs():
    index = _images.index_bundled()
    assert index.train[0].name == "astronaut" and [e.name for e in index.eval] == [
        "chelsea",
        "coffee",
    ]
    images = training.load_dataset(training.Config()).train
    batches = _stream(index, start=4, stop=7, patch_size=48)
    assert sorted(batches) == [4, 5, 6]
    for step, batch in batches.items():
        assert batch.dtype == np.uint8 and batch.shape == (8, 48, 48, 3)
        want = training.sample_batch(images, seed=3, step=step, batch_size=8, patch_size=48)
        # The device divides by 255 as a multiplication: at most one float32 rounding apart.
        np.testing.assert_allclose(_pipeline.to_float(batch, channels=3), want, rtol=0, atol=6e-8)


def _folder(tmp_path, n=7, size=(40, 36)):
    for i in range(n):
        _write(tmp_path / f"img{i}.png", _random((*size, 3), i))
    return tmp_path


def test_batches_do_not_depend_on_the_process_split_or_the_resume_point(tmp_path):
    index = _index(_folder(tmp_path))
    pool = {"pool_images": 3, "pool_steps": 2}  # 6 training images: pools change every 2 steps
    whole = _stream(index, **pool)
    halves = [_stream(index, process_index=i, process_count=2, **pool) for i in (0, 1)]
    resumed = _stream(index, start=3, **pool)
    for step, batch in whole.items():
        np.testing.assert_array_equal(np.concatenate([h[step] for h in halves]), batch)
        if step >= 3:
            np.testing.assert_array_equal(resumed[step], batch)
    assert not np.array_equal(whole[0], whole[1])
    assert not np.array_equal(whole[0], _stream(index, seed=4, **pool)[0])


def test_worker_processes_give_the_batches_of_the_main_process(tmp_path):
    index = _index(_folder(tmp_path))
    pool = {"pool_images": 4, "pool_steps": 2, "stop": 4}
    inline = _stream(index, **pool)
    workers = _stream(index, workers=2, **pool)
    assert sorted(workers) == sorted(inline)
    for step in inline:
        np.testing.assert_array_equal(workers[step], inline[step])


def test_pools_visit_every_image_once_per_pass():
    heights = widths = np.full(10, 64)
    pools = [_pipeline.pool_of(b, num_images=10, pool_images=5, seed=0) for b in range(4)]
    assert sorted(np.concatenate(pools[:2])) == list(range(10))  # pass 1
    assert sorted(np.concatenate(pools[2:])) == list(range(10))  # pass 2, another order
    assert not np.array_equal(np.concatenate(pools[:2]), np.concatenate(pools[2:]))
    for step in range(6):
        plan = _pipeline.plan_batch(
            heights, widths, seed=0, step=step, batch_size=32, patch_size=16, pool_images=5,
            pool_steps=3,
        )  # fmt: skip
        assert set(plan.image) <= set(pools[step // 3])
        assert (plan.top <= 64 - 16).all() and (plan.rot < 4).all() and (plan.flip < 2).all()


def test_worker_cache_holds_at_most_its_share_of_a_pool(tmp_path):
    index = _index(_folder(tmp_path, n=9))
    maker = _pipeline.PatchMaker(
        entries=index.train, seed=0, batch_size=8, patch_size=16, lo=0, count=8, parts=2,
        start=0, pool_images=4, pool_steps=1, wire_channels=3, wire_dtype=np.dtype(np.uint8),
    )  # fmt: skip
    assert maker.cache_size == 2  # ceil(4 pool images / 2 parts)
    for element in range(20):
        maker(element)
        assert len(maker._cache) <= 2


def test_16_bit_and_8_bit_images_share_a_uint16_batch_with_the_same_scale(tmp_path):
    gray16 = _random((40, 40), dtype=np.uint16)
    _write(tmp_path / "a16.png", gray16)
    _write(tmp_path / "b8.png", _random((40, 40), 1))
    _write(tmp_path / "c.png", _random((40, 40), 2))
    index = _index(tmp_path)
    assert index.wire_dtype == np.uint16 and index.wire_channels == 1
    images = [_images.read_image(e) for e in index.train]
    assert images[0].dtype == np.uint16 and images[1].dtype == np.uint8
    batch = _stream(index, batch_size=16, stop=1)[0]
    floats = np.asarray(_pipeline.to_float(batch, channels=1))
    as_float = [to_channels(im, 1) for im in images]
    want = training.sample_batch(as_float, seed=3, step=0, batch_size=16, patch_size=16)
    np.testing.assert_allclose(floats, want, rtol=0, atol=6e-8)


def test_to_float_replicates_gray_and_takes_the_luma_of_colour():
    rgb = _random((2, 5, 5, 3))
    gray = rgb[..., :1]
    np.testing.assert_allclose(
        _pipeline.to_float(gray, channels=3), np.repeat(gray / 255.0, 3, axis=-1), atol=6e-8
    )
    luma = np.asarray(_pipeline.to_float(rgb, channels=1))
    for i in range(2):
        np.testing.assert_allclose(luma[i], to_channels(rgb[i], 1), atol=1e-6)
    with pytest.raises(TypeError, match="batch: expected uint8 or uint16"):
        _pipeline.to_float(rgb / 255.0, channels=3)


def test_index_keeps_the_held_out_split_and_messages_of_load_dataset(tmp_path):
    _folder(tmp_path, n=3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.warns(RuntimeWarning, match="broken.png"):
        index = _index(tmp_path, num_eval=2)
    with pytest.warns(RuntimeWarning, match="broken.png"):
        ds = training.load_dataset(training.Config(data_dir=str(tmp_path), patch_size=16))
    assert tuple(e.name for e in index.train) == ds.train_names
    assert tuple(e.name for e in index.eval) == ds.eval_names
    with pytest.raises(ValueError, match="not a directory"):
        _index(tmp_path / "missing")


def test_decoding_is_bytes_not_floats(tmp_path):
    path = _write(tmp_path / "a.jpg", _random((32, 48, 3)), quality=90)
    img = _images.read_image(_images.read_header(str(path), max_pixels=CAP))
    assert img.dtype == np.uint8 and img.shape == (32, 48, 3)
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        np.testing.assert_array_equal(img, np.asarray(im))


# --------------------------------------------------------------------------- in a run
ROOT = Path(__file__).resolve().parents[1]


def test_data_errors_are_one_line_on_stderr_with_exit_code_2(tmp_path):
    cases = {
        "missing": ["--data-dir", str(tmp_path / "missing")],
        "cap": ["--data-dir", str(_folder(tmp_path / "d", n=2)), "--max-image-pixels", "100"],
    }
    for name, args in cases.items():
        out = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), "--workdir", str(tmp_path / name), *args],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert out.returncode == 2, (name, out.stderr)
        lines = out.stderr.strip().splitlines()
        # Skipped files are one "warning:" line each time; the error is one line.
        assert all(line.startswith(("warning: ", "error: ")) for line in lines), out.stderr
        assert [line.startswith("error: ") for line in lines][-1:] == [True], out.stderr
        assert sum(line.startswith("error: ") for line in lines) == 1
    assert "more than max_image_pixels=100" in out.stderr


def test_bench_input_functions_run_tiny(tmp_path):
    bench = scripts.load("benchmarks/bench_input.py")
    folder = bench.make_folder(str(tmp_path / "imgs"), 4, width=90, height=70)
    names = sorted(os.listdir(folder))
    assert len(names) == 4
    first = np.asarray(Image.open(os.path.join(folder, names[0])))
    assert first.shape == (70, 90, 3)
    assert not np.array_equal(first, np.asarray(Image.open(os.path.join(folder, names[1]))))
    stream = bench.stream_rate(folder, workers=0, steps=2, batch=4, patch=16)
    assert stream["images"] == 4 and stream["patches_per_s"] > 0
    assert bench.in_ram_rate(folder, steps=2, batch=4, patch=16)["images"] == 4


# --------------------------------------------------------------------- orphaned workers
_KILLED_PARENT = """
import sys, time
from dssim_mae_jax.training import _images, _pipeline
index = _images.index_folder(sys.argv[1], min_side=16, max_pixels=10**8, num_eval=1)
stream = _pipeline.PatchStream(
    index.train, wire_channels=3, wire_dtype="uint8", seed=0, batch_size=4, patch_size=16,
    start=0, stop=10**6, workers=2, buffer=2, pool_images=4, pool_steps=2)
next(stream)
print("ready", flush=True)
time.sleep(600)
"""


def _children(pid):
    """Pids of the processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (only its parent's wait is missing)


def _kill_and_wait_for_children(main, ready) -> None:
    """Waits for `ready()`, SIGKILLs `main`, and checks that its Grain workers and resource
    tracker exit on their own (within 20 s)."""
    children = []
    try:
        deadline = time.monotonic() + 300
        while not ready() and main.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert main.poll() is None, main.stderr.read()
        children = _children(main.pid)
        workers = [p for p in children if "spawn_main" in _cmdline(p)]
        trackers = [p for p in children if "resource_tracker" in _cmdline(p)]
        assert len(workers) == 2 and len(trackers) == 1, [_cmdline(p) for p in children]
        main.kill()  # SIGKILL: no cleanup of any kind runs in the main process
        main.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(map(_alive, workers + trackers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [(p, _cmdline(p)) for p in workers + trackers if _alive(p)]
        assert not left, f"still running after the main process was killed: {left}"
    finally:
        for pid in [main.pid, *children]:  # those left by a failure (none when it passes)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        main.wait(timeout=10)
        main.stdout.close()
        main.stderr.close()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads processes from /proc (Linux)")
def test_workers_and_resource_tracker_exit_when_the_main_process_is_killed(tmp_path):
    folder = _folder(tmp_path / "data")
    main = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PARENT, str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    _kill_and_wait_for_children(main, lambda: main.stdout.readline().strip() == "ready")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads processes from /proc (Linux)")
def test_no_orphans_when_a_training_run_is_killed(tmp_path):
    workdir = tmp_path / "w"
    main = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--workdir", str(workdir),
         "--data-dir", str(_folder(tmp_path / "data")), "--data-workers", "2",
         "--steps", "100000", "--features", "4", "--depth", "2", "--batch-size", "2",
         "--patch-size", "16", "--eval-crop", "32", "--num-eval-images", "1",
         "--log-every", "1", "--checkpoint-every", "100000", "--no-progress-bar"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    metrics = workdir / "metrics.jsonl"
    _kill_and_wait_for_children(main, lambda: metrics.exists() and metrics.stat().st_size > 0)


# ------------------------------------------------------------------ images to restore
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3])
def test_photos_round_trip_at_their_bit_depth(tmp_path, dtype, channels):
    pixels = _random((13, 21, channels), dtype=dtype)
    path = str(tmp_path / "p.png")
    _images.write_png(path, pixels)
    back = _images.read_photo(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, pixels)
    with Image.open(path) as im:  # an ordinary PNG of that depth, as other programs read it
        assert im.mode == {(1, np.uint8): "L", (3, np.uint8): "RGB", (1, np.uint16): "I;16",
                           (3, np.uint16): "RGB"}[channels, dtype]  # fmt: skip
        if channels == 3 and dtype == np.uint16:  # Pillow keeps the high byte of each sample
            np.testing.assert_array_equal(np.asarray(im), pixels >> 8)
        else:
            np.testing.assert_array_equal(np.asarray(im).reshape(pixels.shape), pixels)


def test_photos_are_read_upright_and_alpha_or_junk_refused(tmp_path):
    pixels = _random((10, 16, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown after a quarter turn clockwise
    _write(tmp_path / "r.jpg", pixels, exif=exif, quality=100)
    with Image.open(tmp_path / "r.jpg") as im:
        want = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(_images.read_photo(str(tmp_path / "r.jpg")), want)
    _write(tmp_path / "a.png", _random((8, 8, 4)))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    for name, message in (
        ("a.png", r"4 channels \(RGBA\); expected 1"),
        ("junk.png", "not an image"),
    ):
        for read in (_images.check_photo, _images.read_photo):
            with pytest.raises(_images.UnusableImageError, match=message):
                read(str(tmp_path / name))
    with pytest.raises(ValueError, match="pixels: expected 1 or 3 channels"):
        _images.write_png(str(tmp_path / "x.png"), np.zeros((4, 4, 2), np.uint8))
