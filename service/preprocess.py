"""Numpy preprocessing that reproduces torchvision's ``GeneralizedRCNNTransform`` for a square input.

The exported graph expects ``images`` float32 [1, 3, S, S]: the RGB image resized (bilinear, no
antialias, like ``F.interpolate(align_corners=False)``) so its longest side is S, normalized with the
manifest's mean/std on the 0–255 scale and zero-padded at the bottom/right.

:func:`preprocess` works on the image as uint8 rows of ``W × 3`` lanes (each pixel's channels side by
side), so every numpy loop runs along a whole row rather than over 3 channels, and when it shrinks the
image it gathers the source pixels each output pixel reads before converting anything to float32. Its
float32 arithmetic is :func:`resize_bilinear`'s, operation for operation, so the two give the same
bits; the gather plan of an image size is cached (a camera sends one size). When the C extension
``vitbench.service._resize`` was built (setup.py), the same arithmetic runs in one pass straight into
the padded CHW canvas, without the GIL; the numpy path is the fallback, and both give the same bits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np

_native_resize: ModuleType | None
try:  # the one-pass C version, built by setup.py; without it numpy computes the same bits
    from vitbench.service import _resize as _native_resize
except ImportError:  # a build without a C compiler
    _native_resize = None

NATIVE_PREPROCESS = _native_resize is not None  # preprocess uses the C extension


@dataclass(frozen=True)
class Letterbox:
    """Where the original image sits in the S×S canvas.

    ``resized_height``/``resized_width`` are the pixel size after resizing; boxes in the canvas map
    back to the original with ``x * original_width / resized_width`` (torchvision's ``resize_boxes``).
    The original may be larger than the decoded pixels (JPEG DCT-scaled decoding); the ratio then
    covers both steps.
    """

    original_height: int
    original_width: int
    resized_height: int
    resized_width: int
    canvas: int

    @property
    def ratio_x(self) -> float:
        return self.original_width / self.resized_width

    @property
    def ratio_y(self) -> float:
        return self.original_height / self.resized_height


def letterbox_for(height: int, width: int, canvas: int) -> Letterbox:
    """The resize torchvision applies with ``min_size = max_size = canvas``.

    Its scale factor is ``canvas / longest side`` in double precision and each output side is
    ``floor(side * scale)`` (as ``F.interpolate(recompute_scale_factor=True)``), at least 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1 pixels, got {width}x{height}")
    scale = canvas / max(height, width)
    resized_h = min(canvas, max(1, math.floor(height * scale)))
    resized_w = min(canvas, max(1, math.floor(width * scale)))
    return Letterbox(height, width, resized_h, resized_w, canvas)


def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of ``F.interpolate(mode='bilinear', align_corners=False)`` along one axis.

    Returns ``(i0, i1, w1)`` each of shape [out_size]: output j = (1 - w1) * x[i0] + w1 * x[i1].
    """
    scale = np.float32(in_size) / np.float32(out_size)
    return _source_weights(np.arange(out_size, dtype=np.float32), scale, in_size)


def _source_weights(
    positions: np.ndarray, scale: np.ndarray | np.float32, in_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_source_index` for output ``positions`` float32 [N] (whole numbers) with float32 ``scale``
    = in / out (a scalar, or one per position): ``(i0, i1, w1)`` each [N]."""
    src = (positions + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, w1


def resize_bilinear(image: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Resize float32 [H, W] or [H, W, C] like ``F.interpolate(bilinear, align_corners=False)``."""
    r0, r1, rw = _source_index(out_height, image.shape[0])
    c0, c1, cw = _source_index(out_width, image.shape[1])
    extra = (None,) * (image.ndim - 2)
    rw_b = rw[(slice(None), None, *extra)]  # [OH, 1, (1)]
    # gather the two source rows of each output row first, then to float32 (exact for uint8): only
    # 2 × OH rows are converted, not the whole image
    top = image[r0].astype(np.float32, copy=False)  # [OH, W, (C)]
    bottom = image[r1].astype(np.float32, copy=False)
    rows = top * (np.float32(1.0) - rw_b) + bottom * rw_b  # [OH, W, (C)]
    cw_b = cw[(None, slice(None), *extra)]  # [1, OW, (1)]
    out = rows[:, c0] * (np.float32(1.0) - cw_b) + rows[:, c1] * cw_b  # [OH, OW, (C)]
    return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class _ResizePlan:
    """What :func:`resize_bilinear` reads and weighs to resize [H, W, C] to [h, w, C], as gathers on the
    image viewed as rows of W·C lanes. Arrays are read-only (the plan is cached and shared)."""

    rows: tuple[np.ndarray, np.ndarray]  # int64 [h] each: the upper and lower source row
    row_weights: tuple[np.ndarray, np.ndarray]  # float32 [h, 1] each: 1 - wy, wy
    columns: tuple[np.ndarray, np.ndarray]  # int64 [w] each: the left and right source column
    lanes: tuple[np.ndarray, np.ndarray]  # int64 [w·C] each: those columns' lanes
    lane_weights: tuple[np.ndarray, np.ndarray]  # float32 [w·C] each: 1 - wx, wx
    column_weight: np.ndarray  # float32 [w]: wx
    columns_first: bool  # gather the output's columns before converting (when shrinking the width)


@functools.lru_cache(maxsize=32)
def _resize_plan(height: int, width: int, channels: int, out_height: int, out_width: int) -> _ResizePlan:
    r0, r1, rw = _source_index(out_height, height)
    c0, c1, cw = _source_index(out_width, width)
    channel = np.arange(channels)
    one = np.float32(1.0)
    plan = _ResizePlan(
        rows=(r0, r1),
        row_weights=((one - rw)[:, None], rw[:, None]),
        columns=(c0, c1),
        lanes=(
            (c0[:, None] * channels + channel).reshape(-1),
            (c1[:, None] * channels + channel).reshape(-1),
        ),
        lane_weights=(np.repeat(one - cw, channels), np.repeat(cw, channels)),
        column_weight=cw,
        columns_first=out_width < width,
    )
    for pair in (plan.rows, plan.row_weights, plan.columns, plan.lanes, plan.lane_weights):
        for array in pair:
            array.flags.writeable = False
    plan.column_weight.flags.writeable = False
    return plan


def _interpolate_rows(
    top: np.ndarray, bottom: np.ndarray, weights: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """float32 ``top * (1 - wy) + bottom * wy`` of two uint8 [h, L] gathers (in place: no temporaries)."""
    out = top.astype(np.float32)
    out *= weights[0]
    lower = bottom.astype(np.float32)
    lower *= weights[1]
    out += lower
    return out


def _resize_lanes(image: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """uint8 [H, W, C] → float32 [h, w·C]: the same values as ``resize_bilinear(image, h, w)``."""
    height, width, channels = image.shape
    plan = _resize_plan(height, width, channels, out_height, out_width)
    lanes = image.reshape(height, width * channels)  # [H, W·C]
    top, bottom = lanes[plan.rows[0]], lanes[plan.rows[1]]  # uint8 [h, W·C]
    if plan.columns_first:  # interpolate rows only where the output reads them
        left = _interpolate_rows(top[:, plan.lanes[0]], bottom[:, plan.lanes[0]], plan.row_weights)
        right = _interpolate_rows(top[:, plan.lanes[1]], bottom[:, plan.lanes[1]], plan.row_weights)
    else:  # whole float32 pixels at a time: np.take copies C values per index
        rows = _interpolate_rows(top, bottom, plan.row_weights).reshape(out_height, width, channels)
        left = np.take(rows, plan.columns[0], axis=1).reshape(out_height, -1)  # [h, w·C]
        right = np.take(rows, plan.columns[1], axis=1).reshape(out_height, -1)
    left *= plan.lane_weights[0]
    right *= plan.lane_weights[1]
    left += right
    return left


def preprocess(
    pixels: np.ndarray,
    canvas: int,
    pixel_mean: tuple[float, float, float],
    pixel_std: tuple[float, float, float],
    original_size: tuple[int, int] | None = None,
    *,
    native: bool | None = None,
) -> tuple[np.ndarray, Letterbox]:
    """uint8 RGB [h, w, 3] → (float32 [1, 3, S, S] graph input, its :class:`Letterbox`).

    ``original_size`` (H, W) is the full image's size when ``pixels`` is a reduced decode of it (JPEG
    DCT scaling); the letterbox then maps canvas coordinates to the original's pixels. ``native``:
    the C extension (default: when built, ``NATIVE_PREPROCESS``) or numpy; both give the same bits.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {pixels.dtype} of shape {pixels.shape}")
    box = letterbox_for(pixels.shape[0], pixels.shape[1], canvas)
    if original_size is not None and original_size != pixels.shape[:2]:
        box = dataclasses.replace(box, original_height=original_size[0], original_width=original_size[1])
    h, w = box.resized_height, box.resized_width
    pixels = np.ascontiguousarray(pixels)
    batch = np.zeros((1, 3, canvas, canvas), dtype=np.float32)
    if native if native is not None else NATIVE_PREPROCESS:
        if _native_resize is None:
            raise RuntimeError(
                "vitbench.service._resize is not built (no C compiler at install time?); reinstall "
                "vitbench with a C compiler and the Python headers, or use the numpy path"
            )
        height, width, channels = pixels.shape
        plan = _resize_plan(height, width, channels, h, w)
        _native_resize.resize_normalize(
            pixels,
            height,
            width,
            *plan.rows,
            plan.row_weights[1],
            *plan.columns,
            plan.column_weight,
            np.asarray(pixel_mean, dtype=np.float32),
            np.asarray(pixel_std, dtype=np.float32),
            batch,
            canvas,
        )
        return batch, box
    resized = _resize_lanes(pixels, h, w)  # [h, w·3] 0–255
    mean = np.tile(np.asarray(pixel_mean, dtype=np.float32), w)  # [w·3]
    std = np.tile(np.asarray(pixel_std, dtype=np.float32), w)
    resized -= mean
    resized /= std  # [h, w·3] normalized
    batch[0, :, :h, :w] = resized.reshape(h, w, 3).transpose(2, 0, 1)  # [3, h, w]
    return batch, box
