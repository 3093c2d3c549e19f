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
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from vitbench.service.preprocess import _source_weights, resize_bilinear

_native_rle: ModuleType | None
try:  # the C encoder, built by setup.py; without it the numpy path gives the same strings
    from vitbench.service import _rle as _native_rle
except ImportError:  # a build without a C compiler
    _native_rle = None

NATIVE_RLE = _native_rle is not None  # encode_rle_many uses the C encoder

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
    [M+2p, M+2p] mask is resized onto (inclusive corners); :func:`_expanded_boxes` of one box."""
    x1, y1, x2, y2 = (int(v) for v in _expanded_boxes(box, m, padding)[:, 0])
    return x1, y1, x2, y2


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


# Pixels whose linear value (see rle_counts_many) lies within RLE_BAND × max(1, max |probability|) of the
# threshold are recomputed with paste_mask's float32 operations: paste_mask's value differs from the
# linear one by under 6.5 float32 unit roundoffs (3.9e-7) of that scale, a 10× margin.
RLE_BAND = 4e-6
# Bound on the error of a crossing's row estimate, in keys (source rows) per source row of the padded
# mask: the float32 keys and the float32 inverse round at most 7·P + 3 times by a unit roundoff, 2**-24.
_ESTIMATE_KEYS = 1.25 * 7 * 2.0**-24

_SCRATCH = threading.local()
_SCRATCH_KEEP = 1_000_000  # elements: larger work arrays are one-off (a thread keeps at most ~65 MB)


def _scratch(name: str, size: int, dtype: type) -> np.ndarray:
    """A work array [size] of ``dtype``, reused by this thread from call to call (fresh large arrays cost
    page faults comparable to the arithmetic on them); a one-off array above ``_SCRATCH_KEEP``."""
    if size > _SCRATCH_KEEP:
        return np.empty(size, dtype)
    kept: dict[tuple[str, type], np.ndarray] | None = getattr(_SCRATCH, "arrays", None)
    if kept is None:
        kept = _SCRATCH.arrays = {}
    array = kept.get((name, dtype))
    if array is None or len(array) < size:
        grown = max(size, min(2 * len(array) if array is not None else 0, _SCRATCH_KEEP))
        array = kept[name, dtype] = np.empty(grown, dtype)
    return array[:size]


@dataclass(frozen=True)
class _Crops:
    """The visible crops of L masks, their NC visible columns concatenated (mask by mask, left to right)."""

    padded: np.ndarray  # float32 [L, P, P]: the masks framed by zeros
    first_row: np.ndarray  # int64 [L]: the first visible row of each resized box
    rows: np.ndarray  # int64 [L]: its visible rows
    out_h: np.ndarray  # int64 [L]: its rows in all
    col_mask: np.ndarray  # int64 [NC]: the mask of each column
    c0: np.ndarray  # int64 [NC]: paste_mask's interpolation of each column: source columns c0, c1,
    c1: np.ndarray  # int64 [NC]
    cw: np.ndarray  # float32 [NC]: and the weight of c1
    top: np.ndarray  # int64 [NC]: column-major image offset of its first visible pixel, + (H·W + 1)·mask


def rle_counts_many(
    probs: np.ndarray, boxes: np.ndarray, height: int, width: int, padding: int = 1
) -> list[np.ndarray]:
    """``[rle_counts(paste_mask(p, b, height, width, padding)) for p, b in zip(probs, boxes)]`` for
    ``probs`` [K, M, M] and ``boxes`` [K, 4] (image pixels): identical output, with work proportional to
    the crops' columns and runs rather than their pixels. Returns int64 counts [R_k] per mask.

    Along one crop column, paste_mask's value at row y is, in exact arithmetic, the linear
    interpolation at ``key = src(y)`` (paste_mask's float32 source row, non-decreasing in y) of the
    column's knots ``C[i] = P[i, c0]·fl(1 - cw) + P[i, c1]·cw`` (P the padded mask). So the column's
    runs start and end where that polyline crosses 0.5: in each segment whose (float32) knots lie on
    either side, at the first row whose key reaches the crossing, the ceiling of key(y)'s affine
    inverse (:func:`_estimate_rows`). paste_mask's float32 value is within 6.5 float32 roundoffs of the
    polyline, so only pixels where the polyline is within ``RLE_BAND`` of 0.5, and rows within the
    inverse's error of a crossing, can be decided differently; they are found next to the crossings
    and to knots near 0.5, recomputed with paste_mask's float32 operations and flipped where they
    disagree (:func:`_band_flips`). Change points are kept where they occur an odd number of times,
    which also drops empty runs and merges runs that touch across columns.
    """
    total = height * width
    out: list[np.ndarray] = [np.array([total], dtype=np.int64)] * len(probs)
    visible = _visible_crops(probs, boxes, height, width, padding)
    if visible is None:
        return out
    if visible.tol is None:  # NaN/inf or absurd values: pixel by pixel
        for k in visible.live.tolist():
            out[k] = rle_counts(paste_mask(probs[k], boxes[k], height, width, padding))
        return out
    live, x_0, wl, p = visible.live, visible.x_0, visible.cols, visible.padded.shape[-1]
    c0, c1, cw = _visible_weights(visible.first_col, wl, visible.out_w, p)  # [NC]
    col_mask = np.repeat(np.arange(len(live)), wl)  # [NC]
    col_x = x_0[col_mask] + np.arange(len(c0)) - (np.cumsum(wl) - wl)[col_mask]  # [NC] image column
    crops = _Crops(
        padded=visible.padded,
        first_row=visible.first_row,
        rows=visible.rows,
        out_h=visible.out_h,
        col_mask=col_mask,
        c0=c0,
        c1=c1,
        cw=cw,
        top=col_x * height + (visible.y_0 + np.arange(len(live)) * (total + 1))[col_mask],
    )
    change, toggles = _change_points(crops, visible.tol)
    for k, counts in zip(live.tolist(), _counts(change, toggles, len(live), total), strict=True):
        if counts is not None:
            out[k] = counts
    return out


@dataclass(frozen=True)
class _Visible:
    """The L masks (of K) whose pasted crop is not empty: what paste_mask would resize, and where."""

    live: np.ndarray  # int64 [L]: their indices among the K masks
    padded: np.ndarray  # float32 [L, P, P]: the masks framed by zeros
    tol: float | None  # RLE_BAND × max(1, max |P|); None for NaN/inf or absurd values
    x_0: np.ndarray  # int64 [L]: the image column and row of the visible crop's top-left pixel
    y_0: np.ndarray
    rows: np.ndarray  # int64 [L]: the visible crop's rows and columns
    cols: np.ndarray
    first_row: np.ndarray  # int64 [L]: the resized box's first visible row and column
    first_col: np.ndarray
    out_h: np.ndarray  # int64 [L]: the resized box's rows and columns in all
    out_w: np.ndarray


def _visible_crops(
    probs: np.ndarray, boxes: np.ndarray, height: int, width: int, padding: int
) -> _Visible | None:
    """paste_mask's geometry for ``probs`` [K, M, M] and ``boxes`` [K, 4] at once; None when no crop
    is visible."""
    if padding < 1:
        raise ValueError(f"padding must be at least 1 pixel, got {padding}")
    if len(probs) == 0:
        return None
    m = probs.shape[-1]
    p = m + 2 * padding
    ex1, ey1, ex2, ey2 = _expanded_boxes(boxes, m, padding)  # [K] each, inclusive corners
    x_0, x_1 = np.maximum(ex1, 0), np.minimum(ex2 + 1, width)
    y_0, y_1 = np.maximum(ey1, 0), np.minimum(ey2 + 1, height)
    hv, wv = y_1 - y_0, x_1 - x_0  # [K] visible crop rows, columns
    live = np.flatnonzero((hv > 0) & (wv > 0))  # [L]
    if not live.size:
        return None
    padded = np.zeros((len(live), p, p), dtype=np.float32)  # [L, P, P]
    padded[:, padding : padding + m, padding : padding + m] = probs[live]
    magnitude = float(np.abs(padded).max())
    tol = RLE_BAND * max(1.0, magnitude)
    return _Visible(
        live=live,
        padded=padded,
        tol=tol if np.isfinite(magnitude) and tol < 0.25 else None,
        x_0=x_0[live],
        y_0=y_0[live],
        rows=hv[live],
        cols=wv[live],
        first_row=(y_0 - ey1)[live],
        first_col=(x_0 - ex1)[live],
        out_h=np.maximum(ey2 - ey1 + 1, 1)[live],
        out_w=np.maximum(ex2 - ex1 + 1, 1)[live],
    )


def rle_strings_native(
    probs: np.ndarray, boxes: np.ndarray, height: int, width: int, padding: int = 1
) -> list[str]:
    """``[compress_counts(c, height, width) for c in rle_counts_many(probs, boxes, height, width,
    padding)]`` from the C encoder (``vitbench.service._rle``, built by setup.py): the same strings.

    The C code decides each crop column's rows by source row: all at once where both knots lie
    beyond 0.5 ± ``RLE_BAND``, one by one with paste_mask's float32 operations otherwise; it holds no
    GIL while it runs. Raises RuntimeError when the extension was not built.
    """
    if _native_rle is None:
        raise RuntimeError(
            "vitbench.service._rle is not built (no C compiler at install time?); reinstall vitbench "
            "with a C compiler and the Python headers, or use the numpy path"
        )
    visible = _visible_crops(probs, boxes, height, width, padding)
    live = visible.live.tolist() if visible is not None else []
    # masks whose crop lies outside the image are all background (compressed once, when there are any)
    empty = (
        compress_counts(np.array([height * width], np.int64), height, width) if len(live) < len(probs) else ""
    )
    out = [empty] * len(probs)
    if visible is None:
        return out
    if visible.tol is None:  # NaN/inf or absurd values: pixel by pixel
        for k in live:
            out[k] = encode_rle(paste_mask(probs[k], boxes[k], height, width, padding))["counts"]
        return out
    p = visible.padded.shape[-1]
    ya, _, wy = _visible_weights(visible.first_row, visible.rows, visible.out_h, p)  # [NR] each
    xa, _, wx = _visible_weights(visible.first_col, visible.cols, visible.out_w, p)  # [NC] each
    meta = np.stack([visible.x_0, visible.y_0, visible.rows, visible.cols], axis=1).astype(np.int64)  # [L, 4]
    strings = _native_rle.encode(visible.padded, p, meta, ya, wy, xa, wx, visible.tol, height, width)
    for k, text in zip(live, strings, strict=True):
        out[k] = text
    return out


def _change_points(crops: _Crops, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Where the crops' runs start and end: ``(change, toggles)``. ``change`` float64 [E] are the
    crossings' offsets (sorted; empty runs and runs touching across columns give a value twice);
    ``toggles`` (sorted, usually empty) the offsets that also change state, as pairs around each pixel
    the crossings decide wrongly."""
    n_col, p = len(crops.c0), crops.padded.shape[-1]
    # knots [NC, P] of every column, as paste_mask's row interpolation followed by its column step
    across = np.ascontiguousarray(crops.padded.transpose(0, 2, 1)).reshape(-1, p)  # [L·P (column), P]
    knots = _scratch("knots", n_col * p, np.float32).reshape(n_col, p)
    other = _scratch("other", n_col * p, np.float32).reshape(n_col, p)
    np.take(across, crops.col_mask * p + crops.c0, axis=0, out=knots, mode="clip")  # indices in range
    knots *= (np.float32(1.0) - crops.cw)[:, None]
    np.take(across, crops.col_mask * p + crops.c1, axis=0, out=other, mode="clip")
    other *= crops.cw[:, None]
    knots += other
    high = np.greater(knots, MASK_THRESHOLD, out=_scratch("high", n_col * p, np.bool_).reshape(n_col, p))
    # Segment s of the flattened knots joins knots s and s + 1: segment j of a column for j < P - 1, and
    # for j = P - 1 a column's last knot and the next one's first, both 0 (never a crossing). Flat,
    # the shifted operands are contiguous.
    flat_knots, flat_high, n_seg = knots.reshape(-1), high.reshape(-1), n_col * p - 1
    crossing = _scratch("crossing", n_col * p, np.bool_)
    crossing[-1] = False
    np.not_equal(flat_high[1:], flat_high[:-1], out=crossing[:n_seg])

    # each crossing's row (real-valued) and its reach: the rows each side where the polyline is within
    # tol of 0.5, plus the estimate's error
    index = np.flatnonzero(crossing)  # [E] column-major, so the estimates are non-decreasing per column
    n_event = len(index)
    event_col = np.floor_divide(index, p, out=_scratch("event_col", n_event, np.int64))  # [E]
    split = np.searchsorted(index, np.searchsorted(crops.col_mask, np.arange(len(crops.rows) + 1)) * p)
    inv = (crops.out_h / np.float64(p)).astype(np.float32)  # [L] rows per key
    inv_event = np.take(inv[crops.col_mask], event_col, out=_scratch("inv", n_event, np.float32), mode="clip")
    start = (crops.first_row.astype(np.float32) + np.float32(0.5))[crops.col_mask]  # [NC]
    start = np.take(start, event_col, out=_scratch("start", n_event, np.float32), mode="clip")
    left = np.take(flat_knots, index, out=_scratch("estimate", n_event, np.float32), mode="clip")
    work = _scratch("work", n_event, np.int64)
    right = np.take(
        flat_knots, np.add(index, 1, out=work), out=_scratch("reach", n_event, np.float32), mode="clip"
    )
    slope = np.subtract(right, left, out=right)
    estimate = np.subtract(np.float32(MASK_THRESHOLD), left, out=left)
    estimate /= slope  # the crossing's fraction t of its segment, in [0, 1]
    np.subtract(index, np.multiply(event_col, p, out=work), out=work)  # the segment j
    segment = np.add(work, np.float32(0.5), out=_scratch("segment", n_event, np.float32))  # exact
    _estimate_rows(estimate, segment, inv_event, start)
    near = np.abs(slope, out=slope)
    with np.errstate(over="ignore"):  # a nearly flat segment: all its rows are near
        np.divide(np.multiply(inv_event, np.float32(1.01 * tol), out=segment), near, out=near)
    near += np.multiply(inv_event, np.float32(_ESTIMATE_KEYS * p), out=segment)
    row = np.ceil(estimate, out=_scratch("row", n_event, np.float32))  # [E] visible rows
    gap = np.subtract(row, estimate, out=_scratch("gap", n_event, np.float32))  # [E] in [0, 1)
    gap -= np.float32(0.5)
    np.abs(gap, out=gap)
    gap += near
    near_crossing = np.greater_equal(gap, 0.5, out=_scratch("near", n_event, np.bool_))  # a row in reach
    cut = (crops.first_row > 0) | (crops.rows < crops.out_h - crops.first_row)  # [L] crops cut by the image
    for j in np.flatnonzero(cut).tolist():  # the others' rows are in range by construction
        mine = row[split[j] : split[j + 1]]
        np.clip(mine, np.float32(0.0), np.float32(crops.rows[j]), out=mine)
    change = np.take(
        crops.top.astype(np.float64), event_col, out=_scratch("change", n_event, np.float64), mode="clip"
    )
    change += row

    dist = np.subtract(knots, np.float32(MASK_THRESHOLD), out=other)
    near_knot = np.less_equal(np.abs(dist, out=dist), tol, out=high)  # [NC, P]
    toggles = np.zeros(0)
    if near_crossing.any() or near_knot.any():
        # rows to recompute: within reach of a crossing's estimate (± 1), and all rows of the two
        # segments next to a knot near 0.5 (from key j - 1 to key j + 1, ± 1)
        chosen = np.flatnonzero(near_crossing)
        knot_col, knot_j = np.divmod(np.flatnonzero(near_knot), p)
        knot_mask = crops.col_mask[knot_col]
        knot_lo = (knot_j - 0.5) * inv[knot_mask] - 1.5 - crops.first_row[knot_mask]
        flips = _band_flips(
            crops,
            np.concatenate([event_col[chosen], knot_col]),
            np.concatenate([estimate[chosen] - near[chosen] - 1.0, np.where(knot_j > 1, knot_lo, -1.0)]),
            np.concatenate([estimate[chosen] + near[chosen] + 1.0, knot_lo + 2.0 * inv[knot_mask] + 2.0]),
            change,
        )
        toggles = np.sort(np.concatenate([flips, flips + 1]))
    return change, toggles


def _estimate_rows(fraction: np.ndarray, segment: np.ndarray, inv: np.ndarray, start: np.ndarray) -> None:
    """In place, float32: the crossing at key ``segment - 0.5 + fraction`` (``segment`` = j + 0.5 for
    segment j) becomes the real-valued visible row ``(key + 0.5)·inv - start`` (``start`` = the first
    visible row + 0.5) whose ceiling is the first row with key >= the crossing's: key(y) =
    (first_row + y + 0.5)·scale - 0.5 in paste_mask, and inv ≈ 1 / scale = out_h / P. Off by at most
    ``_ESTIMATE_KEYS·P·inv`` rows: the keys' float32 rounding and this function's."""
    fraction += segment
    fraction *= inv
    fraction -= start


def _band_flips(
    crops: _Crops, column: np.ndarray, lo: np.ndarray, hi: np.ndarray, change: np.ndarray
) -> np.ndarray:
    """Offsets (as ``change``) of the pixels where paste_mask's float32 value decides differently from
    the sorted change points ``change``, among the visible rows in [lo, hi] (real-valued, [S]) of the
    columns ``column`` [S] (overlaps allowed)."""
    p = crops.padded.shape[-1]
    start = np.maximum(np.ceil(lo), 0).astype(np.int64)  # [S] visible rows start..stop - 1
    stop = np.minimum(np.floor(hi) + 1, crops.rows[crops.col_mask[column]]).astype(np.int64)
    size = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(len(size)), size)  # [B]
    row = start[owner] + np.arange(len(owner)) - (np.cumsum(size) - size)[owner]  # [B] visible rows
    offset, first = np.unique(crops.top[column[owner]] + row, return_index=True)  # each pixel once
    row, col = row[first], column[owner[first]]
    mask = crops.col_mask[col]
    scale = np.float32(p) / crops.out_h.astype(np.float32)  # [L] as _visible_weights
    ya, yb, wy = _source_weights((crops.first_row[mask] + row).astype(np.float32), scale[mask], p)
    xa, xb, wx = crops.c0[col], crops.c1[col], crops.cw[col]
    # paste_mask's float32 operations: the two source columns' row interpolations, then across
    at_c0 = crops.padded[mask, ya, xa] * (np.float32(1.0) - wy) + crops.padded[mask, yb, xa] * wy
    at_c1 = crops.padded[mask, ya, xb] * (np.float32(1.0) - wy) + crops.padded[mask, yb, xb] * wy
    value = at_c0 * (np.float32(1.0) - wx) + at_c1 * wx
    position = offset.astype(np.float64)
    decided = np.searchsorted(change, position, "right") % 2 == 1  # on iff an odd number of toggles
    return position[(value > MASK_THRESHOLD) != decided]


def _counts(change: np.ndarray, toggles: np.ndarray, n_mask: int, total: int) -> list[np.ndarray | None]:
    """COCO RLE counts int64 of each of ``n_mask`` masks (None: no foreground) from :func:`_change_points`'
    sorted ``change`` and ``toggles`` (float64 offsets, + (total + 1) × mask): the values that occur an
    odd number of times are where runs start and end."""
    stride = total + 1
    if toggles.size:  # few: insert them rather than sort everything
        change = np.insert(change, np.searchsorted(change, toggles), toggles)
    keep: np.ndarray | None = None  # [E] False where a value occurs twice
    if len(change) > 1:
        same = np.equal(change[1:], change[:-1], out=_scratch("same", len(change) - 1, np.bool_))  # [E - 1]
        if same.any():
            if (same[1:] & same[:-1]).any():  # a value 3+ times (tiny boxes): the general rule, at once
                first = np.flatnonzero(np.concatenate([[True], ~same]))  # first index of each value
                change = change[first[np.diff(first, append=len(change)) % 2 == 1]]
            else:  # pairs only (empty runs, runs touching across columns): both go, mask by mask
                keep = _scratch("keep", len(change), np.bool_)
                keep[0] = True
                np.logical_not(same, out=keep[1:])
                keep[:-1] &= keep[1:].copy()  # neither equal to the previous nor to the next
    split = np.searchsorted(change, np.arange(n_mask + 1) * stride).tolist()
    result: list[np.ndarray | None] = []
    for j in range(n_mask):
        mine = change[split[j] : split[j + 1]]
        if keep is not None:
            mine = mine[keep[split[j] : split[j + 1]]]
        if not mine.size:
            result.append(None)
            continue
        tail = total - (int(mine[-1]) - j * stride)  # the background after the last run, if any
        counts = np.empty(len(mine) + (1 if tail else 0), dtype=np.int64)
        counts[0] = int(mine[0]) - j * stride
        np.subtract(mine[1:], mine[:-1], out=counts[1 : len(mine)], casting="unsafe")
        if tail:
            counts[-1] = tail
        result.append(counts)
    return result


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


def encode_rle_many(
    probs: np.ndarray, boxes: np.ndarray, height: int, width: int, *, native: bool | None = None
) -> list[dict[str, Any]]:
    """``[encode_rle(paste_mask(p, b, height, width)) for p, b in zip(probs, boxes)]`` for ``probs``
    [K, M, M] and ``boxes`` [K, 4] (image pixels), without the intermediate crops (faster).

    ``native``: the C encoder (:func:`rle_strings_native`); default: it when built (``NATIVE_RLE``),
    else numpy (:func:`rle_counts_many`). Both give the same strings.
    """
    if len(probs) != len(boxes):
        raise ValueError(f"{len(probs)} masks but {len(boxes)} boxes")
    if native if native is not None else NATIVE_RLE:
        strings = rle_strings_native(probs, boxes, height, width)
        return [{"size": [height, width], "counts": text} for text in strings]
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
