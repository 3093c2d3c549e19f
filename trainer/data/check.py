"""Up-front validation of a COCO-format dataset: every problem, each with its image and annotation id.

Checks per split: the annotation file parses and has ``images``/``annotations``/``categories``; ids
are unique; every image file exists and decodes completely (a truncated or corrupt JPEG is caught) and
its size matches ``width``/``height``; every annotation refers to a known image and a category id that
is listed in ``categories``; boxes have 4 finite numbers with positive width and height; polygons have
at least 3 points (an even count of ≥ 6 coordinates); RLE sizes match the image. The train split must
have at least one image with a non-crowd annotation, and all checked splits the same categories.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vitbench.trainer.data import SPLITS, split_paths

TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset. ``image_id``/``annotation_id`` are None when not applicable."""

    split: str
    message: str
    image_id: int | None = None
    annotation_id: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = [f"split={self.split}"]
        if self.image_id is not None:
            where.append(f"image_id={self.image_id}")
        if self.annotation_id is not None:
            where.append(f"annotation_id={self.annotation_id}")
        if self.file is not None:
            where.append(f"file={self.file}")
        return f"{' '.join(where)}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DatasetError(ValueError):
    """Raised by :func:`require_valid` with every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in the dataset:\n{lines}{more}")


def _check_image_file(split: str, img_dir: Path, info: dict[str, Any], decode: bool) -> list[Problem]:
    image_id = info.get("id")
    name = info.get("file_name")
    if not isinstance(name, str) or not name:
        return [Problem(split, "image has no file_name", image_id=image_id)]
    path = img_dir / name
    if not path.is_file():
        return [Problem(split, f"image file is missing: {path}", image_id=image_id, file=name)]
    try:
        with Image.open(path) as im:
            size = im.size
            if decode:
                im.load()  # full decode: raises on truncated/corrupt data
    except Exception as exc:  # PIL raises many types for bad files
        return [Problem(split, f"image cannot be decoded ({exc})", image_id=image_id, file=name)]
    w, h = info.get("width"), info.get("height")
    if (w, h) != size:
        return [
            Problem(
                split,
                f"image is {size[0]}x{size[1]} but the annotation file says {w}x{h}",
                image_id=image_id,
                file=name,
            )
        ]
    return []


def _check_segmentation(seg: Any, info: dict[str, Any] | None) -> str | None:
    """Return a message when ``seg`` is not a valid polygon list or RLE for its image, else None."""
    if isinstance(seg, list):
        if not seg:
            return "segmentation is an empty polygon list"
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
                return f"polygon {k} is not a list of numbers"
            if len(poly) % 2:
                return f"polygon {k} has an odd number of coordinates ({len(poly)})"
            if len(poly) < 6:
                return f"polygon {k} has {len(poly) // 2} point(s); at least 3 are needed"
        return None
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "RLE segmentation needs 'counts' and 'size'"
        size = seg["size"]
        if info is not None and list(size) != [info.get("height"), info.get("width")]:
            return f"RLE size {list(size)} does not match the image's [height, width]"
        return None
    return f"segmentation must be a polygon list or an RLE dict, got {type(seg).__name__}"


def check_split(root: Path, split: str, decode_images: bool = True) -> list[Problem]:
    """All problems of one split of the dataset at ``root`` (empty list when valid)."""
    img_dir, ann_file = split_paths(root, split)
    if ann_file.is_dir():
        return [Problem(split, f"annotation file {ann_file} is a directory; expected a COCO JSON file")]
    if not ann_file.is_file():
        return [Problem(split, f"annotation file is missing: {ann_file}")]
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [Problem(split, f"annotation file {ann_file} is not valid JSON ({exc})")]
    if not isinstance(data, dict):
        return [Problem(split, f"annotation file {ann_file} must hold a JSON object")]
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        return [Problem(split, f"annotation file {ann_file} lacks the list(s): {', '.join(missing)}")]

    problems: list[Problem] = []
    cat_ids = [c.get("id") for c in data["categories"] if isinstance(c, dict)]
    for cid, n in Counter(cat_ids).items():
        if n > 1:
            problems.append(Problem(split, f"category id {cid} is listed {n} times"))
    if not cat_ids:
        problems.append(Problem(split, "the 'categories' list is empty"))
    known_cats = set(cat_ids)

    images: dict[int, dict[str, Any]] = {}
    for info in data["images"]:
        image_id = info.get("id") if isinstance(info, dict) else None
        if not isinstance(image_id, int):
            problems.append(Problem(split, f"image entry without an integer id: {str(info)[:80]}"))
            continue
        if image_id in images:
            problems.append(Problem(split, "duplicate image id", image_id=image_id))
            continue
        images[image_id] = info
        problems += _check_image_file(split, img_dir, info, decode_images)

    seen_ann: set[int] = set()
    for ann in data["annotations"]:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if not isinstance(ann, dict) or not isinstance(ann_id, int):
            problems.append(Problem(split, f"annotation without an integer id: {str(ann)[:80]}"))
            continue
        image_id = ann.get("image_id")
        img_ref = image_id if isinstance(image_id, int) else None

        def add(msg: str, _img: int | None = img_ref, _ann: int = ann_id) -> None:
            problems.append(Problem(split, msg, image_id=_img, annotation_id=_ann))

        if ann_id in seen_ann:
            add("duplicate annotation id")
        seen_ann.add(ann_id)
        info = images.get(image_id) if isinstance(image_id, int) else None
        if info is None:
            add(f"annotation refers to image id {image_id!r}, which is not in 'images'")
        cid = ann.get("category_id")
        if cid not in known_cats:
            known = sorted(c for c in known_cats if isinstance(c, int))
            add(f"category id {cid!r} is not in 'categories' (known: {known})")
        bbox = ann.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        ):
            add(f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        elif bbox[2] <= 0 or bbox[3] <= 0:
            add(f"bbox has zero or negative area: w={bbox[2]}, h={bbox[3]}")
        elif info is not None and (
            bbox[0] < -1
            or bbox[1] < -1
            or bbox[0] + bbox[2] > info["width"] + 1
            or bbox[1] + bbox[3] > info["height"] + 1
        ):
            add(f"bbox {bbox} lies outside the {info['width']}x{info['height']} image")
        if "segmentation" in ann:
            msg = _check_segmentation(ann["segmentation"], info)
            if msg:
                add(msg)
    if split == TRAIN_SPLIT and images and not _has_trainable_image(data["annotations"], images):
        problems.append(
            Problem(
                split,
                "the training split has no annotated object (no image has a non-crowd annotation), "
                "so there is nothing to train on",
            )
        )
    return problems


def _has_trainable_image(annotations: list[Any], images: dict[int, dict[str, Any]]) -> bool:
    """True when some known image has a non-crowd annotation (what training keeps, see ``coco.py``)."""
    return any(
        isinstance(a, dict) and a.get("image_id") in images and not a.get("iscrowd", 0) for a in annotations
    )


def _categories(root: Path, split: str) -> list[tuple[Any, Any]] | None:
    """``(id, name)`` of a split's categories sorted by id, or None when the file cannot be read."""
    try:
        data = json.loads(split_paths(root, split)[1].read_text(encoding="utf-8"))
        cats = [(c.get("id"), c.get("name")) for c in data["categories"] if isinstance(c, dict)]
        return sorted(cats, key=lambda c: (str(type(c[0])), c[0]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def _check_same_categories(root: Path, splits: tuple[str, ...]) -> list[Problem]:
    """Training maps category ids to labels from train and evaluates on val: both must list the same."""
    listed = {s: _categories(root, s) for s in splits}
    readable = {s: c for s, c in listed.items() if c is not None}
    if len(readable) < 2:
        return []
    (first, ref), *rest = readable.items()
    problems = []
    for split, cats in rest:
        if cats != ref:
            only_a = [f"{i}:{n}" for i, n in ref if (i, n) not in cats]
            only_b = [f"{i}:{n}" for i, n in cats if (i, n) not in ref]
            problems.append(
                Problem(
                    split,
                    f"categories differ from {first}'s: only in {first}: {only_a or 'none'}; "
                    f"only in {split}: {only_b or 'none'} (every split must list the same id:name pairs)",
                )
            )
    return problems


def check_dataset(root: Path, splits: tuple[str, ...] = SPLITS, decode_images: bool = True) -> list[Problem]:
    """All problems of every split of the dataset folder ``root``."""
    if root.exists() and not root.is_dir():
        return [Problem("-", f"{root} is a file; expected a dataset folder (train/, val/, annotations/)")]
    if not root.is_dir():
        return [Problem("-", f"dataset folder does not exist: {root}")]
    problems: list[Problem] = []
    for split in splits:
        problems += check_split(root, split, decode_images)
    return problems + _check_same_categories(root, splits)


def require_valid(root: Path, splits: tuple[str, ...] = SPLITS, decode_images: bool = True) -> None:
    """Raise :class:`DatasetError` listing every problem unless the dataset is valid."""
    problems = check_dataset(root, splits, decode_images)
    if problems:
        raise DatasetError(problems)
