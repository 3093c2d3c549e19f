"""Typed pre-training recipes (frozen pydantic, ``key=value`` overrides like the fine-tuning recipes).

A recipe is ``<method>-<size>``: the method (``mae``, ``supervised``, ``mocov3``), the encoder (the
same ViT as the fine-tuning recipe named by ``detector_recipe``, at its ``pretrain_img_size``), the
method's own knobs and an epoch-based schedule (per-iteration linear warmup + half-cosine to
``min_lr``). The learning rate follows the linear scaling rule ``lr = base_lr × batch_size /
lr_batch_base``. Sources:
- MAE ViT-B/L: He et al. 2021 (arXiv 2111.06377) and the release's PRETRAIN.md — 1600 epochs (the
  released weights; 800 in the paper's ablations), blr 1.5e-4 at 256, batch 4096, wd 0.05, AdamW
  betas (0.9, 0.95), 40 warmup epochs, mask 75 %, decoder 512-d × 8 blocks × 16 heads, norm-pix loss.
- MoCo v3 ViT-B: Chen, Xie, He 2021 (arXiv 2104.02057) and the release's CONFIG.md — 300 epochs,
  lr 1.5e-4 at 256, batch 4096, wd 0.1, 40 warmup epochs, T 0.2, momentum 0.99 → 1 (cosine),
  projector/predictor 4096 hidden → 256, stop-grad patch projection, crop scale (0.08, 1). The
  release lists no ViT-L configuration; ``mocov3-l`` uses the ViT-B one.
- Supervised ViT-B: DeiT-B (Touvron et al. 2020, arXiv 2012.12877) — 300 epochs, lr 5e-4 at 512,
  batch 1024, wd 0.05, 5 warmup epochs, min lr 1e-5, label smoothing 0.1, drop path 0.1. DeiT has no
  ViT-L recipe; ``supervised-l`` uses the same schedule with drop path 0.2.
- Tiny (CPU): ``bench-tiny``'s ViT (96-d, depth 4, 3 heads, patch 16) at 64 px, settings of a toy
  feasibility run on a 2-core CPU that transferred (MAE: lr 1.5e-3 at batch 256, betas (0.9, 0.95),
  wd 0.05, 5 % warmup + cosine, 2-block 96-d decoder).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vitbench.suggest import did_you_mean
from vitbench.trainer.recipes import Recipe, RecipeError, _deep_merge, _Section, get_recipe

__all__ = [
    "METHODS",
    "PretrainRecipe",
    "check_matches_detector",
    "get_pretrain_recipe",
    "list_pretrain_recipes",
]

Method = Literal["mae", "supervised", "mocov3"]
METHODS: tuple[str, ...] = ("mae", "supervised", "mocov3")


class EncoderConfig(_Section):
    """The ViT being pre-trained; ``img_size`` (px) must equal the detector recipe's pretrain_img_size."""

    embed_dim: int = Field(default=768, gt=0)
    depth: int = Field(default=12, gt=0)
    num_heads: int = Field(default=12, gt=0)
    mlp_ratio: float = Field(default=4.0, gt=0)
    patch_size: int = Field(default=16, gt=0)
    img_size: int = Field(default=224, gt=0)
    drop_path: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.embed_dim % 4:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by 4 (2-D sin-cos embedding)")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        return self


class MaeConfig(_Section):
    """MAE: share of patches removed, decoder size, loss target and crop scale floor."""

    mask_ratio: float = Field(default=0.75, gt=0, lt=1)
    decoder_dim: int = Field(default=512, gt=0)
    decoder_depth: int = Field(default=8, ge=1)
    decoder_heads: int = Field(default=16, gt=0)
    norm_pix: bool = True
    crop_min: float = Field(default=0.2, gt=0, le=1)


class MoCoV3Config(_Section):
    """MoCo v3: projector/predictor sizes, temperature, EMA momentum (start value; cosine to 1)."""

    dim: int = Field(default=256, gt=0)
    mlp_dim: int = Field(default=4096, gt=0)
    temperature: float = Field(default=0.2, gt=0)
    momentum: float = Field(default=0.99, ge=0, le=1)
    momentum_cosine: bool = True
    stop_grad_patch_embed: bool = True
    crop_min: float = Field(default=0.08, gt=0, le=1)


class SupervisedConfig(_Section):
    """Supervised: pooling of the head's input, label smoothing, crop scale floor."""

    pool: Literal["cls", "avg"] = "cls"
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    crop_min: float = Field(default=0.08, gt=0, le=1)


class PretrainSolverConfig(_Section):
    """AdamW, epoch-based: warmup then half-cosine to ``min_lr``. ``max_iters`` (optimizer steps), when
    set, replaces ``epochs`` (for smoke runs). ``checkpoint_period`` is in steps."""

    base_lr: float = Field(default=1.5e-4, gt=0)
    lr_batch_base: int = Field(default=256, gt=0)
    min_lr: float = Field(default=0.0, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    batch_size: int = Field(default=4096, gt=0)
    epochs: float = Field(default=1600, gt=0)
    warmup_epochs: float = Field(default=40, ge=0)
    max_iters: int | None = Field(default=None, gt=0)
    amp: Literal["none", "bf16", "fp16"] = "fp16"
    grad_accum: int = Field(default=1, gt=0)
    clip_grad: float | None = Field(default=None, gt=0)
    checkpoint_period: int = Field(default=1000, gt=0)

    @property
    def lr(self) -> float:
        """Peak learning rate by the linear scaling rule."""
        return self.base_lr * self.batch_size / self.lr_batch_base

    @model_validator(mode="after")
    def _check(self) -> PretrainSolverConfig:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} exceeds epochs {self.epochs}")
        return self


class PretrainDataConfig(_Section):
    """Loader workers and pixel normalization (RGB, 0–255 scale; ImageNet's, as all three releases)."""

    num_workers: int = Field(default=8, ge=0)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)


class PretrainRecipe(_Section):
    """A complete pre-training recipe; ``model_dump(mode="json")`` is what the run's recipe.json holds."""

    name: str
    method: Method
    detector_recipe: str
    seed: int = 0
    encoder: EncoderConfig = EncoderConfig()
    mae: MaeConfig = MaeConfig()
    mocov3: MoCoV3Config = MoCoV3Config()
    supervised: SupervisedConfig = SupervisedConfig()
    solver: PretrainSolverConfig = PretrainSolverConfig()
    data: PretrainDataConfig = PretrainDataConfig()

    def iterations(self, dataset_size: int) -> tuple[int, int, int]:
        """(steps per epoch, total steps, warmup steps) for a dataset of ``dataset_size`` images.

        An epoch is ``dataset_size // batch_size`` full batches (at least 1). With ``max_iters`` set,
        warmup keeps its share of the schedule (``warmup_epochs / epochs``).
        """
        s = self.solver
        per_epoch = max(1, dataset_size // s.batch_size)
        if s.max_iters is not None:
            total = s.max_iters
            warmup = round(total * s.warmup_epochs / s.epochs)
        else:
            total = max(1, round(s.epochs * per_epoch))
            warmup = round(s.warmup_epochs * per_epoch)
        return per_epoch, total, min(warmup, total)


_TINY_ENCODER = {"embed_dim": 96, "depth": 4, "num_heads": 3, "patch_size": 16, "img_size": 64}
_VIT_L_ENCODER = {"embed_dim": 1024, "depth": 24, "num_heads": 16}


def _make(name: str, method: Method, detector: str, update: dict[str, object]) -> PretrainRecipe:
    base = PretrainRecipe(name=name, method=method, detector_recipe=detector).model_dump()
    return PretrainRecipe.model_validate(_deep_merge(base, update))


def _tiny(method: Method, update: dict[str, object]) -> PretrainRecipe:
    """``<method>-tiny``: bench-tiny's ViT at 64 px, fp32, batch 256, one loader worker, a checkpoint
    every 200 steps; ``update`` adds the method's own settings and its schedule."""
    tiny = {
        "encoder": _TINY_ENCODER,
        "solver": {"amp": "none", "batch_size": 256, "checkpoint_period": 200},
        "data": {"num_workers": 1},
    }
    return _make(f"{method}-tiny", method, "bench-tiny", _deep_merge(tiny, update))


def _build() -> dict[str, PretrainRecipe]:
    mae_b: dict[str, object] = {}  # the defaults are MAE ViT-B's
    moco_b: dict[str, object] = {
        "solver": {
            "base_lr": 1.5e-4,
            "weight_decay": 0.1,
            "betas": (0.9, 0.999),
            "epochs": 300,
            "warmup_epochs": 40,
        }
    }
    deit_b: dict[str, object] = {
        "encoder": {"drop_path": 0.1},
        "solver": {
            "base_lr": 5e-4,
            "lr_batch_base": 512,
            "min_lr": 1e-5,
            "weight_decay": 0.05,
            "betas": (0.9, 0.999),
            "batch_size": 1024,
            "epochs": 300,
            "warmup_epochs": 5,
        },
    }
    cat = {
        "mae-tiny": _tiny(
            "mae",
            {
                "mae": {"decoder_dim": 96, "decoder_depth": 2, "decoder_heads": 3},
                "solver": {"base_lr": 1.5e-3, "epochs": 70, "warmup_epochs": 3.5},
            },
        ),
        "mae-b": _make("mae-b", "mae", "bench-b", mae_b),
        "mae-l": _make("mae-l", "mae", "bench-l", {"encoder": _VIT_L_ENCODER}),
        "mocov3-tiny": _tiny(
            "mocov3",
            {
                "mocov3": {"dim": 64, "mlp_dim": 256},
                "solver": {
                    "base_lr": 1.5e-3,
                    "weight_decay": 0.1,
                    "betas": (0.9, 0.999),
                    "epochs": 70,
                    "warmup_epochs": 7,
                },
            },
        ),
        "mocov3-b": _make("mocov3-b", "mocov3", "bench-b", moco_b),
        "mocov3-l": _make("mocov3-l", "mocov3", "bench-l", _deep_merge(moco_b, {"encoder": _VIT_L_ENCODER})),
        "supervised-tiny": _tiny(
            "supervised",
            {
                "solver": {
                    "base_lr": 2e-3,
                    "lr_batch_base": 512,
                    "weight_decay": 0.05,
                    "betas": (0.9, 0.999),
                    "epochs": 40,
                    "warmup_epochs": 2,
                },
            },
        ),
        "supervised-b": _make("supervised-b", "supervised", "bench-b", deit_b),
        "supervised-l": _make(
            "supervised-l",
            "supervised",
            "bench-l",
            _deep_merge(deit_b, {"encoder": {**_VIT_L_ENCODER, "drop_path": 0.2}}),
        ),
    }
    return cat


_CATALOGUE = _build()


def list_pretrain_recipes(method: str | None = None) -> list[str]:
    """Names of the built-in pre-training recipes (of ``method`` when given)."""
    return [n for n, r in _CATALOGUE.items() if method is None or r.method == method]


def get_pretrain_recipe(method: str, name: str) -> PretrainRecipe:
    """The recipe ``name`` for ``method``; ``name`` may be the full name (``mae-tiny``) or the size
    (``tiny``, ``b``, ``l``). Raises :class:`RecipeError` naming the known ones."""
    if method not in METHODS:
        raise RecipeError(f"unknown pre-training method {method!r}; expected one of {', '.join(METHODS)}")
    full = name if name in _CATALOGUE else f"{method}-{name}"
    recipe = _CATALOGUE.get(full)
    if recipe is None:
        known = list_pretrain_recipes(method)
        hint = did_you_mean(full, known)
        raise RecipeError(
            f"unknown pre-training recipe {name!r} for method {method!r}; expected one of "
            f"{', '.join(known)} (or the size: tiny, b, l).{hint}"
        )
    if recipe.method != method:
        raise RecipeError(f"recipe {full!r} is for method {recipe.method!r}, not {method!r}")
    return recipe


def check_matches_detector(recipe: PretrainRecipe, detector: Recipe | None = None) -> Recipe:
    """The fine-tuning recipe the encoder is for; RecipeError when their ViTs differ (a load would fail)."""
    det = detector or get_recipe(recipe.detector_recipe)
    e, b = recipe.encoder, det.backbone
    pairs = {
        "embed_dim": (e.embed_dim, b.embed_dim),
        "depth": (e.depth, b.depth),
        "num_heads": (e.num_heads, b.num_heads),
        "mlp_ratio": (e.mlp_ratio, b.mlp_ratio),
        "patch_size": (e.patch_size, b.patch_size),
        "img_size/pretrain_img_size": (e.img_size, b.pretrain_img_size),
    }
    bad = [f"{k} {a} vs {c}" for k, (a, c) in pairs.items() if a != c]
    if bad or b.kind != "vit":
        what = "; ".join(bad) if bad else f"backbone kind {b.kind!r}"
        raise RecipeError(
            f"pre-training recipe {recipe.name!r} does not match detector recipe {det.name!r}: {what}"
        )
    return det
