"""Write pre-trained weights exactly in the official releases' formats, so the catalog's inits read them.

- MAE (facebookresearch/mae ``mae_pretrain_vit_*.pth``): ``{'model': encoder}`` with ``patch_embed.*``,
  ``cls_token``, ``pos_embed``, ``blocks.*``, ``norm.*``; the ``_full`` file adds ``mask_token``,
  ``decoder_embed.*``, ``decoder_pos_embed``, ``decoder_blocks.*``, ``decoder_norm.*``, ``decoder_pred.*``
  (read by the ``mae`` / ``mae_full`` inits).
- DeiT / timm (``deit_base_patch16_224-*.pth``): ``{'model': ViT with head.*}`` (the ``supervised`` init).
- MoCo v3 (``vit-b-300ep.pth.tar``): ``{'epoch', 'arch', 'state_dict', 'optimizer', 'scaler'}`` with the
  DDP-wrapped names ``module.base_encoder.*`` (projector as ``head.*``), ``module.momentum_encoder.*``
  and ``module.predictor.*`` (the ``mocov3`` init).

Tensors are written as contiguous float32 CPU copies; every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vitbench.trainer.engine.checkpoint import atomic_save

# MAE state-dict keys that belong to the decoder (left out of the encoder-only file).
MAE_DECODER_PREFIXES = ("decoder_", "mask_token")


@dataclass(frozen=True)
class PretrainedFile:
    """One written file and the catalog init that loads it."""

    init: str
    path: Path


def _cpu(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        t = v.detach().to("cpu")
        out[k] = (t.float() if t.is_floating_point() else t).contiguous().clone()
    return out


def mae_files(state: Mapping[str, Tensor], out_dir: Path, tag: str) -> list[PretrainedFile]:
    """``mae_pretrain_vit_<tag>.pth`` (encoder) and ``mae_pretrain_vit_<tag>_full.pth`` (+ decoder) from
    a :class:`~vitbench.trainer.pretrain.mae.MaskedAutoencoder` state dict."""
    enc = out_dir / f"mae_pretrain_vit_{tag}.pth"
    full = out_dir / f"mae_pretrain_vit_{tag}_full.pth"
    cpu = _cpu(state)
    atomic_save({"model": {k: v for k, v in cpu.items() if not k.startswith(MAE_DECODER_PREFIXES)}}, enc)
    atomic_save({"model": cpu}, full)
    return [PretrainedFile("mae", enc), PretrainedFile("mae_full", full)]


def deit_file(state: Mapping[str, Tensor], out_dir: Path, tag: str) -> list[PretrainedFile]:
    """``deit_<tag>.pth``: a :class:`~vitbench.trainer.pretrain.supervised.ViTClassifier` state dict
    (timm names, ``head.*`` included) under ``model``."""
    path = out_dir / f"deit_{tag}.pth"
    atomic_save({"model": _cpu(state)}, path)
    return [PretrainedFile("supervised", path)]


def mocov3_file(
    state: Mapping[str, Tensor],
    out_dir: Path,
    tag: str,
    *,
    epoch: int,
    arch: str,
    optimizer: Mapping[str, Any] | None = None,
    scaler: Mapping[str, Any] | None = None,
) -> list[PretrainedFile]:
    """``mocov3_vit_<tag>.pth.tar`` as the release's ``save_checkpoint`` writes it: the
    :class:`~vitbench.trainer.pretrain.mocov3.MoCoV3` state dict under DDP's ``module.`` names.

    ``optimizer`` / ``scaler`` are the state dicts of the run (written as given; empty when omitted).
    """
    path = out_dir / f"mocov3_vit_{tag}.pth.tar"
    payload = {
        "epoch": int(epoch),
        "arch": arch,
        "state_dict": {f"module.{k}": v for k, v in _cpu(state).items()},
        "optimizer": dict(optimizer or {}),
        "scaler": dict(scaler or {}),
    }
    atomic_save(payload, path)
    return [PretrainedFile("mocov3", path)]


def load_release(path: Path) -> Mapping[str, Any]:
    """Read a written file back (weights only) — for checks and tests."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a mapping")
    return obj
