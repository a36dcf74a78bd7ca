"""Image files in, integer pixels out: an index of a data folder read from the file headers only,
and a strict decoder.

The index reads only regular files (a FIFO or device named ``x.png`` is skipped, never opened),
takes each image's size, channels and bit depth from its header, and skips images whose
header claims more than ``max_pixels`` pixels. The decoder fails on truncated or incomplete data
instead of returning black pixels, checks the decoded size against the header, and returns
uint8 (uint16 for 16-bit files) arrays: float conversion happens later, on the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import stat
import struct
import warnings
import zlib

import numpy as np

from ._config import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# Bundled scikit-image photographs that load offline (no pooch download). `chelsea` and
# `coffee` are held out for evaluation; `cat` is the same photograph as `chelsea`, so unused.
BUNDLED_TRAIN = (
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "camera",
    "moon",
    "coins",
    "clock",
    "brick",
    "gravel",
)
BUNDLED_EVAL = ("chelsea", "coffee")

# PIL modes of 16-bit grayscale images ("I" is how some PIL versions open 16-bit PNGs).
GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112


class UnusableImageError(ConfigError):
    """A file that cannot be used as training data (the message says why)."""


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image of the index, described from its header (nothing decoded).

    Attributes:
      name: path relative to the data folder (or the scikit-image name of a bundled photo).
      path: absolute path of the file ("" for a bundled photo).
      height, width: upright size in pixels (after the EXIF orientation).
      channels: 1 (gray, with or without alpha) or 3 (colour; alpha dropped).
      bits: 8 or 16 (16-bit grayscale files; Pillow reads 16-bit colour PNGs as 8-bit).
      orientation: the EXIF orientation tag (1 = stored upright).
      size, mtime_ns: file size in bytes and modification time (0 for a bundled photo).
    """

    name: str
    path: str
    height: int
    width: int
    channels: int
    bits: int
    orientation: int = 1
    size: int = 0
    mtime_ns: int = 0

    @property
    def area(self) -> int:
        return self.height * self.width


@dataclasses.dataclass(frozen=True)
class ImageIndex:
    """Training and held-out images of a run."""

    train: tuple[ImageEntry, ...]
    eval: tuple[ImageEntry, ...]

    @property
    def wire_channels(self) -> int:
        """Channels of the integer batches: 1 if every training image is gray, else 3."""
        return 1 if all(e.channels == 1 for e in self.train) else 3

    @property
    def wire_dtype(self) -> np.dtype:
        """uint16 if any training image is 16-bit (8-bit ones are scaled by 257), else uint8."""
        return np.dtype(np.uint16 if any(e.bits == 16 for e in self.train) else np.uint8)


# ------------------------------------------------------------------------------ the index
def candidate_files(data_dir: str) -> tuple[list[str], list[str]]:
    """Files under `data_dir` (recursive, sorted) with an image extension: (regular, other).

    `other` holds the names that are not regular files (FIFOs, devices, sockets, broken
    links): opening a FIFO would block forever.
    """
    if not os.path.isdir(data_dir):
        raise ConfigError(f"config.data_dir: {data_dir!r} is not a directory")
    regular, other = [], []
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        for f in sorted(files):
            if not f.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(root, f)
            try:
                is_regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError:  # a broken symbolic link
                is_regular = False
            (regular if is_regular else other).append(path)
    return sorted(regular), sorted(other)


def _channels_and_bits(mode: str, bands: tuple[str, ...]) -> tuple[int, int]:
    if mode in GRAY16_MODES:
        return 1, 16
    if mode in ("L", "LA"):
        return 1, 8
    return 3, 8  # RGB, RGBA, and everything converted to RGB(A): P, 1, CMYK, YCbCr, ...


def _orientation(im) -> int:
    # Only EXIF already read with the header: asking Pillow for EXIF stored after a PNG's
    # pixel data would decode the whole image.
    if "exif" not in im.info:
        return 1
    value = im.getexif().get(_EXIF_ORIENTATION, 1)
    return value if value in range(1, 9) else 1


def read_header(path: str, *, max_pixels: int, min_side: int = 1) -> ImageEntry:
    """An :class:`ImageEntry` from the header of the image file at `path` (no decoding).

    Raises:
      UnusableImageError: not a regular file, not an image Pillow can open, more than
        `max_pixels` pixels, or a side shorter than `min_side`.
    """
    from PIL import Image

    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnusableImageError("not a regular file")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise UnusableImageError(
                    f"{width}x{height} = {width * height} pixels, more than "
                    f"max_image_pixels={max_pixels}"
                )
            channels, bits = _channels_and_bits(im.mode, im.getbands())
            orientation = _orientation(im)
    except UnusableImageError:
        raise
    except Exception as e:  # any failure to read the header means "not an image"
        raise UnusableImageError(f"{type(e).__name__}: {e}") from e
    if orientation >= 5:  # stored sideways
        width, height = height, width
    if min(width, height) < min_side:
        raise UnusableImageError(f"size {width}x{height} < patch_size {min_side}")
    name = os.path.basename(path)
    return ImageEntry(
        name, os.path.abspath(path), height, width, channels, bits, orientation, st.st_size,
        st.st_mtime_ns,
    )  # fmt: skip


def index_folder(data_dir: str, *, min_side: int, max_pixels: int, num_eval: int) -> ImageIndex:
    """Indexes the PNG/JPEG files under `data_dir` and holds out the last `num_eval`.

    Unusable files are skipped with one ``RuntimeWarning`` naming each and why; the held-out
    images are the last `num_eval` usable ones in sorted order (fewer, with a warning, when
    that would leave nothing to train on).

    Raises:
      ValueError: `data_dir` is not a directory or holds no usable image.
    """
    regular, other = candidate_files(data_dir)
    entries, skipped = [], [f"{p} (not a regular file)" for p in other]
    for p in regular:
        try:
            e = read_header(p, max_pixels=max_pixels, min_side=min_side)
        except (UnusableImageError, OSError) as err:
            skipped.append(f"{p} ({err})")
            continue
        entries.append(dataclasses.replace(e, name=os.path.relpath(p, data_dir)))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unusable image file(s): " + "; ".join(skipped),
            RuntimeWarning,
            stacklevel=2,
        )
    if not entries:
        raise ConfigError(
            f"config.data_dir: no usable PNG/JPEG image (at least {min_side}x{min_side} "
            f"pixels) under {data_dir!r} ({len(regular) + len(other)} candidate file(s))"
        )
    train, held_out = split_held_out(entries, num_eval, data_dir)
    return ImageIndex(tuple(train), tuple(held_out))


def split_held_out(items: list, num_eval: int, data_dir: str) -> tuple[list, list]:
    """(train, held out): the last `num_eval` items are held out, leaving at least one to
    train on (a single item serves both, with a warning)."""
    if len(items) == 1:
        warnings.warn(
            f"only one usable image in {data_dir!r}: it is used for training and "
            "evaluation, so the held-out metrics are not held out",
            RuntimeWarning,
            stacklevel=3,
        )
        return list(items), list(items)
    n_eval = min(num_eval, len(items) - 1)
    if n_eval < num_eval:
        warnings.warn(
            f"{data_dir!r} has {len(items)} usable image(s), fewer than "
            f"num_eval_images + 1 = {num_eval + 1}: holding out only {n_eval} "
            f"(not {num_eval}) so that {len(items) - n_eval} remain for training",
            RuntimeWarning,
            stacklevel=3,
        )
    return list(items[:-n_eval]), list(items[-n_eval:])


def index_bundled() -> ImageIndex:
    """The bundled scikit-image photographs as an index (they are small: read once here)."""

    def entry(name):
        img = _bundled(name)
        return ImageEntry(name, "", img.shape[0], img.shape[1], img.shape[2], 8)

    return ImageIndex(
        tuple(entry(n) for n in BUNDLED_TRAIN),
        tuple(entry(n) for n in BUNDLED_EVAL),
    )


# ---------------------------------------------------------------------------- decoding
def _bundled(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    return img[..., None] if img.ndim == 2 else img[..., :3]


@contextlib.contextmanager
def _strict_pillow():
    """Pillow raises on truncated data (some libraries switch that off process-wide)."""
    from PIL import ImageFile

    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _read_regular(path: str) -> bytes:
    # O_NONBLOCK: if a FIFO replaced the file since indexing, opening it does not block.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnusableImageError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def image_array(im) -> np.ndarray:
    """A Pillow image as uint8 (uint16 for 16-bit gray) [H, W, 1 or 3] (alpha dropped)."""
    if im.mode in GRAY16_MODES:
        arr = np.asarray(im)
        if im.mode == "I":  # int32 holding 16-bit values
            arr = np.clip(arr, 0, 65535)
        # Native-endian uint16, so it is divided by 65535 (not 255).
        arr = arr.astype(np.uint16)
    else:
        # Pillow opens 16-bit RGB(A) PNGs as 8-bit "RGB"/"RGBA" (the high byte of each
        # sample): correct colours at 8-bit precision.
        if im.mode not in ("L", "RGB", "LA", "RGBA"):
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr[..., :-1] if arr.shape[-1] in (2, 4) else arr


# EXIF orientation -> the view of the stored pixels that shows them upright.
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, k=1),
}


def upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """`arr` [H, W, C] as stored -> upright per its EXIF `orientation` (a view, no copy)."""
    return _UPRIGHT[orientation](arr)


def read_image(entry: ImageEntry) -> np.ndarray:
    """Decodes `entry`: uint8 or uint16 [height, width, channels], upright.

    Raises:
      UnusableImageError: truncated or incomplete data, or a file that no longer matches its
        header in the index (changed since indexing).
    """
    if not entry.path:
        return _bundled(entry.name)
    from PIL import Image

    data = _read_regular(entry.path)
    try:
        with _strict_pillow(), Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = image_array(im)
            fmt = im.format
    except Exception as e:  # truncated data and every other decoder failure
        raise UnusableImageError(f"{entry.path}: cannot decode ({type(e).__name__}: {e})") from e
    if fmt == "PNG":
        _check_png_complete(entry.path, data)
    arr = upright(arr, entry.orientation)
    want = (entry.height, entry.width, entry.channels)
    if arr.shape != want or (arr.dtype == np.uint16) != (entry.bits == 16):
        raise UnusableImageError(
            f"{entry.path}: decoded {arr.shape[1]}x{arr.shape[0]}x{arr.shape[2]} {arr.dtype}, "
            f"but the index says {want[1]}x{want[0]}x{want[2]} {entry.bits}-bit "
            "(the file changed since the run started?)"
        )
    return arr


# Adam7 passes: (first column, first row, column step, row step).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _png_raw_size(width, height, depth, colour, interlace) -> int:
    """Bytes of filtered scanlines a complete PNG's image data inflates to."""
    bits = _PNG_SAMPLES[colour] * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            total += h * (1 + -(-w * bits // 8))
    return total


def _check_png_complete(path: str, data: bytes) -> None:
    """Raises if the PNG's image data inflates to fewer bytes than its header needs.

    Pillow stops quietly when the compressed stream ends early and leaves the rest of the
    image black; a header claiming 9000x9000 pixels over a few bytes of data loads "fine".
    """
    pos, header, inflate, got = 8, None, zlib.decompressobj(), 0
    while pos + 8 <= len(data) and not inflate.eof:
        length, tag = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif tag == b"IDAT":
            while body and not inflate.eof:  # in bounded pieces: no full-size buffer
                got += len(inflate.decompress(body, 1 << 20))
                body = inflate.unconsumed_tail
        pos += 12 + length
    if header is None or header[3] not in _PNG_SAMPLES:
        return  # not a plain PNG (Pillow decoded it; nothing more to check here)
    width, height, depth, colour, _, _, interlace = header
    want = _png_raw_size(width, height, depth, colour, interlace)
    if got < want:
        raise UnusableImageError(
            f"{path}: incomplete PNG: its pixel data holds {got} of the {want} bytes its "
            f"{width}x{height} header needs (truncated or corrupt file)"
        )


# ------------------------------------------------------------------ images to restore
# Pillow modes of images with one or three channels (8-bit), and what they become.
_GRAY8_MODES = ("1", "L")
_COLOUR8_MODES = ("RGB", "P", "YCbCr")


def read_photo(path: str) -> np.ndarray:
    """Decodes the image file at `path` for restoration: uint8 or uint16 [H, W, 1 or 3],
    upright (EXIF orientation applied).

    Unlike the training reader, which drops alpha and takes 16-bit colour PNGs at 8-bit
    precision, this reader keeps every bit and refuses what it cannot restore faithfully:
    16-bit colour PNGs are decoded at 16 bits (with `pypng`), and images with an alpha
    channel (or CMYK) are refused.

    Raises:
      UnusableImageError: `path` is not a regular file, not an image, truncated, or has
        other than 1 (gray) or 3 (colour) channels.
    """
    from PIL import Image

    data = _read_regular(path)
    try:
        with _strict_pillow(), Image.open(io.BytesIO(data)) as im:
            mode, fmt, orientation = im.mode, im.format, _orientation(im)
            _check_photo_mode(path, mode)
            if fmt == "PNG" and _png_bit_depth(data) == 16 and mode == "RGB":
                arr = _read_png16_colour(data)
            else:
                im.load()
                if mode in _GRAY8_MODES:
                    im = im.convert("L")
                elif mode in _COLOUR8_MODES:
                    im = im.convert("RGB")
                arr = image_array(im)
    except UnusableImageError:
        raise
    except Image.UnidentifiedImageError:
        raise UnusableImageError(f"{path}: not an image file Pillow can read") from None
    except Exception as e:  # truncated data and every other decoder failure
        raise UnusableImageError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    if fmt == "PNG":
        _check_png_complete(path, data)
    return np.ascontiguousarray(upright(arr, orientation))


def check_photo(path: str) -> None:
    """Checks, from its header only, that `path` is an image `read_photo` can read.

    Raises:
      UnusableImageError: as `read_photo`, except for damage found only when decoding.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise UnusableImageError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            mode = im.mode
    except Image.UnidentifiedImageError:
        raise UnusableImageError(f"{path}: not an image file Pillow can read") from None
    except Exception as e:
        raise UnusableImageError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    _check_photo_mode(path, mode)


def _check_photo_mode(path: str, mode: str) -> None:
    if mode in GRAY16_MODES or mode in _GRAY8_MODES or mode in _COLOUR8_MODES:
        return
    if mode in ("LA", "La", "PA", "RGBA", "RGBa", "CMYK"):
        raise UnusableImageError(
            f"{path}: {len(mode)} channels ({mode}); expected 1 "
            "(grayscale) or 3 (RGB): remove the alpha channel or convert it to RGB"
        )
    raise UnusableImageError(
        f"{path}: unsupported pixel format {mode!r}; expected 8- or 16-bit grayscale or RGB"
    )


def _png_bit_depth(data: bytes) -> int:
    """The bit depth in a PNG's header (the IHDR chunk always comes first)."""
    return data[24] if len(data) > 24 and data[12:16] == b"IHDR" else 0


def _read_png16_colour(data: bytes) -> np.ndarray:
    """A 16-bit RGB PNG at full precision (Pillow keeps only the high byte of each sample)."""
    import png  # pypng

    width, height, rows, info = png.Reader(bytes=data).asDirect()
    arr = np.vstack([np.asarray(r, np.uint16) for r in rows])
    return arr.reshape(height, width, info["planes"])


def write_png(path: str, pixels: np.ndarray) -> None:
    """Writes uint8 or uint16 pixels [H, W, 1 or 3] as a PNG of that bit depth.

    Raises:
      ValueError: another dtype or channel count.
    """
    from PIL import Image

    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim != 3:
        raise ValueError(
            f"pixels: expected uint8/uint16 [H, W, C], got {pixels.dtype} {pixels.shape}"
        )
    if pixels.shape[-1] not in (1, 3):
        raise ValueError(f"pixels: expected 1 or 3 channels, got shape {pixels.shape}")
    h, w, c = pixels.shape
    if pixels.dtype == np.uint16:
        import png  # pypng: Pillow cannot write 16-bit colour

        writer = png.Writer(w, h, bitdepth=16, greyscale=c == 1)
        with open(path, "wb") as f:
            writer.write(f, pixels.reshape(h, w * c))
    else:
        Image.fromarray(pixels[..., 0] if c == 1 else pixels).save(path)
