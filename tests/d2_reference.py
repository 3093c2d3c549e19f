"""detectron2 rules written out for tests to compare against (detectron2 is not a dependency)."""

from __future__ import annotations


def d2_vit_lr_decay_rate(name: str, lr_decay_rate: float, num_layers: int) -> float:
    """detectron2 ``get_vit_lr_decay_rate`` (projects/ViTDet, ``vit.py`` of detectron2.modeling.backbone),
    copied verbatim in spirit: pos/patch embed = layer 0, block i = layer i + 1, the rest = num_layers + 1."""
    layer_id = num_layers + 1
    if name.startswith("backbone"):
        if ".pos_embed" in name or ".patch_embed" in name:
            layer_id = 0
        elif ".blocks." in name and ".residual." not in name:
            layer_id = int(name[name.find(".blocks.") :].split(".")[2]) + 1
    return float(lr_decay_rate ** (num_layers + 1 - layer_id))
