"""Pre-training data: unlabeled images (any folder, recursively, or a COCO dataset's train images),
an ``ImageFolder`` tree for supervised pre-training, and each method's augmentation.

Augmentations (on PIL images, then ToTensor + Normalize with the recipe's mean / std):
- MAE (He et al. 2021): random resized crop, scale (0.2, 1), bicubic, + horizontal flip.
- MoCo v3 (Chen et al. 2021, BYOL's asymmetric pair): random resized crop (crop_min, 1), colour
  jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2, Gaussian blur p 1.0 / 0.1, solarize p 0 / 0.2,
  flip. The blur's sigma range (0.1–2 px at 224 px) and kernel scale with the image size.
- Supervised (DeiT, scaled down): random resized crop (crop_min, 1) + flip; RandAugment, mixup,
  cutmix and random erasing are left out at the toy scale.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from vitbench.trainer.data import split_paths

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class PretrainDataError(ValueError):
    """The data folder holds no usable images (the message says what was looked for)."""


def find_images(root: Path) -> list[Path]:
    """Image files for self-supervised pre-training, sorted.

    A COCO dataset folder (``annotations/instances_train.json`` present) gives the images its train
    annotation file lists — never val, which fine-tuning evaluates on. Any other folder gives every
    file with an image extension below it, recursively.
    """
    if not root.is_dir():
        raise PretrainDataError(f"data folder {root} does not exist or is not a folder")
    img_dir, ann = split_paths(root, "train")
    if ann.is_file():
        with ann.open(encoding="utf-8") as fh:
            names = [str(im["file_name"]) for im in json.load(fh).get("images", [])]
        paths = [img_dir / n for n in names]
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise PretrainDataError(f"{len(absent)} images listed in {ann} are missing, e.g. {absent[0]}")
    else:
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise PretrainDataError(
            f"no images found in {root}: expected a COCO dataset (annotations/instances_train.json) or "
            f"a folder with {', '.join(IMAGE_EXTENSIONS)} files"
        )
    return paths


class UnlabeledImages(Dataset[Any]):
    """Images from a list of paths, each returned as ``transform(RGB PIL image)``."""

    def __init__(self, paths: Sequence[Path], transform: Callable[[Image.Image], Any]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        with Image.open(self.paths[index]) as im:
            return self.transform(im.convert("RGB"))


class TwoViews:
    """Apply two (different) augmentations to one image: returns ``(view1, view2)``."""

    def __init__(
        self, first: Callable[[Image.Image], torch.Tensor], second: Callable[[Image.Image], torch.Tensor]
    ):
        self.first, self.second = first, second

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first(image), self.second(image)


def _normalize(mean: Sequence[float], std: Sequence[float]) -> T.Normalize:
    """Normalize for ToTensor's 0–1 scale from a mean / std on the 0–255 scale."""
    return T.Normalize([m / 255.0 for m in mean], [s / 255.0 for s in std])


def mae_transform(size: int, mean: Sequence[float], std: Sequence[float], crop_min: float = 0.2) -> T.Compose:
    """MAE pre-training augmentation."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(crop_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


def _mocov3_view(
    size: int, mean: Sequence[float], std: Sequence[float], crop_min: float, blur_p: float, solarize_p: float
) -> T.Compose:
    scale = size / 224.0
    kernel = max(3, round(0.1 * size) | 1)  # odd, about a tenth of the image side
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(crop_min, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1 * scale, 2.0 * scale))], p=blur_p),
            T.RandomSolarize(128, p=solarize_p),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


def mocov3_transform(
    size: int, mean: Sequence[float], std: Sequence[float], crop_min: float = 0.08
) -> TwoViews:
    """MoCo v3's asymmetric two-view augmentation, scaled to ``size`` px."""
    return TwoViews(
        _mocov3_view(size, mean, std, crop_min, blur_p=1.0, solarize_p=0.0),
        _mocov3_view(size, mean, std, crop_min, blur_p=0.1, solarize_p=0.2),
    )


def supervised_transform(
    size: int, mean: Sequence[float], std: Sequence[float], crop_min: float = 0.08
) -> T.Compose:
    """Scaled-down DeiT training augmentation."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(crop_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


def image_folder(root: Path, transform: Callable[[Image.Image], Any]) -> Any:
    """torchvision ``ImageFolder`` over ``root/<class>/<image>``; clear error when it is not one."""
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise PretrainDataError(f"data folder {root} does not exist or is not a folder")
    try:
        ds = ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise PretrainDataError(
            f"{root} is not an ImageFolder tree (expected one sub-folder of images per class): {exc}"
        ) from None
    if len(ds.classes) < 2:
        raise PretrainDataError(f"{root} has {len(ds.classes)} class folder(s); supervised needs at least 2")
    return ds


class SeededSamples(Dataset[Any]):
    """Wrap a dataset so that ``ds[(index, seed)]`` draws its augmentation from ``seed``.

    With the engine's resumable :class:`~vitbench.trainer.data.coco.TrainingSampler` (which yields
    ``(index, sample_seed)``), a resumed run sees the same samples with the same augmentations as an
    uninterrupted one, whatever the number of loader workers. torchvision's transforms draw from the
    torch generator, which is forked and seeded per sample.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, int):
            return self.dataset[key]
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
