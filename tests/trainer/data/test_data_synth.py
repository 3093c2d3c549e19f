from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from data_small import SMALL
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from vitbench.trainer.data.check import check_dataset
from vitbench.trainer.data.synth import SynthConfig, generate_dataset


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", 8, seed=7, cfg=SMALL)
    generate_dataset(tmp_path / "b", 8, seed=7, cfg=SMALL)
    generate_dataset(tmp_path / "c", 8, seed=8, cfg=SMALL)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_and_splits(small_dataset: Path) -> None:
    for split, n in (("train", 19), ("val", 5)):
        data = json.loads((small_dataset / "annotations" / f"instances_{split}.json").read_text())
        assert len(data["images"]) == n
        assert all((small_dataset / split / im["file_name"]).is_file() for im in data["images"])
    assert check_dataset(small_dataset) == []


def test_masks_boxes_and_formats_are_consistent(small_dataset: Path) -> None:
    coco = COCO(str(small_dataset / "annotations" / "instances_train.json"))
    kinds = {"polygon": 0, "rle": 0, "crowd": 0}
    for ann in coco.anns.values():
        m = coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(m)
        x, y, w, h = ann["bbox"]
        # the stored box is the tight box of the mask (polygons rasterize within a pixel of it)
        assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
        assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
        if isinstance(ann["segmentation"], dict):
            assert mask_utils.area(ann["segmentation"]) == ann["area"]
            kinds["crowd" if ann["iscrowd"] else "rle"] += 1
        else:
            assert all(len(p) >= 6 for p in ann["segmentation"])
            kinds["polygon"] += 1
    assert all(v > 0 for v in kinds.values()), kinds  # polygons, occluded RLE masks and crowd regions
    assert {c["name"] for c in coco.cats.values()} == {"circle", "rectangle", "triangle", "star"}


def test_bad_config_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="num_categories"):
        SynthConfig(num_categories=9)
