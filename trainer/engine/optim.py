"""AdamW with the study's weight-decay rules and ViTDet's optional layer-wise lr decay.

No weight decay on: every 1-D parameter (norm weights/biases of LayerNorm/BatchNorm/GroupNorm, all
biases, BEiT's ``q_bias``/``v_bias`` and layer-scale ``gamma_*``) and on position embeddings, the class
token and relative-position tables (``pos_embed``, ``cls_token``, ``rel_pos_h``/``rel_pos_w``,
``relative_position_bias_table``). Everything else gets ``weight_decay``.

Layer decay (detectron2 ``get_vit_lr_decay_rate``): a parameter in ``backbone.net.blocks.i`` gets
``rate ** (depth - i)`` (last block ``rate``), ``pos_embed``/``patch_embed``/``cls_token`` get
``rate ** (depth + 1)``, everything else (neck, heads, shared tables) gets 1.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

NO_DECAY_NAMES: tuple[str, ...] = (
    "pos_embed",
    "cls_token",
    "rel_pos_h",
    "rel_pos_w",
    "relative_position_bias_table",
)

_BLOCK_RE = re.compile(r"(?:^|\.)net\.blocks\.(\d+)\.")
_EMBED_RE = re.compile(r"(?:^|\.)net\.(pos_embed|patch_embed|cls_token)")


def wants_weight_decay(name: str, param: torch.Tensor) -> bool:
    """True when ``param`` (called ``name`` in ``model.named_parameters()``) gets weight decay."""
    if param.ndim <= 1:
        return False
    leaf = name.rsplit(".", 1)[-1]
    return not any(leaf == key or name.endswith(f".{key}") or f".{key}." in name for key in NO_DECAY_NAMES)


def layer_lr_scale(name: str, layer_decay: float | None, depth: int) -> float:
    """The layer-decay multiplier of parameter ``name`` for a ViT of ``depth`` blocks (1.0 when off)."""
    if layer_decay is None or layer_decay == 1.0:
        return 1.0
    m = _BLOCK_RE.search(name)
    if m:
        return float(layer_decay ** (depth - int(m.group(1))))
    if _EMBED_RE.search(name):
        return float(layer_decay ** (depth + 1))
    return 1.0


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None, depth: int = 12
) -> list[dict[str, Any]]:
    """Parameter groups keyed by (weight decay, lr scale); each has ``lr = lr * lr_scale``,
    ``lr_scale`` and ``param_names`` (for inspection). Frozen parameters are skipped."""
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = weight_decay if wants_weight_decay(name, p) else 0.0
        scale = layer_lr_scale(name, layer_decay, depth)
        g = groups.setdefault(
            (wd, scale),
            {"params": [], "param_names": [], "weight_decay": wd, "lr": lr * scale, "lr_scale": scale},
        )
        g["params"].append(p)
        g["param_names"].append(name)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    layer_decay: float | None = None,
    depth: int = 12,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`."""
    groups = param_groups(model, lr, weight_decay, layer_decay, depth)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
