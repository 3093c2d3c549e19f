"""Converters: published checkpoint names and layouts -> this project's ``model.state_dict()`` names.

Every converter takes the checkpoint's weights (already unwrapped, prefix-stripped and with the
catalog's known-irrelevant keys dropped), the target's ``{full key: shape}`` and the recipe, and
returns a :class:`Converted`. Tensors that it maps carry full model keys (``backbone.net.blocks.0...``);
tensors it cannot place keep their checkpoint name so the LoadReport lists them as unexpected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vitbench.trainer.inits.converted import Converted, Shapes
from vitbench.trainer.inits.d2_heads import map_detectron2
from vitbench.trainer.inits.errors import InitError
from vitbench.trainer.models.vit import resize_pos_grid

__all__ = ["CONVERTERS", "Converted", "Shapes", "resize_bias_table", "resize_pos_embed", "to_tensor"]

VIT_PREFIX = "backbone.net."
MIMDET_PREFIX = "backbone."
SWIN_PREFIX = "backbone.body."
_VIT_CORE = ("patch_embed.", "blocks.", "pos_embed")


def resize_pos_embed(pos: Tensor, num_tokens: int) -> Tensor:
    """Resize an absolute position embedding (1, [1+]g*g, C) to (1, num_tokens, C).

    A leading cls slot (token count = square + 1) is kept as is; the g x g grid is resized with
    :func:`vitbench.trainer.models.vit.resize_pos_grid` (as detectron2's ``get_abs_pos`` does).
    """
    n_src = pos.shape[1]
    src_cls = 0 if math.isqrt(n_src) ** 2 == n_src else 1
    dst_cls = 0 if math.isqrt(num_tokens) ** 2 == num_tokens else 1
    g_src, g_dst = math.isqrt(n_src - src_cls), math.isqrt(num_tokens - dst_cls)
    if g_src**2 != n_src - src_cls or g_dst**2 != num_tokens - dst_cls:
        raise InitError(f"pos_embed with {n_src} tokens cannot be resized to {num_tokens}: not a square grid")
    # (1, g*g, C) -> (1, G, G, C) -> (1, G*G, C)
    grid = resize_pos_grid(pos[:, src_cls:], (g_dst, g_dst)).reshape(1, g_dst * g_dst, pos.shape[2])
    if dst_cls:
        cls = pos[:, :1] if src_cls else torch.zeros_like(pos[:, :1])
        grid = torch.cat([cls, grid], dim=1)
    return grid


def resize_bias_table(table: Tensor, num_rows: int, extra_rows: int = 0) -> Tensor:
    """Resize a BEiT relative-position bias table ((2s-1)^2 [+ extra], nH) to (num_rows, nH).

    ``extra_rows`` trailing rows (BEiT's 3 cls entries) are dropped first; the (2s-1) x (2s-1) grid is
    resized bicubically (align_corners=False) to the target grid.
    """
    grid_rows = table.shape[0] - extra_rows
    src, dst = math.isqrt(grid_rows), math.isqrt(num_rows)
    if src * src != grid_rows or dst * dst != num_rows:
        raise InitError(
            f"relative position table of {table.shape[0]} rows is not a square grid (+{extra_rows})"
        )
    nH = table.shape[1]
    core = table[:grid_rows]
    if src == dst:
        return core.clone()
    # ((2s-1)^2, nH) -> (1, nH, 2s-1, 2s-1) -> resize -> ((2S-1)^2, nH)
    grid = core.reshape(src, src, nH).permute(2, 0, 1).unsqueeze(0).float()
    grid = F.interpolate(grid, size=(dst, dst), mode="bicubic", align_corners=False)
    return grid.squeeze(0).permute(1, 2, 0).reshape(dst * dst, nH).to(table.dtype)


def _place_vit(state: Mapping[str, Tensor], target: Shapes, prefix: str, out: Converted) -> None:
    """Map timm/MAE/DeiT ViT names onto the ViT at ``prefix`` (same names), resizing pos_embed."""
    for key, value in state.items():
        full = prefix + key
        if key == "pos_embed" and full in target and target[full][1] != value.shape[1]:
            out.tensors[full] = resize_pos_embed(value, target[full][1])
            out.resized.append(f"{full}: {list(value.shape)} -> {list(target[full])}")
        elif full in target or key.startswith(_VIT_CORE):
            out.tensors[full] = value
        else:
            out.tensors[key] = value


def convert_vit(state: Mapping[str, Tensor], target: Shapes, kind: str) -> Converted:
    """DeiT / timm / MoCo v3 ViT (timm vision_transformer.py / MAE models_mae.py names) -> d2 names."""
    out = Converted()
    _place_vit(state, target, VIT_PREFIX, out)
    return out


_DECODER_BLOCK = re.compile(r"^decoder_blocks\.(\d+)\.")


def convert_mae(state: Mapping[str, Tensor], target: Shapes, kind: str) -> Converted:
    """MAE encoder or ``_full`` file -> plain ViT (``vit``) or MIMDet encoder + first decoder blocks."""
    out = Converted()
    if kind != "mimdet":
        _place_vit(state, target, VIT_PREFIX, out)
        return out
    depth = 1 + max(
        (int(m.group(1)) for k in target if (m := re.match(r"^backbone\.decoder_blocks\.(\d+)\.", k))),
        default=-1,
    )
    for key, value in state.items():
        m = _DECODER_BLOCK.match(key)
        if key.startswith(("blocks.", "norm.")):
            out.tensors[MIMDET_PREFIX + "net." + key] = value
        elif key.startswith(("decoder_embed.", "decoder_norm.")) or (m and int(m.group(1)) < depth):
            out.tensors[MIMDET_PREFIX + key] = value
        else:
            out.tensors[key] = value
    out.notes.append(f"MIMDet keeps the first {depth} MAE decoder blocks; pos embeds are fixed 2-D sin-cos")
    return out


_QV_BIAS = re.compile(r"^blocks\.(\d+)\.attn\.q_bias$")
_SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"


def convert_beit(state: Mapping[str, Tensor], target: Shapes, kind: str) -> Converted:
    """BEiT pre-training file -> ``backbone.net.*`` (microsoft/unilm beit/modeling_pretrain.py;
    mapped as hustvl/MIMDet models/benchmarking.py).

    ``q_bias``/``v_bias`` stay separate when the target has them, else become a fused qkv bias with a
    zero key bias; ``gamma_1``/``gamma_2`` keep their names; the shared table loses its 3 cls rows and
    is resized into the window-set and global-set tables.
    """
    out = Converted()
    rest: dict[str, Tensor] = {}
    for key, value in state.items():
        m = _QV_BIAS.match(key)
        if m:
            i = m.group(1)
            v_key = f"blocks.{i}.attn.v_bias"
            if v_key not in state:
                raise InitError(f"BEiT checkpoint has {key} but no {v_key}")
            fused = f"{VIT_PREFIX}blocks.{i}.attn.qkv.bias"
            if f"{VIT_PREFIX}{key}" in target or fused not in target:
                rest[key], rest[v_key] = value, state[v_key]
            else:
                q, v = value, state[v_key]
                out.tensors[fused] = torch.cat([q, torch.zeros_like(q), v])
                out.notes.append("q_bias/v_bias fused into qkv.bias with a zero key bias")
        elif key.endswith(".attn.v_bias"):
            if key.replace(".v_bias", ".q_bias") not in state:
                raise InitError(f"BEiT checkpoint has {key} but no matching q_bias")
            continue  # consumed together with its q_bias
        elif key == _SHARED_TABLE:
            placed = False
            for table in ("rel_pos_window", "rel_pos_global"):
                dst = f"{VIT_PREFIX}{table}.relative_position_bias_table"
                if dst in target:
                    resized = resize_bias_table(value, target[dst][0], extra_rows=3)
                    out.tensors[dst] = resized
                    if resized.shape[0] != value.shape[0] - 3:
                        out.resized.append(f"{dst}: {list(value.shape)} -> {list(target[dst])}")
                    placed = True
            if not placed:
                out.tensors[key] = value
        else:
            rest[key] = value
    _place_vit(rest, target, VIT_PREFIX, out)
    if "pos_embed" not in state:
        out.notes.append("BEiT has no absolute position embedding: pos_embed keeps its random init")
    return out


_SWIN_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_SWIN_DOWN = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_SWIN_BLOCK_PARTS = {"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}


def convert_moby(state: Mapping[str, Tensor], target: Shapes, kind: str) -> Converted:
    """Official Swin names (MoBY ``encoder.*``) -> torchvision ``features`` at ``backbone.body``.

    ``patch_embed.proj/norm`` -> ``0.0``/``0.2``; ``layers.s.blocks.b`` -> ``{2s+1}.b`` (``mlp.fc1/fc2``
    -> ``mlp.0/mlp.3``); ``layers.s.downsample`` (end of stage s) -> ``{2s+2}``.
    """
    out = Converted()
    for key, value in state.items():
        dst: str | None = None
        if key.startswith("patch_embed.proj."):
            dst = "0.0." + key.removeprefix("patch_embed.proj.")
        elif key.startswith("patch_embed.norm."):
            dst = "0.2." + key.removeprefix("patch_embed.norm.")
        elif m := _SWIN_BLOCK.match(key):
            stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
            for old, new in _SWIN_BLOCK_PARTS.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
            dst = f"{2 * stage + 1}.{block}.{rest}"
        elif m := _SWIN_DOWN.match(key):
            dst = f"{2 * int(m.group(1)) + 2}.{m.group(2)}"
        out.tensors[SWIN_PREFIX + dst if dst is not None else key] = value
    return out


def convert_detectron2(state: Mapping[str, Tensor], target: Shapes, kind: str) -> Converted:
    """detectron2 ViTDet zoo names -> this detector: ``backbone.net.*`` is shared verbatim; the simple
    pyramid and heads are mapped by :mod:`trainer.inits.d2_heads`."""
    return map_detectron2(state, target)


def convert_none(state: Mapping[str, Tensor], target: Shapes, kind: str) -> Converted:
    """``random``: nothing to convert."""
    return Converted()


CONVERTERS: Mapping[str, Callable[[Mapping[str, Tensor], Shapes, str], Converted]] = {
    "none": convert_none,
    "vit": convert_vit,
    "mae": convert_mae,
    "beit": convert_beit,
    "moby": convert_moby,
    "detectron2": convert_detectron2,
}


def to_tensor(value: Any) -> Tensor | None:
    """A torch tensor for a tensor or numpy array value (copied, so the source may be freed); else None."""
    if isinstance(value, Tensor):
        return value
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return None
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return torch.from_numpy(np.ascontiguousarray(value)).clone()
    return None
