"""Parameter counts per component, output strides and attention layout of a detector.

``summarize_recipe(recipe)`` builds the model on the meta device (no memory, no init cost), so
even ViT-H summaries are instant. The JSON form is what ``vitbench model summary --json`` prints.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitbench.trainer.models.necks import STRIDES
from vitbench.trainer.recipes import Recipe

__all__ = ["component_params", "summarize_model", "summarize_recipe"]


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def component_params(model: nn.Module) -> dict[str, int]:
    """Parameters of ``backbone`` (without its neck), ``neck``, ``rpn``, ``roi_heads`` and ``total``.

    ``model`` is a torchvision ``MaskRCNN`` whose backbone owns its pyramid as ``neck`` (plain ViT) or
    ``fpn`` (MIMDet, Swin); a backbone with neither counts entirely as ``backbone``.
    """
    backbone = model.get_submodule("backbone")
    neck = next(
        (m for m in (getattr(backbone, name, None) for name in ("neck", "fpn")) if isinstance(m, nn.Module)),
        None,
    )
    counts = {
        "backbone": _count(backbone) - _count(neck),
        "neck": _count(neck),
        "rpn": _count(model.get_submodule("rpn")),
        "roi_heads": _count(model.get_submodule("roi_heads")),
    }
    counts["total"] = _count(model)
    return counts


def summarize_model(model: nn.Module, recipe: Recipe, num_classes: int) -> dict[str, Any]:
    """JSON-ready summary: ``params`` per component, ``strides`` per level, ``attention`` layout."""
    bb = recipe.backbone
    depth = bb.depth
    windowed = [i for i in range(depth) if bb.window_size > 0 and i not in bb.global_blocks]
    return {
        "recipe": recipe.name,
        "num_classes": num_classes,
        "image_size": recipe.input.image_size,
        "backbone_kind": bb.kind,
        "neck_kind": recipe.neck.kind,
        "params": component_params(model),
        "strides": dict(STRIDES),
        "attention": {
            "window_size": bb.window_size,
            "global_blocks": sorted(set(range(depth)) - set(windowed)) if bb.kind != "swin" else [],
            "windowed_blocks": windowed if bb.kind != "swin" else [],
            "rel_pos": bb.rel_pos,
        },
    }


def summarize_recipe(recipe: Recipe, num_classes: int = 80) -> dict[str, Any]:
    """Build ``recipe``'s detector on the meta device and summarize it (see :func:`summarize_model`).

    Falls back to a CPU build when a backbone cannot be constructed on the meta device.
    """
    from vitbench.trainer.models.detector import build_detector

    try:
        with torch.device("meta"):
            model = build_detector(recipe, num_classes)
    except NotImplementedError:  # a backbone whose constructor reads tensor data: build it for real
        model = build_detector(recipe, num_classes)
    return summarize_model(model, recipe, num_classes)
