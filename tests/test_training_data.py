"""Data: folders with corrupt and grayscale files, deterministic batches, prefetching."""

import numpy as np
import pytest
from PIL import Image

from dssim_mae_jax import training
from dssim_mae_jax.training._data import Prefetcher, center_crop


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    _write(tmp_path / "a.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    _write(tmp_path / "sub" / "gray.png", rng.integers(0, 256, (48, 40), dtype=np.uint8))
    _write(tmp_path / "sub" / "c.jpg", rng.integers(0, 256, (36, 36, 3), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_folder_skips_corrupt_file_with_warning_and_reads_grayscale(tmp_path):
    d = _folder(tmp_path)
    c = training.Config(data_dir=str(d), patch_size=32, num_eval_images=1)
    with pytest.warns(RuntimeWarning, match="broken.png"):
        ds = training.load_dataset(c)
    names = set(ds.train_names) | set(ds.eval_names)
    assert names == {"a.png", "sub/gray.png", "sub/c.jpg"}
    assert len(ds.eval) == 1
    for img in (*ds.train, *ds.eval):
        assert img.dtype == np.float32 and img.shape[-1] == 3
        assert 0.0 <= img.min() and img.max() <= 1.0


def test_folder_without_usable_image_is_a_clear_error(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    c = training.Config(data_dir=str(tmp_path))
    with pytest.warns(RuntimeWarning, match=r"broken\.jpg"):
        with pytest.raises(ValueError, match="no usable PNG/JPEG"):
            training.load_dataset(c)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no usable PNG/JPEG"):
        training.load_dataset(training.Config(data_dir=str(empty)))
    with pytest.raises(ValueError, match="not a directory"):
        training.load_dataset(training.Config(data_dir=str(tmp_path / "missing")))


def test_grayscale_channel_mode(tmp_path):
    d = _folder(tmp_path)
    with pytest.warns(RuntimeWarning):
        ds = training.load_dataset(training.Config(data_dir=str(d), patch_size=32, channels=1))
    assert all(img.shape[-1] == 1 for img in ds.train)


def test_bundled_photographs_load():
    ds = training.load_dataset(training.Config())
    assert len(ds.train) >= 5 and ds.eval_names == ("chelsea", "coffee")
    assert all(img.shape[-1] == 3 and img.dtype == np.float32 for img in ds.train)


def test_batches_are_a_function_of_seed_and_step():
    rng = np.random.default_rng(1)
    images = [rng.random((40, 30, 3), dtype=np.float32), rng.random((20, 50, 3), dtype=np.float32)]
    kw = {"batch_size": 4, "patch_size": 16}
    a = training.sample_batch(images, seed=0, step=5, **kw)
    np.testing.assert_array_equal(a, training.sample_batch(images, seed=0, step=5, **kw))
    assert a.shape == (4, 16, 16, 3)
    assert not np.array_equal(a, training.sample_batch(images, seed=0, step=6, **kw))
    assert not np.array_equal(a, training.sample_batch(images, seed=1, step=5, **kw))


@pytest.mark.parametrize("size", [0, 2])
def test_prefetcher_yields_steps_in_order(size):
    items = list(Prefetcher(lambda s: s * 10, 3, 7, size))
    assert items == [(3, 30), (4, 40), (5, 50), (6, 60)]


def test_prefetcher_reraises_errors():
    def make(step):
        if step == 2:
            raise OSError("disk gone")
        return step

    it = Prefetcher(make, 0, 5, 2)
    with pytest.raises(OSError, match="disk gone"):
        list(it)
    it.close()


def test_center_crop_multiple():
    img = np.zeros((101, 57, 3))
    assert center_crop(img, 64, multiple=4).shape == (64, 56, 3)


def _png_rgb16(path, array):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w, _ = array.shape
    a = array.astype(">u2")
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16_bit_images_keep_their_range(tmp_path):
    import skimage.data

    camera = skimage.data.camera()
    gray16 = camera.astype(np.uint16) * 257  # the same photograph on the 16-bit range
    Image.fromarray(gray16).save(tmp_path / "a16.png")
    with Image.open(tmp_path / "a16.png") as im:
        assert im.mode in ("I;16", "I;16B", "I")
        im.load()
        im = im.copy()
    _png_rgb16(tmp_path / "c_rgb16.png", np.repeat(gray16[:64, :64, None], 3, axis=-1))
    from dssim_mae_jax.training._data import _image_array

    # Big-endian and 32-bit integer modes, as other Pillow versions open 16-bit PNGs.
    for mode in ("I;16B", "I"):
        pil = im.convert("I") if mode == "I" else Image.fromarray(gray16.astype(">u2"))
        assert pil.mode == mode
        arr = _image_array(pil)
        assert arr.dtype == np.uint16, mode
        np.testing.assert_array_equal(arr, gray16)
    c = training.Config(data_dir=str(tmp_path), patch_size=32, num_eval_images=1, channels=1)
    ds = training.load_dataset(c)
    images = dict(zip(ds.train_names + ds.eval_names, ds.train + ds.eval, strict=True))
    expected = camera.mean() / 255.0
    assert abs(expected - 0.506) < 1e-3
    np.testing.assert_allclose(images["a16.png"].mean(), expected, atol=1e-4)
    np.testing.assert_allclose(images["a16.png"][..., 0], camera / 255.0, atol=1e-6)
    # 16-bit RGB: Pillow keeps the high byte of each sample, so colours are right too.
    np.testing.assert_allclose(images["c_rgb16.png"][..., 0], camera[:64, :64] / 255.0, atol=1e-5)


def test_exif_orientation_is_applied(tmp_path):
    yy, xx = np.mgrid[0:40, 0:60]  # smooth, so JPEG keeps it close
    pixels = np.stack([xx * 4, yy * 6, np.full_like(xx, 128)], -1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": how a portrait phone photo is stored
    Image.fromarray(pixels).save(tmp_path / "a.jpg", exif=exif, quality=95)
    Image.fromarray(pixels).save(tmp_path / "b.png")
    c = training.Config(data_dir=str(tmp_path), patch_size=32, num_eval_images=1)
    ds = training.load_dataset(c)
    images = dict(zip(ds.train_names + ds.eval_names, ds.train + ds.eval, strict=True))
    assert images["a.jpg"].shape == (60, 40, 3)  # upright: portrait
    assert images["b.png"].shape == (40, 60, 3)
    upright = np.rot90(pixels, k=-1) / 255.0
    assert np.abs(images["a.jpg"] - upright).mean() < 0.02
    assert np.abs(images["a.jpg"] - np.rot90(pixels, k=1) / 255.0).mean() > 0.1


def test_too_few_images_for_the_held_out_count_warns(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        _write(tmp_path / name, rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    c = training.Config(data_dir=str(tmp_path), patch_size=32, num_eval_images=3)
    with pytest.warns(RuntimeWarning, match=r"3 usable image.*holding out only 2 \(not 3\)"):
        ds = training.load_dataset(c)
    assert ds.train_names == ("a.png",) and ds.eval_names == ("b.png", "c.png")
    # Enough images: no warning.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = training.load_dataset(c.replace(num_eval_images=2))
    assert len(ds.eval) == 2
    # A single image: nothing would be left to train on, so it serves both, with a warning.
    one = tmp_path / "one"
    _write(one / "a.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    with pytest.warns(RuntimeWarning, match="not held out"):
        ds = training.load_dataset(c.replace(data_dir=str(one)))
    assert ds.train_names == ds.eval_names == ("a.png",)
