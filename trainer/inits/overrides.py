"""Per-initialization recipe overrides: the study's tuned lr / wd / drop path and the ViTDet recipe.

Sources: Li et al., arXiv 2111.11429 §2.4 / §4.2 (the study's tuned values per init: random lr
1.6e-4 wd 0.2; MoCo v3 lr 1.6e-4 wd 0.1; supervised / BEiT / MAE lr 8e-5 wd 0.1; drop path 0.1 for
ViT-B and 0.3 for ViT-L), Li et al., arXiv 2203.16527 App. A.2 and detectron2 projects/ViTDet/configs
(ViTDet: lr 1e-4, wd 0.1, layer decay 0.7 / 0.8 / 0.9 and drop path
0.1 / 0.4 / 0.5 for B / L / H), arXiv 2111.11429 §3 and microsoft/unilm beit/modeling_finetune.py
(BEiT needs q/v biases and layer scale in the blocks).
Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitbench.trainer.inits.catalog import get_init
from vitbench.trainer.recipes import Recipe


@dataclass(frozen=True)
class StudyHparams:
    """The study's tuned AdamW lr and weight decay for one init (arXiv 2111.11429 §4.2)."""

    lr: float
    weight_decay: float


STUDY_HPARAMS: dict[str, StudyHparams] = {
    "random": StudyHparams(1.6e-4, 0.2),
    "supervised": StudyHparams(8e-5, 0.1),
    "mocov3": StudyHparams(1.6e-4, 0.1),
    "beit": StudyHparams(8e-5, 0.1),
    "mae": StudyHparams(8e-5, 0.1),
    "mae_full": StudyHparams(8e-5, 0.1),
}
# Drop path by ViT size in the study (tuned per size, the same for every init).
STUDY_DROP_PATH = {"B": 0.1, "L": 0.3}
# ViTDet recipe by ViT size: (drop path, layer-wise lr decay); lr 1e-4 and wd 0.1 for all.
VITDET_VALUES = {"B": (0.1, 0.7), "L": (0.4, 0.8), "H": (0.5, 0.9)}
VITDET_LR, VITDET_WD = 1e-4, 0.1
# BEiT layer-scale init values by size (microsoft/unilm beit/modeling_pretrain.py); the checkpoint's
# gammas overwrite them.
BEIT_LAYER_SCALE = {"B": 0.1, "L": 1e-5, "H": 1e-5}
_SIZES = {768: "B", 1024: "L", 1280: "H"}


def vit_size(recipe: Recipe) -> str | None:
    """``"B"``, ``"L"`` or ``"H"`` for a plain ViT of that width, None otherwise (tiny presets, Swin)."""
    if recipe.backbone.kind != "vit":
        return None
    return _SIZES.get(recipe.backbone.embed_dim)


def apply_init_overrides(recipe: Recipe, init: str) -> Recipe:
    """Return ``recipe`` adjusted for ``init``; raises InitError for an unknown init.

    - pixel mean/std become the init's pre-training normalization;
    - ``beit`` turns on separate q/v biases and layer scale (its checkpoint needs them);
    - study recipes (``multiscale_fpn`` neck) of ViT-B/L get the init's tuned lr/wd and the size's drop
      path; ViTDet recipes (``simple_fpn``) of ViT-B/L/H get lr 1e-4, wd 0.1 and the size's layer
      decay and drop path. CPU presets, MIMDet and Swin keep their own schedule.
    """
    spec = get_init(init)
    data: dict[str, Any] = recipe.model_dump()
    data["input"]["pixel_mean"] = spec.pixel_mean
    data["input"]["pixel_std"] = spec.pixel_std
    size = vit_size(recipe)
    bb, solver = data["backbone"], data["solver"]
    if init == "beit" and recipe.backbone.kind == "vit":
        bb["qv_bias"] = True
        bb["layer_scale"] = BEIT_LAYER_SCALE.get(size or "B", 0.1)
    if size is not None and recipe.neck.kind == "multiscale_fpn" and init in STUDY_HPARAMS:
        hp = STUDY_HPARAMS[init]
        solver["lr"], solver["weight_decay"] = hp.lr, hp.weight_decay
        if size in STUDY_DROP_PATH:
            bb["drop_path"] = STUDY_DROP_PATH[size]
    elif size is not None and recipe.neck.kind == "simple_fpn":
        bb["drop_path"], solver["layer_decay"] = VITDET_VALUES[size]
        solver["lr"], solver["weight_decay"] = VITDET_LR, VITDET_WD
    return Recipe.model_validate(data)
