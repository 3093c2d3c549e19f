"""Image decoding with limits: sniff the format, check the pixel count from the header, then decode.

Every failure is a :class:`DecodeError` carrying the HTTP status the service answers with:
415 for bytes that are not a supported image format, 413 for images with more pixels than allowed
(checked before any pixel is decoded), 422 for images that claim a supported format but cannot be
decoded (truncated or corrupt).

JPEGs much larger than what the model needs can be decoded at a reduced scale (libjpeg's DCT scaling
by 1/2, 1/4 or 1/8): ``min_side_target`` is the longest side the caller needs; the decoded image
keeps its longest side at least that long, and :class:`DecodedImage` remembers the original size so
results are reported in the original image's pixels.

Pillow reads every header (format, size, EXIF orientation). The pixels of YCbCr and greyscale JPEGs
come straight from libjpeg-turbo through simplejpeg into the RGB array, with libjpeg's default (exact
integer) DCT and upsampling, so they are the same pixels Pillow decodes, without Pillow's 4-byte
internal copy and its repacking (``benchmarks/decode_jpeg.py`` measures both). Every other image,
CMYK and Adobe-RGB JPEGs included, is decoded by Pillow.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow format name for each accepted signature.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
SUPPORTED_MEDIA_TYPES: tuple[str, ...] = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff")


class DecodeError(Exception):
    """A client's image could not be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
_TRANSPOSES = frozenset(range(2, 9))  # orientations exif_transpose acts on (1 = as stored)
# JPEG colour spaces libjpeg-turbo converts to RGB itself; others (CMYK, YCCK, RGB) go through Pillow.
_TURBO_COLORSPACES = frozenset({"YCbCr", "Gray"})


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image: ``pixels`` uint8 [h, w, 3] after EXIF orientation (may be read-only: it can wrap
    Pillow's bytes without a copy); ``source_format`` as sniffed.

    ``original_height``/``original_width`` are the full image's size after EXIF orientation; they
    differ from the pixel array's when the JPEG was decoded at a reduced DCT scale (``scale_denom``
    = 2, 4 or 8; 1 = full size).
    """

    pixels: np.ndarray
    source_format: str
    source_mode: str
    original_height: int = 0
    original_width: int = 0
    scale_denom: int = 1

    def __post_init__(self) -> None:
        if not self.original_height or not self.original_width:
            object.__setattr__(self, "original_height", int(self.pixels.shape[0]))
            object.__setattr__(self, "original_width", int(self.pixels.shape[1]))

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def sniff_format(data: bytes) -> str | None:
    """Pillow format name from the magic bytes, or None when the bytes are no supported image."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def draft_denominator(width: int, height: int, min_side_target: int) -> int:
    """The largest DCT scale denominator (8, 4, 2 or 1) keeping the longest side >= ``min_side_target``.

    libjpeg rounds a scaled side up (``ceil(side / d)``), so that is the size this guarantees.
    """
    longest = max(width, height)
    for denom in (8, 4, 2):
        if -(-longest // denom) >= min_side_target:
            return denom
    return 1


def draft_target(draft_factor: float, model_size: int) -> int | None:
    """The longest side a JPEG must keep when decoded for a ``model_size``-pixel model: ``draft_factor``
    × ``model_size``, rounded up; None (decode at full size) when the factor is 0."""
    return math.ceil(draft_factor * model_size) if draft_factor > 0 else None


def decode_image(data: bytes, max_pixels: int, min_side_target: int | None = None) -> DecodedImage:
    """Decode ``data`` into RGB uint8 [H, W, 3], refusing images over ``max_pixels`` before decoding.

    With ``min_side_target`` a JPEG whose longest side is at least twice that is decoded at the
    largest DCT reduction (1/2, 1/4, 1/8) that keeps its longest side >= ``min_side_target``; other
    formats are always decoded at full size. Grayscale, palette, RGBA/LA (alpha dropped), CMYK,
    YCbCr and 16-bit or float images are converted to 8-bit RGB; 16-bit samples are scaled by
    255/65535. Multi-frame files use their first frame.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise DecodeError(
            415, f"body is not a supported image; expected one of {', '.join(SUPPORTED_MEDIA_TYPES)}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError(
                    413, f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                )
            denom = 1
            if min_side_target and fmt == "JPEG":
                denom = draft_denominator(width, height, min_side_target)
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            mode = image.mode
            pixels = _decode_turbo(data, width, height, denom) if fmt == "JPEG" else None
            if pixels is None:
                if denom > 1:
                    # requests (w // d, h // d): Pillow then picks exactly scale 1/d
                    image.draft(image.mode, (width // denom, height // denom))
                    denom = max(1, round(width / image.size[0]))
                image.load()
                oriented: Image.Image = image
                if orientation in _TRANSPOSES:  # otherwise exif_transpose would only copy the pixels
                    oriented = ImageOps.exif_transpose(image) or image
                pixels, mode = _to_rgb(oriented)
            elif orientation in _TRANSPOSES:
                pixels = np.ascontiguousarray(_ORIENT[orientation](pixels))
            if orientation in _SWAPS_AXES:
                width, height = height, width
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(413, f"image has too many pixels: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DecodeError(422, f"{fmt} image could not be decoded (truncated or corrupt): {exc}") from exc
    return DecodedImage(
        pixels=pixels,
        source_format=fmt,
        source_mode=mode,
        original_height=height,
        original_width=width,
        scale_denom=denom,
    )


# EXIF orientation → the view of the stored [H, W, 3] pixels that displays upright; the same
# transposes as Pillow's ``ImageOps.exif_transpose`` (FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM,
# TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90; Pillow's rotations are counter-clockwise).
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _decode_turbo(data: bytes, width: int, height: int, denom: int) -> np.ndarray | None:
    """RGB uint8 [ceil(h / d), ceil(w / d), 3] of a YCbCr or greyscale JPEG at DCT scale 1/``denom``,
    decoded by libjpeg-turbo straight into the array; None when Pillow should decode it instead.

    That is: other colour spaces, and anything libjpeg-turbo's TurboJPEG API refuses (``strict``:
    its warnings count too). The API refuses some files libjpeg itself decodes (unusual chroma
    sampling factors, for one), so Pillow gives the verdict: the pixels, or a 422 for a truncated or
    corrupt file.
    """
    out_h, out_w = -(-height // denom), -(-width // denom)  # libjpeg rounds scaled sides up
    try:
        if simplejpeg.decode_jpeg_header(data)[2] not in _TURBO_COLORSPACES:
            return None
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=out_h, min_width=out_w, min_factor=denom, strict=True
        )
    except ValueError:
        return None
    if pixels.shape != (out_h, out_w, 3):  # libjpeg-turbo picked another scale: let Pillow decode
        return None
    return pixels


def _to_rgb(image: Image.Image) -> tuple[np.ndarray, str]:
    """uint8 [H, W, 3] RGB from any Pillow mode, and the mode it came from."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and gray.max(initial=0) > 255):
            gray = gray * (255.0 / 65535.0)
        elif mode == "F" and gray.size and gray.min() >= 0.0 and gray.max() <= 1.0:
            gray = gray * 255.0
        gray8 = np.clip(np.rint(gray), 0, 255).astype(np.uint8)  # [H, W]
        return np.repeat(gray8[:, :, None], 3, axis=2), mode
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8), mode  # read-only over Pillow's bytes: no second copy
