from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops import masks_to_boxes

from vitbench.trainer.data import split_paths
from vitbench.trainer.data.coco import CocoDetection, TrainingSampler
from vitbench.trainer.data.transforms import build_train_transform


def _train(root: Path, size: int = 64, scale: tuple[float, float] = (0.1, 2.0)) -> CocoDetection:
    img_dir, ann = split_paths(root, "train")
    return CocoDetection(img_dir, ann, build_train_transform(size, scale), train=True)


def test_targets_drop_crowd_and_map_categories(small_dataset: Path) -> None:
    ds = CocoDetection(*split_paths(small_dataset, "train"), transforms=None, train=True)
    assert ds.class_names == ["circle", "rectangle", "triangle", "star"]
    for i in range(len(ds)):
        image, target = ds[i]
        anns = [a for a in ds.coco.imgToAnns[target["image_id"]] if not a["iscrowd"]]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert len(target["boxes"]) == len(anns) == len(target["masks"])
        assert sorted(target["labels"].tolist()) == sorted(ds.cat_id_to_label[a["category_id"]] for a in anns)


@pytest.mark.parametrize("scale", [(0.1, 0.3), (1.5, 2.0)])
def test_lsj_gives_fixed_square_with_consistent_boxes_and_masks(
    small_dataset: Path, scale: tuple[float, float]
) -> None:
    ds = _train(small_dataset, 64, scale)
    for i in range(6):
        image, target = ds[(i, 1000 + i)]
        assert tuple(image.shape) == (3, 64, 64)
        boxes, masks = target["boxes"], target["masks"]
        assert masks.shape[-2:] == (64, 64) and len(boxes) == len(masks) == len(target["labels"])
        if len(boxes):
            assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 64
            nonempty = masks.flatten(1).bool().any(1)
            # boxes are transformed with the image: they enclose their (transformed) mask
            mb = masks_to_boxes(masks[nonempty])
            assert (mb[:, :2] >= boxes[nonempty][:, :2] - 1.5).all()
            assert (mb[:, 2:] + 1 <= boxes[nonempty][:, 2:] + 1.5).all()
        if scale[1] <= 0.3:  # heavy shrink: the content occupies at most 0.3 of the side, rest is padding
            assert (image[:, 32:, 32:] == image[:, 63:, 63:]).all()


def test_seeded_samples_are_reproducible(small_dataset: Path) -> None:
    ds = _train(small_dataset)
    a, ta = ds[(3, 42)]
    b, tb = ds[(3, 42)]
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
    before = torch.get_rng_state()
    ds[(3, 43)]
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is untouched


def test_sampler_resumes_and_partitions_ranks() -> None:
    def take(s: TrainingSampler, n: int) -> list[tuple[int, int]]:
        it = iter(s)
        return [next(it) for _ in range(n)]

    full = take(TrainingSampler(10, seed=1), 40)
    assert sorted(i for i, _ in full[:10]) == list(range(10))  # each epoch is a permutation
    assert full[:10] != full[10:20]
    assert take(TrainingSampler(10, seed=1, start=13), 27) == full[13:]
    r0 = take(TrainingSampler(10, seed=1, rank=0, world_size=2, start=4), 8)
    r1 = take(TrainingSampler(10, seed=1, rank=1, world_size=2, start=4), 8)
    assert r0 == full[4:20:2] and r1 == full[5:20:2]
    with pytest.raises(ValueError, match="empty"):
        TrainingSampler(0, seed=1)
