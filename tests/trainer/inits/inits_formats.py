"""Writers of checkpoints with the exact key names, nesting and shapes of the published files.

Key names as the releases' code writes them (facebookresearch/mae models_mae.py, deit models.py,
moco-v3 vits.py). Widths are parameters so tests stay fast; a
ViT-B call (``width=768, depth=12, heads=12``) reproduces the published shapes.
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from vitbench.trainer.recipes import Recipe, apply_overrides, get_recipe

PATCH = 16


def _t(*shape: int, gen: torch.Generator) -> Tensor:
    return torch.randn(*shape, generator=gen) * 0.05


def _ln(prefix: str, width: int, gen: torch.Generator) -> dict[str, Tensor]:
    return {f"{prefix}.weight": 1 + _t(width, gen=gen), f"{prefix}.bias": _t(width, gen=gen)}


def _linear(prefix: str, out: int, inp: int, gen: torch.Generator, bias: bool = True) -> dict[str, Tensor]:
    d = {f"{prefix}.weight": _t(out, inp, gen=gen)}
    if bias:
        d[f"{prefix}.bias"] = _t(out, gen=gen)
    return d


def vit_block(
    prefix: str, width: int, gen: torch.Generator, *, mlp: int | None = None, beit: bool = False
) -> dict[str, Tensor]:
    """One timm-0.3/0.4 ViT block (MAE/DeiT/MoCo v3), or BEiT's (q/v biases, gamma_1/2)."""
    H = mlp or 4 * width
    d: dict[str, Tensor] = {}
    d |= _ln(f"{prefix}.norm1", width, gen)
    if beit:
        d[f"{prefix}.attn.q_bias"] = _t(width, gen=gen)
        d[f"{prefix}.attn.v_bias"] = _t(width, gen=gen)
        d |= _linear(f"{prefix}.attn.qkv", 3 * width, width, gen, bias=False)
    else:
        d |= _linear(f"{prefix}.attn.qkv", 3 * width, width, gen)
    d |= _linear(f"{prefix}.attn.proj", width, width, gen)
    d |= _ln(f"{prefix}.norm2", width, gen)
    d |= _linear(f"{prefix}.mlp.fc1", H, width, gen)
    d |= _linear(f"{prefix}.mlp.fc2", width, H, gen)
    if beit:
        d[f"{prefix}.gamma_1"] = 0.1 + _t(width, gen=gen)
        d[f"{prefix}.gamma_2"] = 0.1 + _t(width, gen=gen)
    return d


def vit_encoder(width: int, depth: int, grid: int = 14, seed: int = 0) -> dict[str, Tensor]:
    """ViT encoder keys (timm-0.3 naming): patch_embed, cls_token, pos_embed (1, 1 + grid², width),
    blocks, norm."""
    gen = torch.Generator().manual_seed(seed)
    d: dict[str, Tensor] = {
        "cls_token": _t(1, 1, width, gen=gen),
        "pos_embed": _t(1, 1 + grid * grid, width, gen=gen),
        "patch_embed.proj.weight": _t(width, 3, PATCH, PATCH, gen=gen),
        "patch_embed.proj.bias": _t(width, gen=gen),
    }
    for i in range(depth):
        d |= vit_block(f"blocks.{i}", width, gen)
    d |= _ln("norm", width, gen)
    return d


def deit_file(width: int, depth: int, num_classes: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``deit_base_patch16_224-b5f2ef4d.pth``: {"model": encoder + head (num_classes, width)}."""
    gen = torch.Generator().manual_seed(seed + 1)
    model = vit_encoder(width, depth, seed=seed) | _linear("head", num_classes, width, gen)
    return {"model": model}


def mae_file(width: int, depth: int, seed: int = 0) -> dict[str, Any]:
    """``mae_pretrain_vit_base.pth``: {"model": encoder only}."""
    return {"model": vit_encoder(width, depth, seed=seed)}


def mae_full_file(
    width: int,
    depth: int,
    dec_dim: int = 512,
    dec_depth: int = 8,
    dec_mlp: int | None = None,
    grid: int = 14,
    seed: int = 0,
) -> dict[str, Any]:
    """``mae_pretrain_vit_base_full.pth``: encoder + mask_token, decoder_embed, decoder_pos_embed,
    decoder_blocks.0-7 (512-d), decoder_norm, decoder_pred (16*16*3, 512)."""
    gen = torch.Generator().manual_seed(seed + 2)
    model = vit_encoder(width, depth, grid=grid, seed=seed)
    model["mask_token"] = _t(1, 1, dec_dim, gen=gen)
    model |= _linear("decoder_embed", dec_dim, width, gen)
    model["decoder_pos_embed"] = _t(1, 1 + grid * grid, dec_dim, gen=gen)
    for i in range(dec_depth):
        model |= vit_block(f"decoder_blocks.{i}", dec_dim, gen, mlp=dec_mlp)
    model |= _ln("decoder_norm", dec_dim, gen)
    model |= _linear("decoder_pred", PATCH * PATCH * 3, dec_dim, gen)
    return {"model": model}


def _bn(prefix: str, width: int, gen: torch.Generator, affine: bool = True) -> dict[str, Tensor]:
    d = {
        f"{prefix}.running_mean": _t(width, gen=gen),
        f"{prefix}.running_var": 1 + _t(width, gen=gen).abs(),
        f"{prefix}.num_batches_tracked": torch.tensor(1000),
    }
    if affine:
        d |= _ln(prefix, width, gen)
    return d


def _moco_mlp(prefix: str, inp: int, hidden: int, out: int, gen: torch.Generator) -> dict[str, Tensor]:
    """MoCo v3 ``_build_mlp(3, ...)``: Linear (no bias), BN, ReLU, Linear, BN, ReLU, Linear, BN."""
    d = _linear(f"{prefix}.0", hidden, inp, gen, bias=False) | _bn(f"{prefix}.1", hidden, gen)
    d |= _linear(f"{prefix}.3", hidden, hidden, gen, bias=False) | _bn(f"{prefix}.4", hidden, gen)
    d |= _linear(f"{prefix}.6", out, hidden, gen, bias=False) | _bn(f"{prefix}.7", out, gen, affine=False)
    return d


def mocov3_file(width: int, depth: int, seed: int = 0) -> dict[str, Any]:
    """``vit-b-300ep.pth.tar``: {epoch, arch, state_dict, optimizer, scaler}; weights under
    ``module.base_encoder.`` (+ projector ``head``), ``module.momentum_encoder.``, ``module.predictor.``."""
    gen = torch.Generator().manual_seed(seed + 3)
    hidden, dim = 64, 32  # published: 4096, 256
    state: dict[str, Tensor] = OrderedDict()
    for branch in ("base_encoder", "momentum_encoder"):
        enc = vit_encoder(width, depth, seed=seed if branch == "base_encoder" else seed + 100)
        enc |= _moco_mlp("head", width, hidden, dim, gen)
        state.update({f"module.{branch}.{k}": v for k, v in enc.items()})
    pred = _moco_mlp("predictor", dim, hidden, dim, gen)
    state.update({f"module.{k}": v for k, v in pred.items()})
    return {
        "epoch": 300,
        "arch": "vit_base",
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1.5e-4, "weight_decay": 0.1, "params": [0, 1]}]},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
    }


def beit_relative_position_index(window: int) -> Tensor:
    """BEiT's ``relative_position_index`` ((w²+1), (w²+1)) including the 3 cls entries."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    n = 2 * window - 1
    idx = torch.zeros(window * window + 1, window * window + 1, dtype=torch.long)
    idx[1:, 1:] = rel[..., 0] * n + rel[..., 1]
    num = n * n + 3
    idx[0, :], idx[:, 0], idx[0, 0] = num - 3, num - 2, num - 1
    return idx


def beit_file(
    width: int, depth: int, heads: int, window: int = 14, vocab: int = 8192, seed: int = 0
) -> dict[str, Any]:
    """``beit_base_patch16_224_pt22k.pth``: {"model": cls_token, mask_token, patch_embed, blocks with
    q_bias/v_bias + gamma_1/2, shared rel_pos_bias table ((2w-1)²+3, nH) + index, norm, lm_head}."""
    gen = torch.Generator().manual_seed(seed + 4)
    model: dict[str, Tensor] = {
        "cls_token": _t(1, 1, width, gen=gen),
        "mask_token": _t(1, 1, width, gen=gen),
        "patch_embed.proj.weight": _t(width, 3, PATCH, PATCH, gen=gen),
        "patch_embed.proj.bias": _t(width, gen=gen),
        "rel_pos_bias.relative_position_bias_table": _t((2 * window - 1) ** 2 + 3, heads, gen=gen) * 10,
        "rel_pos_bias.relative_position_index": beit_relative_position_index(window),
    }
    for i in range(depth):
        model |= vit_block(f"blocks.{i}", width, gen, beit=True)
    model |= _ln("norm", width, gen)
    model |= _linear("lm_head", vocab, width, gen)
    return {"model": model}


def swin_relative_position_index(window: int) -> Tensor:
    """Official Swin ``relative_position_index`` (w², w²)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def swin_encoder(
    width: int,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    window: int = 7,
    img: int = 224,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Official Swin (Transformer-SSL ``models/swin_transformer.py``) state dict, ``ape=False``,
    ``patch_norm=True``, ``num_classes=0``: patch_embed.{proj,norm}, layers.s.blocks.b.* with per-block
    bias tables + index buffers (+ ``attn_mask`` for shifted blocks), layers.s.downsample, norm."""
    gen = torch.Generator().manual_seed(seed)
    d: dict[str, Tensor] = {
        "patch_embed.proj.weight": _t(width, 3, 4, 4, gen=gen),
        "patch_embed.proj.bias": _t(width, gen=gen),
    }
    d |= _ln("patch_embed.norm", width, gen)
    res = img // 4
    for s, (depth, nH) in enumerate(zip(depths, heads, strict=True)):
        dim = width * 2**s
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}"
            d |= _ln(f"{p}.norm1", dim, gen)
            d[f"{p}.attn.relative_position_bias_table"] = _t((2 * window - 1) ** 2, nH, gen=gen) * 10
            d[f"{p}.attn.relative_position_index"] = swin_relative_position_index(window)
            d |= _linear(f"{p}.attn.qkv", 3 * dim, dim, gen)
            d |= _linear(f"{p}.attn.proj", dim, dim, gen)
            d |= _ln(f"{p}.norm2", dim, gen)
            d |= _linear(f"{p}.mlp.fc1", 4 * dim, dim, gen)
            d |= _linear(f"{p}.mlp.fc2", dim, 4 * dim, gen)
            if b % 2 == 1 and res > window:
                d[f"{p}.attn_mask"] = torch.zeros((res // window) ** 2, window * window, window * window)
        if s < len(depths) - 1:
            d |= _linear(f"layers.{s}.downsample.reduction", 2 * dim, 4 * dim, gen, bias=False)
            d |= _ln(f"layers.{s}.downsample.norm", 4 * dim, gen)
            res //= 2
    d |= _ln("norm", width * 2 ** (len(depths) - 1), gen)
    return d


class _CfgNode(dict):  # stands in for yacs.config.CfgNode while the file is written
    pass


def moby_file(width: int, depths: tuple[int, ...], heads: tuple[int, ...], seed: int = 0) -> dict[str, Any]:
    """``moby_swin_t_300ep_pretrained.pth``: {model, optimizer, lr_scheduler, max_accuracy, epoch, config};
    ``model`` holds ``encoder.*`` (online), ``encoder_k.*`` (momentum), ``projector.*``, ``projector_k.*``,
    ``predictor.*``, ``queue1``/``queue2`` (256, 4096), ``queue_ptr``. ``config`` is a yacs CfgNode."""
    gen = torch.Generator().manual_seed(seed + 5)
    out_dim = width * 2 ** (len(depths) - 1)
    model: dict[str, Tensor] = OrderedDict()
    for branch, s in (("encoder", seed), ("encoder_k", seed + 100)):
        model.update({f"{branch}.{k}": v for k, v in swin_encoder(width, depths, heads, seed=s).items()})
    for proj in ("projector", "projector_k"):
        model |= _linear(f"{proj}.linear_hidden.0", 64, out_dim, gen) | _bn(
            f"{proj}.linear_hidden.1", 64, gen
        )
        model |= _linear(f"{proj}.linear_out", 32, 64, gen)
    model |= _linear("predictor.linear_hidden.0", 64, 32, gen) | _bn("predictor.linear_hidden.1", 64, gen)
    model |= _linear("predictor.linear_out", 32, 64, gen)
    model["queue1"] = torch.nn.functional.normalize(_t(32, 128, gen=gen), dim=0)
    model["queue2"] = torch.nn.functional.normalize(_t(32, 128, gen=gen), dim=0)
    model["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    _CfgNode.__module__ = "yacs.config"
    _CfgNode.__qualname__ = "CfgNode"
    cfg = _CfgNode(MODEL=_CfgNode(TYPE="swin", SWIN=_CfgNode(EMBED_DIM=width)), TRAIN=_CfgNode(EPOCHS=300))
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "lr_scheduler": {"last_epoch": 300},
        "max_accuracy": 0.0,
        "epoch": 299,
        "config": cfg,
    }


def save_with_fake_yacs(obj: Any, path: Any) -> None:
    """torch.save ``obj`` while a ``yacs.config`` module exists (as on the machine that wrote MoBY files)."""
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    config.CfgNode = _CfgNode  # type: ignore[attr-defined]
    had = {k: sys.modules.get(k) for k in ("yacs", "yacs.config")}
    sys.modules["yacs"], sys.modules["yacs.config"] = yacs, config
    try:
        torch.save(obj, path)
    finally:
        for k, v in had.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def equivalence_recipe(name: str = "bench-tiny", *extra: str) -> Recipe:
    """``name`` at 224 px with pos_embed stored at the 14x14 pre-training grid (no resize anywhere)."""
    return apply_overrides(
        get_recipe(name), ["input.image_size=224", "backbone.pretrain_img_size=224", *extra]
    )
