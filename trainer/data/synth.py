"""Deterministic synthetic COCO-format dataset: textured shapes with occlusion and instance masks.

Each image has a noisy, low-frequency background and 1..N objects of a few shape categories, each with
its own colour and texture (solid, stripes, checker, noise). Later objects occlude earlier ones; the
stored masks and boxes are the *visible* parts, instances that become mostly hidden are dropped.
Unoccluded shapes are stored as polygons, occluded ones as compressed RLE; some images carry an
``iscrowd=1`` region (a cluster of small dots) stored as RLE. Everything is a pure function of the seed.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vitbench.fileio import atomic_path, atomic_write_json
from vitbench.trainer.data import split_paths

SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle", "star", "ring")


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator. Sizes are in pixels; ``occlusion_keep`` is the visible fraction below
    which an occluded instance is dropped."""

    num_categories: int = 4
    min_image_size: int = 96
    max_image_size: int = 128
    max_objects: int = 4
    min_object_size: int = 20
    max_object_size: int = 56
    crowd_probability: float = 0.15
    occlusion_keep: float = 0.35
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if not 1 <= self.num_categories <= len(SHAPES):
            raise ValueError(f"num_categories must be in 1..{len(SHAPES)}, got {self.num_categories}")
        if not 16 <= self.min_image_size <= self.max_image_size:
            raise ValueError("expected 16 <= min_image_size <= max_image_size")
        if not 4 <= self.min_object_size <= self.max_object_size <= self.min_image_size:
            raise ValueError("expected 4 <= min_object_size <= max_object_size <= min_image_size")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")


@dataclass(frozen=True)
class _Instance:
    category: int  # 0-based index into SHAPES
    mask: np.ndarray  # (H, W) bool, full (unoccluded) shape
    polygon: list[float] | None  # flat x,y list when the shape is a polygon


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape centred at (cx, cy) with circumradius r (pixels)."""
    if kind == "circle":
        n, radii = 32, [r]
    elif kind == "rectangle":
        n, radii = 4, [r]
    elif kind == "triangle":
        n, radii = 3, [r]
    elif kind == "star":
        n, radii = 10, [r, r * 0.45]
    else:
        raise ValueError(kind)
    pts = []
    for i in range(n):
        a = angle + 2 * math.pi * i / n
        rr = radii[i % len(radii)]
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float32 texture in 0..255: solid, stripes, checker or noise around one base colour."""
    base = rng.uniform(30, 225, size=3).astype(np.float32)
    other = np.clip(base + rng.uniform(-90, 90, size=3), 0, 255).astype(np.float32)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        sel = np.zeros((h, w), dtype=bool)
    elif kind == 1:
        period = rng.uniform(4, 10)
        theta = rng.uniform(0, math.pi)
        sel = ((xx * math.cos(theta) + yy * math.sin(theta)) // (period / 2)) % 2 == 1
    elif kind == 2:
        cell = int(rng.integers(3, 8))
        sel = ((xx // cell + yy // cell) % 2) == 1
    else:
        sel = rng.random((h, w)) < 0.35
    tex = np.where(sel[..., None], other[None, None, :], base[None, None, :])
    return tex + rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float32 smooth random background (bilinear upsampled coarse noise) plus pixel noise."""
    coarse = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.uint8)
    bg = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    return bg + rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)


def _draw_instance(
    rng: np.random.Generator, kind: str, category: int, h: int, w: int, cfg: SynthConfig
) -> _Instance:
    size = rng.uniform(cfg.min_object_size, cfg.max_object_size)
    r = size / 2
    cx = rng.uniform(r * 0.6, w - r * 0.6)
    cy = rng.uniform(r * 0.6, h - r * 0.6)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    polygon: list[float] | None = None
    if kind == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ri = r * rng.uniform(0.4, 0.6)
        draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        if kind == "rectangle":  # a random aspect ratio instead of a square
            aspect = rng.uniform(0.5, 1.0)
            hw, hh = r * 0.9, r * 0.9 * aspect
            c, s = math.cos(angle), math.sin(angle)
            pts = [
                (cx + dx * c - dy * s, cy + dx * s + dy * c)
                for dx, dy in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh))
            ]
        else:
            pts = _shape_polygon(kind, cx, cy, r, angle)
        pts = [(min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)) for x, y in pts]
        draw.polygon(pts, fill=255)
        polygon = [round(v, 2) for p in pts for v in p]
    return _Instance(category=category, mask=np.asarray(canvas) > 127, polygon=polygon)


def _bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of a boolean (H, W) mask (pixel-edge convention)."""
    ys, xs = np.nonzero(mask)
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]


def _polygon_box_area(polygon: list[float], h: int, w: int) -> tuple[list[float], float]:
    """COCO ``[x, y, w, h]`` and pixel area of a polygon rasterized by pycocotools."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], h, w))
    return _bbox(mask_utils.decode(rle).astype(bool)), float(mask_utils.area(rle))


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a boolean (H, W) mask with ``counts`` as a str (JSON-safe)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def render_image(rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render one image. Returns the (H, W, 3) uint8 RGB array and its annotations without ids
    (keys: ``category_index`` 0-based, ``segmentation``, ``bbox``, ``area``, ``iscrowd``)."""
    h = int(rng.integers(cfg.min_image_size, cfg.max_image_size + 1))
    w = int(rng.integers(cfg.min_image_size, cfg.max_image_size + 1))
    img = _background(rng, h, w)
    shapes = SHAPES[: cfg.num_categories]
    instances: list[_Instance] = []
    for _ in range(int(rng.integers(1, cfg.max_objects + 1))):
        cat = int(rng.integers(0, len(shapes)))
        inst = _draw_instance(rng, shapes[cat], cat, h, w, cfg)
        if inst.mask.sum() < 16:
            continue
        img = np.where(inst.mask[..., None], _texture(rng, h, w), img)
        instances.append(inst)

    crowd: np.ndarray | None = None
    if rng.random() < cfg.crowd_probability:
        crowd_canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(crowd_canvas)
        cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
        for _ in range(int(rng.integers(6, 14))):
            x, y = cx + rng.normal(0, w * 0.08), cy + rng.normal(0, h * 0.08)
            rr = rng.uniform(1.5, 3.0)
            draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=255)
        crowd = np.asarray(crowd_canvas) > 127
        if crowd.sum() >= 8:
            colour = rng.uniform(0, 255, size=3).astype(np.float32)
            img = np.where(crowd[..., None], colour[None, None, :], img)
        else:
            crowd = None

    anns: list[dict[str, Any]] = []
    for i, inst in enumerate(instances):
        visible = inst.mask.copy()
        for later in instances[i + 1 :]:
            visible &= ~later.mask
        if crowd is not None:
            visible &= ~crowd
        full_area, vis_area = int(inst.mask.sum()), int(visible.sum())
        if vis_area < 16 or vis_area < cfg.occlusion_keep * full_area:
            continue
        occluded = vis_area < full_area
        if occluded or inst.polygon is None:
            seg: Any = _rle(visible)
            bbox, area = _bbox(visible), float(vis_area)
        else:  # box and area of the polygon as pycocotools rasterizes it (what training sees)
            seg = [inst.polygon]
            bbox, area = _polygon_box_area(inst.polygon, h, w)
        anns.append(
            {"category_index": inst.category, "segmentation": seg, "bbox": bbox, "area": area, "iscrowd": 0}
        )
    if crowd is not None:
        anns.append(
            {
                "category_index": 0,
                "segmentation": _rle(crowd),
                "bbox": _bbox(crowd),
                "area": float(crowd.sum()),
                "iscrowd": 1,
            }
        )
    return np.clip(img, 0, 255).astype(np.uint8), anns


def _atomic_save_jpeg(path: Path, arr: np.ndarray, quality: int) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="JPEG", quality=quality)


def generate_split(
    root: Path, split: str, num_images: int, seed: int, cfg: SynthConfig, first_image_id: int = 1
) -> dict[str, Any]:
    """Write ``num_images`` images of ``split`` under ``root`` and return the COCO dict (also written).

    Image ``k`` depends only on ``(seed, split, k)``, so the output is identical for a given seed.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    img_dir, ann_file = split_paths(root, split)
    img_dir.mkdir(parents=True, exist_ok=True)
    split_key = sum(ord(c) for c in split)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_id = 1
    for k in range(num_images):
        rng = np.random.default_rng([seed, split_key, k])
        arr, anns = render_image(rng, cfg)
        image_id = first_image_id + k
        file_name = f"{image_id:08d}.jpg"
        _atomic_save_jpeg(img_dir / file_name, arr, cfg.jpeg_quality)
        images.append({"id": image_id, "file_name": file_name, "height": arr.shape[0], "width": arr.shape[1]})
        for ann in anns:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": ann["category_index"] + 1,
                    "segmentation": ann["segmentation"],
                    "bbox": ann["bbox"],
                    "area": ann["area"],
                    "iscrowd": ann["iscrowd"],
                }
            )
            ann_id += 1
    coco = {
        "info": {"description": f"vitbench synthetic shapes, split={split}, seed={seed}", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(SHAPES[: cfg.num_categories])
        ],
    }
    atomic_write_json(ann_file, coco, indent=None)
    return coco


def generate_dataset(
    root: Path,
    num_images: int = 200,
    seed: int = 0,
    cfg: SynthConfig | None = None,
    val_fraction: float = 0.2,
) -> dict[str, int]:
    """Write a train and a val split under ``root``; ``num_images`` is the total over both splits.

    Returns the number of images per split. Val gets ``round(num_images * val_fraction)`` (at least 1).
    """
    cfg = cfg or SynthConfig()
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2 (one per split), got {num_images}")
    n_val = min(max(1, round(num_images * val_fraction)), num_images - 1)
    n_train = num_images - n_val
    generate_split(root, "train", n_train, seed, cfg, first_image_id=1)
    generate_split(root, "val", n_val, seed, cfg, first_image_id=n_train + 1)
    return {"train": n_train, "val": n_val}


def _object_crop(
    rng: np.random.Generator, arr: np.ndarray, bbox: list[float], size: int, jitter: float
) -> np.ndarray:
    """A ``size`` x ``size`` RGB crop around ``bbox`` (COCO xywh): a square of side 1.2 × the longer box
    side, its centre and side jittered by up to ``jitter`` of that side, clipped to the image."""
    h, w = arr.shape[:2]
    x, y, bw, bh = bbox
    side = max(bw, bh) * 1.2 * (1 + rng.uniform(-jitter, jitter))
    cx = x + bw / 2 + rng.uniform(-jitter, jitter) * side
    cy = y + bh / 2 + rng.uniform(-jitter, jitter) * side
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(w, round(cx + side / 2)), min(h, round(cy + side / 2))
    crop = Image.fromarray(arr[y0:y1, x0:x1]).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(crop)


def generate_pretrain_images(
    root: Path,
    num_images: int,
    seed: int,
    cfg: SynthConfig | None = None,
    crop_size: int = 64,
    crop_jitter: float = 0.15,
) -> dict[str, int]:
    """Pre-training data from images of a third split (``unlabeled``, disjoint from train / val):

    - ``root/unlabeled/<id>.jpg``: ``num_images`` images, pixels only (for ``mae`` / ``mocov3``);
    - ``root/crops/<category>/<ann id>.jpg``: a ``crop_size``-px crop of every non-crowd object of those
      images, one folder per category (a torchvision ``ImageFolder`` tree for ``supervised``).

    Image ``k`` depends only on ``(seed, k)``. Returns ``{"unlabeled": n, "crops": m}``.
    """
    cfg = cfg or SynthConfig()
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    img_dir, crop_dir = root / "unlabeled", root / "crops"
    img_dir.mkdir(parents=True, exist_ok=True)
    names = SHAPES[: cfg.num_categories]
    for name in names:
        (crop_dir / name).mkdir(parents=True, exist_ok=True)
    split_key = sum(ord(c) for c in "unlabeled")
    n_crops = 0
    for k in range(num_images):
        rng = np.random.default_rng([seed, split_key, k])
        arr, anns = render_image(rng, cfg)
        _atomic_save_jpeg(img_dir / f"{k + 1:08d}.jpg", arr, cfg.jpeg_quality)
        for j, ann in enumerate(anns):
            if ann["iscrowd"] or min(ann["bbox"][2:]) < 8:
                continue
            crop = _object_crop(rng, arr, ann["bbox"], crop_size, crop_jitter)
            name = names[ann["category_index"]]
            _atomic_save_jpeg(crop_dir / name / f"{k + 1:08d}_{j}.jpg", crop, cfg.jpeg_quality)
            n_crops += 1
    return {"unlabeled": num_images, "crops": n_crops}


DATASET_PARTS: tuple[str, ...] = ("train", "val", "annotations")
PRETRAIN_PARTS: tuple[str, ...] = ("unlabeled", "crops")  # written by generate_pretrain_images


class SynthOutputError(ValueError):
    """The output folder cannot take the dataset: it is a file, not writable, or holds one (no ``force``)."""


def write_dataset(
    root: Path,
    num_images: int = 200,
    seed: int = 0,
    cfg: SynthConfig | None = None,
    val_fraction: float = 0.2,
    force: bool = False,
    unlabeled: int = 0,
) -> dict[str, int]:
    """:func:`generate_dataset` (and, with ``unlabeled`` > 0, :func:`generate_pretrain_images`) into
    ``root`` without mixing old and new files.

    The dataset is generated in a hidden staging folder inside ``root`` and then moved into place, so an
    interrupted run leaves the previous dataset (or nothing) behind. ``train/``, ``val/`` and
    ``annotations/`` (and ``unlabeled/``, ``crops/``) already in ``root`` are refused unless ``force``, which
    replaces them whole (no stale images); other files in ``root`` are left alone.
    Raises :class:`SynthOutputError`.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise SynthOutputError(f"--out {root} is a file; expected a folder to write the dataset into")
    parts = (*DATASET_PARTS, *PRETRAIN_PARTS)
    existing = [p for p in parts if (root / p).exists()]
    if existing and not force:
        raise SynthOutputError(
            f"{root} already holds a dataset ({', '.join(p + '/' for p in existing)}); "
            "pass --force to replace it or choose another --out"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".synth-", dir=root))
    except OSError as exc:
        raise SynthOutputError(f"cannot write to {root}: {exc.strerror or exc}") from exc
    trash = staging / "previous"
    moved: list[str] = []
    try:
        counts = generate_dataset(staging / "new", num_images, seed, cfg, val_fraction)
        if unlabeled:
            counts.update(generate_pretrain_images(staging / "new", unlabeled, seed, cfg))
        trash.mkdir()
        for part in existing:
            os.replace(root / part, trash / part)
            moved.append(part)
        for part in parts:
            if (staging / "new" / part).exists():
                os.replace(staging / "new" / part, root / part)
    except OSError as exc:
        for part in moved:  # put the previous dataset back
            shutil.rmtree(root / part, ignore_errors=True)
            os.replace(trash / part, root / part)
        raise SynthOutputError(f"cannot write the dataset to {root}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts
