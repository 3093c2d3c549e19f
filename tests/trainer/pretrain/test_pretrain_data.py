"""Pre-training data: image discovery, the augmentations, the synthetic unlabeled set and crop tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vitbench.trainer.data.synth import SynthConfig, generate_dataset, generate_pretrain_images
from vitbench.trainer.pretrain.data import (
    PretrainDataError,
    UnlabeledImages,
    find_images,
    image_folder,
    mae_transform,
    mocov3_transform,
)

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def test_find_images_recursive_and_coco_train_only(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("x.jpg", "a/y.PNG", "a/b/z.jpeg"):
        Image.new("RGB", (8, 8)).save(tmp_path / p)
    (tmp_path / "a" / "notes.txt").write_text("no image")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == [
        "a/b/z.jpeg",
        "a/y.PNG",
        "x.jpg",
    ]

    coco = tmp_path / "coco"
    counts = generate_dataset(coco, 6, 0, SynthConfig(num_categories=2), 0.34)
    found = find_images(coco)
    assert len(found) == counts["train"] and all(p.parent.name == "train" for p in found)


def test_find_images_refuses_an_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PretrainDataError, match="no images found"):
        find_images(tmp_path)
    with pytest.raises(PretrainDataError, match="does not exist"):
        find_images(tmp_path / "nope")


def test_synth_unlabeled_set_and_crop_tree(tmp_path: Path) -> None:
    cfg = SynthConfig(num_categories=3, max_objects=3)
    counts = generate_pretrain_images(tmp_path, 12, 0, cfg)
    imgs = find_images(tmp_path / "unlabeled")
    assert counts["unlabeled"] == len(imgs) == 12
    tree = image_folder(tmp_path / "crops", mae_transform(64, MEAN, STD))
    assert tree.classes == ["circle", "rectangle", "triangle"]
    assert len(tree) == counts["crops"] > 12
    x, label = tree[0]
    assert x.shape == (3, 64, 64) and label == 0
    # Deterministic: the same seed writes the same pixels.
    again = tmp_path / "again"
    generate_pretrain_images(again, 12, 0, cfg)
    assert (again / "unlabeled" / imgs[3].name).read_bytes() == imgs[3].read_bytes()


def test_image_folder_needs_two_classes(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.jpg")
    with pytest.raises(PretrainDataError, match="at least 2"):
        image_folder(tmp_path, mae_transform(64, MEAN, STD))


def test_augmentations_give_normalized_crops_and_two_different_views(tmp_path: Path) -> None:
    Image.effect_noise((120, 100), 60).convert("RGB").save(tmp_path / "n.png")
    ds = UnlabeledImages(find_images(tmp_path), mae_transform(64, MEAN, STD))
    x = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    torch.manual_seed(0)
    v1, v2 = UnlabeledImages(find_images(tmp_path), mocov3_transform(64, MEAN, STD))[0]
    assert v1.shape == v2.shape == (3, 64, 64)
    assert not torch.allclose(v1, v2)
