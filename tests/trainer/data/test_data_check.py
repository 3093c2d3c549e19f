from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from vitbench.trainer.data.check import DatasetError, check_dataset, require_valid


@pytest.fixture()
def broken(small_dataset: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / "ds"
    shutil.copytree(small_dataset, root)
    ann_file = root / "annotations" / "instances_train.json"
    return root, json.loads(ann_file.read_text())


def _save(root: Path, data: dict[str, Any]) -> None:
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))


def _first_ann_of_image(data: dict[str, Any], k: int = 0) -> dict[str, Any]:
    image_id = data["images"][k]["id"]
    return next(a for a in data["annotations"] if a["image_id"] == image_id and not a["iscrowd"])


def test_valid_dataset_has_no_problems(small_dataset: Path) -> None:
    assert check_dataset(small_dataset) == []
    require_valid(small_dataset)


def test_every_problem_is_reported_with_image_and_annotation(broken: tuple[Path, dict[str, Any]]) -> None:
    root, data = broken
    img0, img1 = data["images"][0], data["images"][1]
    (root / "train" / img0["file_name"]).unlink()  # missing image
    corrupt = root / "train" / img1["file_name"]  # truncated JPEG
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    a_zero = _first_ann_of_image(data, 2)
    a_zero["bbox"][2] = 0.0  # zero-area box
    a_poly = next(a for a in data["annotations"] if isinstance(a["segmentation"], list) and a is not a_zero)
    a_poly["segmentation"] = [[1.0, 1.0, 5.0, 5.0]]  # 2 points
    a_cat = next(a for a in data["annotations"] if a not in (a_zero, a_poly))
    a_cat["category_id"] = 99  # not in categories
    _save(root, data)

    problems = check_dataset(root)
    by_msg = {p.message.split(":")[0].split(" (")[0]: p for p in problems}
    missing = next(p for p in problems if "missing" in p.message)
    assert missing.image_id == img0["id"] and missing.file == img0["file_name"]
    bad_jpeg = next(p for p in problems if "cannot be decoded" in p.message)
    assert bad_jpeg.image_id == img1["id"]
    zero = next(p for p in problems if "zero or negative area" in p.message)
    assert (zero.image_id, zero.annotation_id) == (a_zero["image_id"], a_zero["id"])
    poly = next(p for p in problems if "at least 3 are needed" in p.message)
    assert (poly.image_id, poly.annotation_id) == (a_poly["image_id"], a_poly["id"])
    cat = next(p for p in problems if "category id 99" in p.message)
    assert (cat.image_id, cat.annotation_id) == (a_cat["image_id"], a_cat["id"])
    assert len(problems) == 5, [str(p) for p in problems]
    assert by_msg  # every problem has a message

    with pytest.raises(DatasetError) as info:
        require_valid(root)
    text = str(info.value)
    assert f"annotation_id={a_zero['id']}" in text and f"image_id={img0['id']}" in text


def test_missing_annotation_file_and_bad_json(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text("{not json")
    msgs = [p.message for p in check_dataset(tmp_path)]
    assert any("instances_train.json" in m and "missing" in m for m in msgs)
    assert any("not valid JSON" in m for m in msgs)
