"""Data: COCO-format datasets (pycocotools), LSJ transforms, the synthetic generator and the checker.

Layout of a dataset folder ``DIR``: images in ``DIR/<split>/`` and annotations in
``DIR/annotations/instances_<split>.json`` for the splits ``train`` and ``val``.
"""

from __future__ import annotations

from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "val")


def split_paths(root: Path, split: str) -> tuple[Path, Path]:
    """Return ``(image_dir, annotation_file)`` of ``split`` in the dataset folder ``root``."""
    return root / split, root / "annotations" / f"instances_{split}.json"
