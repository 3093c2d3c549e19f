"""From raw graph outputs to the response's detections: rescale, filter, paste and encode masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitbench.service.backends import RawDetections
from vitbench.service.masks import PastedMask, encode_png, encode_polygon, encode_rle_many, paste_mask
from vitbench.service.preprocess import Letterbox
from vitbench.service.schemas import MaskFormat

_ENCODERS: dict[MaskFormat, Callable[[PastedMask], dict[str, Any]]] = {
    MaskFormat.png: encode_png,
    MaskFormat.polygon: encode_polygon,
}


@dataclass(frozen=True)
class FilterOptions:
    """Per-request filtering: keep ``score >= score_threshold``, labels in ``label_ids`` (None = all),
    at most ``max_detections`` by descending score."""

    score_threshold: float
    max_detections: int
    label_ids: frozenset[int] | None
    mask_format: MaskFormat


def resolve_classes(requested: Sequence[str] | None, class_names: Sequence[str]) -> frozenset[int] | None:
    """1-based label ids for ``requested`` names or ids (comma-separated entries allowed).

    Raises ValueError naming the unknown entries and the known classes.
    """
    if not requested:
        return None
    by_name = {name: i + 1 for i, name in enumerate(class_names)}
    ids: set[int] = set()
    unknown: list[str] = []
    for entry in requested:
        for token in (t.strip() for t in entry.split(",")):
            if not token:
                continue
            if token in by_name:
                ids.add(by_name[token])
            elif token.isdigit() and 1 <= int(token) <= len(class_names):
                ids.add(int(token))
            else:
                unknown.append(token)
    if unknown:
        raise ValueError(
            f"unknown class(es) {unknown}; expected names {list(class_names)} or ids 1..{len(class_names)}"
        )
    if not ids:
        raise ValueError("classes is empty; give class names or 1-based ids")
    return frozenset(ids)


def scale_boxes(boxes: np.ndarray, box: Letterbox) -> np.ndarray:
    """Canvas boxes [N, 4] → original-image boxes [N, 4], clipped to the image."""
    out = boxes.astype(np.float32).copy()
    out[:, 0::2] = np.clip(out[:, 0::2] * np.float32(box.ratio_x), 0.0, box.original_width)
    out[:, 1::2] = np.clip(out[:, 1::2] * np.float32(box.ratio_y), 0.0, box.original_height)
    return out


def visible(boxes: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the original-image box still has width and height at the response's 0.01 px rounding.

    A canvas box that lies in the padding (beyond the resized image) clips to zero width or height.
    """
    rounded = np.round(boxes, 2)
    return (rounded[:, 2] > rounded[:, 0]) & (rounded[:, 3] > rounded[:, 1])


def select(
    raw: RawDetections, num_classes: int, options: FilterOptions, keep_also: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the detections to return, highest score first (stable for ties); ``keep_also`` is an
    extra ``[N]`` bool filter (e.g. :func:`visible`)."""
    keep = (raw.scores >= options.score_threshold) & (raw.labels >= 1) & (raw.labels <= num_classes)
    if keep_also is not None:
        keep &= keep_also
    keep &= np.isfinite(raw.scores) & np.isfinite(raw.boxes).all(axis=1)
    if options.label_ids is not None:
        keep &= np.isin(raw.labels, np.fromiter(options.label_ids, dtype=np.int64))
    idx = np.flatnonzero(keep)
    order = idx[np.argsort(-raw.scores[idx], kind="stable")]
    return order[: options.max_detections]


def postprocess(
    raw: RawDetections, box: Letterbox, class_names: Sequence[str], options: FilterOptions
) -> list[dict[str, Any]]:
    """Detections as response dicts; masks are pasted only for the ones returned.

    Boxes that clip to zero width or height in the original image (they lie in the padding) are dropped.
    """
    scaled = scale_boxes(raw.boxes, box)  # [N, 4] original pixels
    chosen = select(raw, len(class_names), options, visible(scaled))
    boxes = scaled[chosen]  # [K, 4]
    # .tolist() gives the same Python floats as float() of each element, without a numpy scalar each
    detections: list[dict[str, Any]] = [
        {
            "box": [round(v, 2) for v in box],
            "score": round(score, 5),
            "label": label,
            "label_name": class_names[label - 1],
        }
        for box, score, label in zip(
            boxes.tolist(), raw.scores[chosen].tolist(), raw.labels[chosen].tolist(), strict=True
        )
    ]
    if options.mask_format is MaskFormat.none:
        return detections
    if options.mask_format is MaskFormat.rle:  # straight from probabilities to runs: no crop arrays
        encoded = encode_rle_many(raw.masks[chosen], boxes, box.original_height, box.original_width)
        for item, payload in zip(detections, encoded, strict=True):
            item["mask"] = {"format": "rle", **payload}
        return detections
    pasted = [
        paste_mask(raw.masks[i], boxes[k], box.original_height, box.original_width)
        for k, i in enumerate(chosen)
    ]
    encoder = _ENCODERS[options.mask_format]
    encoded = [encoder(mask) for mask in pasted]
    for item, payload in zip(detections, encoded, strict=True):
        item["mask"] = {"format": options.mask_format.value, **payload}
    return detections
