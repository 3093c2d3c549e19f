"""Instance masks: paste 28×28 probabilities into the image, encode as COCO RLE, PNG or polygons.

Pasting reproduces torchvision's ``paste_masks_in_image`` (1-pixel zero border, box expanded by the
same ratio, integer box, bilinear resize) followed by the ``> 0.5`` threshold used by COCO evaluation.
Encoders take the pasted mask as a crop plus its offset: COCO RLE and polygons are computed from
the crop alone (work proportional to the box, not the image); only PNG builds the full-image mask.
"""

from __future__ import annotations

import base64
import io
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from vitbench.service.preprocess import _source_weights, resize_bilinear

MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class PastedMask:
    """A binary mask of an image of ``height``×``width``: ``crop`` bool [h, w] placed at (``x0``, ``y0``).

    Pixels outside the crop are background. The crop may be empty (h or w = 0) for boxes outside the image.
    """

    crop: np.ndarray
    x0: int
    y0: int
    height: int
    width: int

    def full(self) -> np.ndarray:
        """The whole mask, bool [height, width]."""
        out = np.zeros((self.height, self.width), dtype=bool)
        h, w = self.crop.shape
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.crop
        return out

    @property
    def area(self) -> int:
        return int(self.crop.sum())


def _expanded_box(box: np.ndarray, m: int, padding: int) -> tuple[int, int, int, int]:
    """torchvision's ``expand_boxes`` + ``.to(int64)``: the integer box (x1, y1, x2, y2) the padded
    [M+2p, M+2p] mask is resized onto (inclusive corners)."""
    scale = np.float32(m + 2 * padding) / np.float32(m)
    b = box.astype(np.float32)
    w_half = (b[2] - b[0]) * np.float32(0.5) * scale
    h_half = (b[3] - b[1]) * np.float32(0.5) * scale
    x_c = (b[2] + b[0]) * np.float32(0.5)
    y_c = (b[3] + b[1]) * np.float32(0.5)
    # torchvision casts the expanded box with .to(torch.int64): truncation toward zero.
    return (
        int(np.trunc(x_c - w_half)),
        int(np.trunc(y_c - h_half)),
        int(np.trunc(x_c + w_half)),
        int(np.trunc(y_c + h_half)),
    )


def _padded(probs: np.ndarray, padding: int) -> np.ndarray:
    """``probs`` [M, M] framed by ``padding`` zero pixels: float32 [M+2p, M+2p]."""
    m = probs.shape[-1]
    padded = np.zeros((m + 2 * padding, m + 2 * padding), dtype=np.float32)
    padded[padding:-padding, padding:-padding] = probs
    return padded


def paste_mask(probs: np.ndarray, box: np.ndarray, height: int, width: int, padding: int = 1) -> PastedMask:
    """Paste mask probabilities ``probs`` [M, M] for ``box`` (x1, y1, x2, y2, image pixels) into an image.

    Same arithmetic as ``torchvision.models.detection.roi_heads.paste_masks_in_image``.
    """
    padded = _padded(probs, padding)  # [M+2p, M+2p]
    ex1, ey1, ex2, ey2 = _expanded_box(box, probs.shape[-1], padding)
    w = max(ex2 - ex1 + 1, 1)
    h = max(ey2 - ey1 + 1, 1)
    resized = resize_bilinear(padded, h, w)  # [h, w]
    x_0, x_1 = max(ex1, 0), min(ex2 + 1, width)
    y_0, y_1 = max(ey1, 0), min(ey2 + 1, height)
    if x_1 <= x_0 or y_1 <= y_0:
        return PastedMask(np.zeros((0, 0), dtype=bool), 0, 0, height, width)
    crop = resized[y_0 - ey1 : y_1 - ey1, x_0 - ex1 : x_1 - ex1] > MASK_THRESHOLD  # [y1-y0, x1-x0]
    return PastedMask(crop, x_0, y_0, height, width)


def rle_counts(mask: PastedMask) -> np.ndarray:
    """Uncompressed COCO RLE counts of the full mask, computed from the crop alone (O(crop) work).

    COCO RLE runs over the image in column-major order and alternates background/foreground runs,
    starting with background (a leading 0 when pixel (0, 0) is set); the last count is the final
    run (pycocotools' ``rleEncode``). The foreground runs of each crop column are shifted to their
    full-image offsets ``(x0 + c) * H + y0 + r``; runs that touch across a column boundary (crop
    spanning the image's full height) are merged. Returns int64 [K].
    """
    total = mask.height * mask.width
    h, w = mask.crop.shape
    if h == 0 or w == 0 or not mask.crop.any():
        return np.array([total], dtype=np.int64)
    columns = np.zeros((w, h + 2), dtype=np.int8)  # [w, h+2]: each crop column framed by background
    columns[:, 1:-1] = mask.crop.T
    change_c, change_r = np.nonzero(columns[:, 1:] != columns[:, :-1])  # [w, h+1] → 2R changes
    # row-major over [w, ·] is column-major over the crop; in each column the changes alternate
    # start (first set pixel) / end (one past the last), since every column begins and ends unset.
    offsets = (mask.x0 + change_c).astype(np.int64) * mask.height + mask.y0 + change_r  # [2R]
    return _counts_from_changes(offsets, total)


def _counts_from_changes(offsets: np.ndarray, total: int) -> np.ndarray:
    """COCO RLE counts int64 [K] from the full-image column-major ``offsets`` [2R] where runs start and
    end (start, end, start, end, ...; end = one past the run's last pixel), in increasing order."""
    starts, ends = offsets[0::2], offsets[1::2]  # [R], [R]
    touching = ends[:-1] == starts[1:]  # run i ends where run i+1 begins: one run
    if touching.any():
        starts = np.concatenate([starts[:1], starts[1:][~touching]])
        ends = np.concatenate([ends[:-1][~touching], ends[-1:]])
    edges = np.empty(2 * len(starts) + 2, dtype=np.int64)  # 0, s0, e0, s1, e1, ..., total
    edges[0], edges[-1] = 0, total
    edges[1:-1:2], edges[2:-1:2] = starts, ends
    counts = np.diff(edges)
    return counts[:-1] if counts[-1] == 0 else counts  # no empty background run after the last object


@dataclass
class _Scratch:
    """Work buffers of one thread, reused from mask to mask (fresh large arrays cost page faults)."""

    left: np.ndarray  # float32: the interpolated crop
    right: np.ndarray  # float32: its right-hand interpolation term
    framed: np.ndarray  # bool: the thresholded crop, columns framed by background
    changed: np.ndarray  # bool: where neighbours in ``framed`` differ


_SCRATCH = threading.local()
_SCRATCH_KEEP_PIXELS = 4_000_000  # larger crops get one-off buffers: a thread keeps at most ~45 MB


def _scratch(pixels: int, framed: int) -> _Scratch:
    """Buffers for a crop of ``pixels`` values and ``framed`` framed pixels (this thread's, if small)."""
    if pixels > _SCRATCH_KEEP_PIXELS:
        return _Scratch(
            np.empty(pixels, np.float32),
            np.empty(pixels, np.float32),
            np.empty(framed, bool),
            np.empty(framed, bool),
        )
    scratch: _Scratch | None = getattr(_SCRATCH, "buffers", None)
    if scratch is None or len(scratch.framed) < framed:
        grown = max(framed, min(2 * len(scratch.framed) if scratch is not None else 0, _SCRATCH_KEEP_PIXELS))
        scratch = _Scratch(
            np.empty(grown, np.float32),
            np.empty(grown, np.float32),
            np.empty(grown, bool),
            np.empty(grown, bool),
        )
        _SCRATCH.buffers = scratch
    return scratch


def _expanded_boxes(boxes: np.ndarray, m: int, padding: int) -> np.ndarray:
    """:func:`_expanded_box` of ``boxes`` [K, 4] at once (the same float32 operations): int64 [4, K]."""
    scale = np.float32(m + 2 * padding) / np.float32(m)
    b = boxes.astype(np.float32).reshape(-1, 4)
    w_half = (b[:, 2] - b[:, 0]) * np.float32(0.5) * scale
    h_half = (b[:, 3] - b[:, 1]) * np.float32(0.5) * scale
    x_c = (b[:, 2] + b[:, 0]) * np.float32(0.5)
    y_c = (b[:, 3] + b[:, 1]) * np.float32(0.5)
    corners = np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half])  # [4, K]
    return np.trunc(corners).astype(np.int64)  # torchvision's .to(torch.int64): toward zero


def _visible_weights(
    first: np.ndarray, counts: np.ndarray, out_sizes: np.ndarray, in_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolation indices/weights (as ``preprocess._source_index``) of several masks' visible output rows
    (or columns), concatenated: mask k needs ``counts[k]`` of its ``out_sizes[k]`` outputs from
    ``first[k]`` on. Returns ``(i0, i1, w1)`` each [sum(counts)]."""
    segment = np.repeat(np.arange(len(counts)), counts)  # [N]: the mask of each output
    starts = np.cumsum(counts) - counts
    positions = (np.arange(int(counts.sum())) - starts[segment] + first[segment]).astype(np.float32)
    scales = np.float32(in_size) / out_sizes.astype(np.float32)  # [K] float32, as the scalar division
    return _source_weights(positions, scales[segment], in_size)


def rle_counts_many(
    probs: np.ndarray, boxes: np.ndarray, height: int, width: int, padding: int = 1
) -> list[np.ndarray]:
    """``[rle_counts(paste_mask(p, b, height, width, padding)) for p, b in zip(probs, boxes)]`` in fewer,
    vectorized steps, for ``probs`` [K, M, M] and ``boxes`` [K, 4] (image pixels).

    Same float32 arithmetic as :func:`paste_mask` (so the same pixels), but only for the part of each
    box inside the image: the expanded boxes and the row interpolation of all masks are computed at
    once; then each mask is interpolated column-major (the order COCO RLE runs in) and thresholded
    straight into a buffer whose columns are framed by background, so the run boundaries of all its
    columns come from one comparison of neighbours. Returns int64 counts [R_k] per mask.
    """
    total = height * width
    k_all = len(probs)
    if k_all == 0:
        return []
    m = probs.shape[-1]
    p = m + 2 * padding
    ex1, ey1, ex2, ey2 = _expanded_boxes(boxes, m, padding)  # [K] each, inclusive corners
    x_0, x_1 = np.maximum(ex1, 0), np.minimum(ex2 + 1, width)
    y_0, y_1 = np.maximum(ey1, 0), np.minimum(ey2 + 1, height)
    hv, wv = y_1 - y_0, x_1 - x_0  # [K] visible crop rows, columns
    live = np.flatnonzero((hv > 0) & (wv > 0))  # [L]
    out: list[np.ndarray] = [np.array([total], dtype=np.int64)] * k_all
    if not live.size:
        return out
    padded = np.zeros((len(live), p, p), dtype=np.float32)  # [L, P, P]
    padded[:, padding:-padding, padding:-padding] = probs[live]
    # rows of all live masks: [sum hv, P], as resize_bilinear's first step
    r0, r1, rw = _visible_weights((y_0 - ey1)[live], hv[live], np.maximum(ey2 - ey1 + 1, 1)[live], p)
    owner = np.repeat(np.arange(len(live)), hv[live])
    rw_b = rw[:, None]
    rows = padded[owner, r0] * (np.float32(1.0) - rw_b) + padded[owner, r1] * rw_b  # [sum hv, P]
    c0s, c1s, cws = _visible_weights((x_0 - ex1)[live], wv[live], np.maximum(ex2 - ex1 + 1, 1)[live], p)
    row_end = np.cumsum(hv[live]).tolist()
    col_end = np.cumsum(wv[live]).tolist()
    for j, k in enumerate(live.tolist()):
        h, w = int(hv[k]), int(wv[k])
        r_stop, c_stop = row_end[j], col_end[j]
        cols = np.ascontiguousarray(rows[r_stop - h : r_stop].T)  # [P, h]
        c0, c1 = c0s[c_stop - w : c_stop], c1s[c_stop - w : c_stop]
        cw_b = cws[c_stop - w : c_stop, None]  # [w, 1]
        scratch = _scratch(w * h, 1 + w * (h + 1))
        values = scratch.left[: w * h].reshape(w, h)  # the crop transposed, i.e. column-major
        right = scratch.right[: w * h].reshape(w, h)
        np.take(cols, c0, axis=0, out=values, mode="clip")  # in range: "clip" skips a copy
        values *= np.float32(1.0) - cw_b
        np.take(cols, c1, axis=0, out=right, mode="clip")
        right *= cw_b
        values += right
        # [1 + w * (h + 1)]: one background pixel, then each crop column followed by one background pixel
        framed = scratch.framed[: 1 + w * (h + 1)]
        framed[0] = False
        columns = framed[1:].reshape(w, h + 1)
        columns[:, h] = False
        np.greater(values, MASK_THRESHOLD, out=columns[:, :h])
        changed = scratch.changed[: w * (h + 1)]
        np.not_equal(framed[1:], framed[:-1], out=changed)
        change = np.flatnonzero(changed)  # [2R] positions q in the framed columns
        if change.size:
            column, row = np.divmod(change, h + 1)  # each column starts and ends unset: start/end alternate
            out[k] = _counts_from_changes((int(x_0[k]) + column) * height + int(y_0[k]) + row, total)
    return out


def compress_counts(counts: np.ndarray, height: int, width: int) -> str:
    """COCO's compressed RLE string of uncompressed ``counts`` [K] of an ``height``×``width`` mask.

    pycocotools compresses (its C ``rleToString``); the counts go in as a uint32 array, as pycocotools
    stores them, which spares it converting a Python list.
    """
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.astype(np.uint32)}, height, width)
    return str(rle["counts"].decode("ascii"))


def encode_rle(mask: PastedMask) -> dict[str, Any]:
    """COCO compressed RLE of the full mask (column-major, as pycocotools).

    Returns ``{"size": [H, W], "counts": str}``, byte-identical to ``pycocotools.mask.encode`` of
    the full H×W mask, which is never built: the counts come from the crop (:func:`rle_counts`) and
    are compressed by :func:`compress_counts`.
    """
    return {
        "size": [mask.height, mask.width],
        "counts": compress_counts(rle_counts(mask), mask.height, mask.width),
    }


def encode_rle_many(probs: np.ndarray, boxes: np.ndarray, height: int, width: int) -> list[dict[str, Any]]:
    """``[encode_rle(paste_mask(p, b, height, width)) for p, b in zip(probs, boxes)]`` for ``probs``
    [K, M, M] and ``boxes`` [K, 4] (image pixels), without the intermediate crops (faster)."""
    if len(probs) != len(boxes):
        raise ValueError(f"{len(probs)} masks but {len(boxes)} boxes")
    return [
        {"size": [height, width], "counts": compress_counts(counts, height, width)}
        for counts in rle_counts_many(probs, boxes, height, width)
    ]


def encode_png(mask: PastedMask) -> dict[str, Any]:
    """1-bit PNG of the full mask, base64: ``{"size": [H, W], "data": str}`` (white = object)."""
    image = Image.fromarray(mask.full()).convert("1")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return {"size": [mask.height, mask.width], "data": base64.b64encode(buffer.getvalue()).decode("ascii")}


def encode_polygon(mask: PastedMask, tolerance: float = 1.0) -> dict[str, Any]:
    """Polygons as COCO segmentation lists ``[[x1, y1, x2, y2, ...], ...]`` in image pixel coordinates.

    Outlines are traced with contourpy at the 0.5 level around pixel centres (shifted by +0.5 to
    COCO's continuous coordinates) and simplified with Ramer–Douglas–Peucker at ``tolerance`` pixels.
    Holes come back as separate rings; rings with fewer than 3 points are dropped.
    """
    import contourpy

    polygons: list[list[float]] = []
    if mask.crop.size and mask.crop.any():
        padded = np.pad(mask.crop.astype(np.float64), 1)  # [h+2, w+2], closes rings at the crop edge
        generator = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate)
        for ring in generator.lines(0.5):
            points = _simplify(np.asarray(ring, dtype=np.float64), tolerance)  # [K, 2] (x, y)
            if len(points) < 3:
                continue
            points = points + np.array([mask.x0 - 1 + 0.5, mask.y0 - 1 + 0.5])
            polygons.append([round(float(v), 2) for v in points.reshape(-1)])
    return {"size": [mask.height, mask.width], "polygons": polygons}


def _simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer–Douglas–Peucker on a closed ring ``points`` [K, 2]; returns the kept points [K', 2]."""
    if len(points) > 1 and np.allclose(points[0], points[-1]):
        points = points[:-1]
    if len(points) <= 3:
        return points
    keep = np.zeros(len(points), dtype=bool)
    far = int(np.argmax(np.linalg.norm(points - points[0], axis=1)))
    keep[0] = keep[far] = True
    stack = [(0, far), (far, len(points))]
    while stack:
        start, end = stack.pop()
        idx = np.arange(start + 1, end)
        if idx.size == 0:
            continue
        a, b = points[start], points[end % len(points)]
        seg = b - a
        seg_len = float(np.hypot(seg[0], seg[1]))
        rel = points[idx] - a
        if seg_len == 0.0:
            dist = np.hypot(rel[:, 0], rel[:, 1])
        else:
            dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / seg_len
        worst = int(np.argmax(dist))
        if dist[worst] > tolerance:
            split = int(idx[worst])
            keep[split] = True
            stack.append((start, split))
            stack.append((split, end))
    return points[keep]
