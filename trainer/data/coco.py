"""COCO-format instance dataset for torchvision's Mask R-CNN, read with pycocotools.

Category ids of the file are mapped to contiguous labels ``1..K`` (0 is background) in increasing id
order; ``class_names[label - 1]`` is the name. Training drops crowd regions and degenerate boxes and, by
default, images left without instances (as detectron2 does); evaluation keeps every image and leaves
crowd handling to ``COCOeval`` against the original file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors

Sample = tuple[tv_tensors.Image, dict[str, Any]]


class CocoDetection(Dataset[Sample]):
    """Images plus targets ``{"boxes": BoundingBoxes XYXY (N, 4) float32, "labels": (N,) int64,
    "masks": Mask (N, H, W) uint8 (training only), "image_id": int}``; image is uint8 (3, H, W) RGB.

    Index with an ``int`` or with ``(index, seed)``: with a seed the random transforms draw from a
    private generator seeded with it, so a sample's augmentation does not depend on worker layout and
    is reproduced exactly on resume.
    """

    def __init__(
        self,
        image_dir: Path,
        ann_file: Path,
        transforms: Callable[..., Any] | None = None,
        train: bool = True,
        filter_empty: bool = True,
    ) -> None:
        from pycocotools.coco import COCO

        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.coco = _quiet_coco(COCO, self.ann_file)
        self.transforms = transforms
        self.train = train
        cat_ids = sorted(self.coco.getCatIds())
        self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(cat_ids)}
        self.label_to_cat_id = {v: k for k, v in self.cat_id_to_label.items()}
        self.class_names = [self.coco.cats[cid]["name"] for cid in cat_ids]
        ids = sorted(self.coco.imgs)
        if train and filter_empty:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns.get(i, []))]
        self.ids: list[int] = ids

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> tv_tensors.Image:
        """The image as uint8 (3, H, W) RGB."""
        info = self.coco.imgs[image_id]
        with Image.open(self.image_dir / info["file_name"]) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        return tv_tensors.Image(torch.from_numpy(arr.copy()).permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)

    def load_target(self, image_id: int, height: int, width: int) -> dict[str, Any]:
        """Non-crowd instances with positive-area boxes; masks decoded only for training."""
        anns = [
            a
            for a in self.coco.imgToAnns.get(image_id, [])
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)  # (N, 4) xywh
        boxes[:, 2:] += boxes[:, :2]  # -> xyxy
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
        }
        if self.train:
            masks = np.zeros((len(anns), height, width), dtype=np.uint8)
            for k, a in enumerate(anns):
                masks[k] = self.coco.annToMask(a)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        return target

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        index, seed = (key, None) if isinstance(key, int) else key
        image_id = self.ids[index]
        image = self.load_image(image_id)
        target = self.load_target(image_id, image.shape[-2], image.shape[-1])
        if self.transforms is not None:
            if seed is None:
                image, target = self.transforms(image, target)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    image, target = self.transforms(image, target)
        return image, target


def _quiet_coco(cls: Any, path: Path) -> Any:
    """Load a COCO file without pycocotools' prints on stdout."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return cls(str(path))


def sample_seed(seed: int, position: int) -> int:
    """A 63-bit seed for the sample at global stream ``position`` of a run seeded with ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class TrainingSampler(Sampler[tuple[int, int]]):
    """Infinite, resumable stream of ``(index, sample_seed)`` for one rank.

    The global stream visits a fresh permutation of ``range(size)`` per epoch (permutation ``e`` seeded
    with ``seed + e``); position ``p`` belongs to rank ``p % world_size``. ``start`` is the first global
    position (iteration × global batch on resume), so a resumed run sees exactly the samples, in order and
    with the same augmentation seeds, that the uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        if size < 1:
            raise ValueError("the training set is empty (no image has a non-crowd annotation)")
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start

    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        p = self.start + ((self.rank - self.start) % self.world_size)
        epoch, perm = -1, []
        while True:
            e = p // self.size
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield perm[p % self.size], sample_seed(self.seed, p)
            p += self.world_size


def collate(batch: Sequence[Sample]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Keep variable-size images as lists (torchvision's detection models take lists)."""
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


def to_model_inputs(
    images: Sequence[torch.Tensor], targets: Sequence[dict[str, Any]] | None, device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None]:
    """uint8 (3, H, W) images → float32 in [0, 1] on ``device``; target tensors as plain tensors."""
    imgs = [img.to(device, non_blocking=True).float().div_(255.0).as_subclass(torch.Tensor) for img in images]
    if targets is None:
        return imgs, None
    out: list[dict[str, torch.Tensor]] = []
    for t in targets:
        d: dict[str, torch.Tensor] = {}
        for k in ("boxes", "labels", "masks"):
            if k in t:
                d[k] = t[k].to(device).as_subclass(torch.Tensor)
        out.append(d)
    return imgs, out
