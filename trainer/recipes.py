"""Typed, validated, torch-free training recipes.

A recipe is architecture + schedule: what to build and how long to train it. Initialization-specific
hyper-parameters (the study tuned lr / wd per init) live in ``trainer/inits/overrides.py``.

Every recipe derives from one base (:data:`_BASE`, the study's ViT-B Mask R-CNN) through a small
deep-merged override, so a variant reads as the diff against its parent, as detectron2's LazyConfig
model zoo does. Recipes are frozen pydantic models: change one with :func:`apply_overrides`, which
validates the result.

Sources for every value: Li et al., arXiv 2111.11429 (the study); Li et al., arXiv 2203.16527 and
detectron2 projects/ViTDet/configs (ViTDet); Fang et al., arXiv 2204.02964 and hustvl/MIMDet configs (MIMDet);
Xie et al., arXiv 2105.04553 and SwinTransformer/Transformer-SSL (MoBY / Swin-T).
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vitbench.fileio import atomic_write_json
from vitbench.suggest import did_you_mean, lookup
from vitbench.trainer import rundir

__all__ = [
    "BackboneConfig",
    "DataConfig",
    "HeadsConfig",
    "InputConfig",
    "NeckConfig",
    "Recipe",
    "RecipeError",
    "SolverConfig",
    "apply_overrides",
    "get_recipe",
    "list_recipes",
    "load_recipe",
    "recipe_keys",
    "save_resolved_recipe",
]

RECIPE_FILENAME = rundir.RECIPE

_R = typing.TypeVar("_R", bound=BaseModel)

# One COCO epoch at batch 64: 118,000 / 64 images (detectron2's iteration bookkeeping).
_ITERS_PER_EPOCH_COCO_B64 = 118_000 / 64


class RecipeError(ValueError):
    """A recipe name, override key or override value is not valid; the message says what was expected."""


class _Section(BaseModel):
    """Base of every recipe section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class BackboneConfig(_Section):
    """The backbone. ``kind="vit"`` is the plain ViT of the study / ViTDet (built here);
    ``mimdet`` and ``swin`` are built by ``trainer/models/mimdet.py`` and ``trainer/models/swin.py``.

    Block indexes are 0-based. ``window_size`` is in tokens (patches); 0 means global attention in
    every block. ``rel_pos``: ``shared_bias`` = BEiT-style scalar bias tables shared by all windowed
    blocks and, separately, by all global blocks (the study); ``decomposed`` = MViTv2 per-block
    ``rel_pos_h/rel_pos_w`` (ViTDet); ignored by ``swin`` (it has its own per-block tables).
    """

    kind: Literal["vit", "mimdet", "swin"] = "vit"
    embed_dim: int = Field(default=768, gt=0)
    depth: int = Field(default=12, gt=0)
    num_heads: int = Field(default=12, gt=0)
    mlp_ratio: float = Field(default=4.0, gt=0)
    patch_size: int = Field(default=16, gt=0)
    window_size: int = Field(default=14, ge=0)
    global_blocks: tuple[int, ...] = (2, 5, 8, 11)
    rel_pos: Literal["none", "shared_bias", "decomposed"] = "shared_bias"
    layer_scale: float | None = Field(default=None, gt=0)
    qv_bias: bool = False
    drop_path: float = Field(default=0.1, ge=0, lt=1)
    act_checkpoint: bool = False
    pretrain_img_size: int = Field(default=224, gt=0)
    init_style: Literal["beit", "vitdet"] = "beit"
    # MIMDet only (arXiv 2204.02964 §3).
    sample_ratio: float = Field(default=0.5, gt=0, le=1)
    decoder_depth: int = Field(default=4, ge=0)
    decoder_dim: int = Field(default=512, gt=0)
    decoder_heads: int = Field(default=16, gt=0)
    # Swin only (arXiv 2105.04553; Transformer-SSL configs/moby_swin_tiny.yaml): blocks and heads per
    # stage; ``embed_dim`` is the stage-1 width.
    stage_depths: tuple[int, ...] = (2, 2, 6, 2)
    stage_heads: tuple[int, ...] = (3, 6, 12, 24)

    @model_validator(mode="after")
    def _check(self) -> BackboneConfig:
        if self.kind != "swin" and self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        bad = [i for i in self.global_blocks if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"global_blocks {bad} out of range: expected indexes in [0, {self.depth - 1}]")
        if len(set(self.global_blocks)) != len(self.global_blocks):
            raise ValueError(f"global_blocks {list(self.global_blocks)} contains duplicates")
        if len(self.stage_depths) != len(self.stage_heads):
            raise ValueError("stage_depths and stage_heads must have the same length")
        if self.pretrain_img_size % self.patch_size:
            raise ValueError(
                f"pretrain_img_size {self.pretrain_img_size} must be a multiple of "
                f"patch_size {self.patch_size}"
            )
        return self


class NeckConfig(_Section):
    """Feature pyramid. ``multiscale_fpn``: the study's four taps + resolution modules + FPN;
    ``simple_fpn``: ViTDet's simple pyramid from the last map; ``fpn``: a plain FPN over a
    hierarchical backbone's four maps (MIMDet, Swin). ``syncbn`` is BatchNorm that the engine
    converts to SyncBatchNorm when training is distributed."""

    kind: Literal["multiscale_fpn", "simple_fpn", "fpn"] = "multiscale_fpn"
    out_channels: int = Field(default=256, gt=0)
    norm: Literal["bn", "syncbn", "ln", "gn"] = "syncbn"


class HeadsConfig(_Section):
    """RPN and RoI heads (torchvision parts with the study's upgrades). Sizes in pixels of the
    ``input.image_size`` canvas; counts are per image."""

    norm: Literal["bn", "syncbn", "ln", "gn"] = "syncbn"
    rpn_convs: int = Field(default=2, ge=1)
    box_convs: int = Field(default=4, ge=0)
    box_conv_dim: int = Field(default=256, gt=0)
    box_fc: int = Field(default=1024, gt=0)
    mask_convs: int = Field(default=4, ge=1)
    mask_conv_dim: int = Field(default=256, gt=0)
    anchor_sizes: tuple[int, int, int, int, int] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_batch_size_per_image: int = Field(default=256, gt=0)
    rpn_positive_fraction: float = Field(default=0.5, gt=0, le=1)
    rpn_pre_nms_top_n_train: int = Field(default=2000, gt=0)
    rpn_pre_nms_top_n_test: int = Field(default=1000, gt=0)
    rpn_post_nms_top_n_train: int = Field(default=1000, gt=0)
    rpn_post_nms_top_n_test: int = Field(default=1000, gt=0)
    rpn_nms_thresh: float = Field(default=0.7, gt=0, le=1)
    roi_batch_size_per_image: int = Field(default=512, gt=0)
    roi_positive_fraction: float = Field(default=0.25, gt=0, le=1)
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = Field(default=0.05, ge=0, le=1)
    nms_thresh: float = Field(default=0.5, gt=0, le=1)
    detections_per_img: int = Field(default=100, gt=0)


class InputConfig(_Section):
    """Model input: the longest image side is resized to ``image_size`` and the batch padded to a
    square ``image_size`` x ``image_size`` canvas. Mean / std are RGB on the 0–255 scale."""

    image_size: int = Field(default=1024, gt=0)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    @model_validator(mode="after")
    def _check(self) -> InputConfig:
        if any(s <= 0 for s in self.pixel_std):
            raise ValueError(f"pixel_std {list(self.pixel_std)} must be positive")
        return self


class SolverConfig(_Section):
    """Optimizer and schedule. Iterations count optimizer steps; ``batch_size`` is the total
    (all workers) batch; ``steps`` are the step-schedule milestones (multiply lr by ``gamma``)."""

    optimizer: Literal["adamw"] = "adamw"
    lr: float = Field(default=8e-5, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "step"] = "cosine"
    warmup_iters: int = Field(default=round(0.25 * _ITERS_PER_EPOCH_COCO_B64), ge=0)
    warmup_factor: float = Field(default=0.001, ge=0, le=1)
    max_iters: int = Field(default=round(100 * _ITERS_PER_EPOCH_COCO_B64), gt=0)
    steps: tuple[int, ...] = ()
    gamma: float = Field(default=0.1, gt=0, le=1)
    layer_decay: float | None = Field(default=None, gt=0, le=1)
    batch_size: int = Field(default=64, gt=0)
    amp: Literal["none", "bf16", "fp16"] = "fp16"
    grad_accum: int = Field(default=1, gt=0)
    checkpoint_period: int = Field(default=5000, gt=0)
    eval_period: int = Field(default=0, ge=0)
    clip_grad: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SolverConfig:
        if list(self.steps) != sorted(self.steps) or any(not 0 < s < self.max_iters for s in self.steps):
            raise ValueError(f"steps {list(self.steps)} must be increasing and inside (0, max_iters)")
        if self.warmup_iters > self.max_iters:
            raise ValueError(f"warmup_iters {self.warmup_iters} exceeds max_iters {self.max_iters}")
        return self


class DataConfig(_Section):
    """Training data pipeline: large-scale jitter scale range and loader workers."""

    train_scale_range: tuple[float, float] = (0.1, 2.0)
    hflip_prob: float = Field(default=0.5, ge=0, le=1)
    num_workers: int = Field(default=4, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        lo, hi = self.train_scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"train_scale_range {[lo, hi]} must satisfy 0 < low <= high")
        return self


class Recipe(_Section):
    """A complete, resolved training recipe. ``model_dump(mode="json")`` is what ``recipe.json`` holds."""

    name: str
    seed: int = 0
    backbone: BackboneConfig = BackboneConfig()
    neck: NeckConfig = NeckConfig()
    heads: HeadsConfig = HeadsConfig()
    input: InputConfig = InputConfig()
    solver: SolverConfig = SolverConfig()
    data: DataConfig = DataConfig()

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        bb = self.backbone
        if bb.kind == "vit":
            if self.input.image_size % bb.patch_size:
                raise ValueError(
                    f"input.image_size {self.input.image_size} must be a multiple of "
                    f"backbone.patch_size {bb.patch_size}"
                )
            if self.neck.kind == "fpn":
                raise ValueError(
                    "neck.kind 'fpn' needs a hierarchical backbone; a plain ViT takes "
                    "'multiscale_fpn' or 'simple_fpn'"
                )
            if self.neck.kind == "multiscale_fpn" and bb.depth % 4:
                raise ValueError(
                    f"neck 'multiscale_fpn' taps blocks d/4..d: backbone.depth {bb.depth} "
                    "must be a multiple of 4"
                )
        elif self.neck.kind != "fpn":
            raise ValueError(
                f"backbone.kind {bb.kind!r} comes with its own feature maps: expected neck.kind 'fpn'"
            )
        return self

    @property
    def token_grid(self) -> int:
        """Side of the ViT token grid at the recipe's image size (image_size / patch_size)."""
        return self.input.image_size // self.backbone.patch_size


# ----------------------------------------------------------------------------------------------
# The catalogue: one base, small per-variant overrides.
# ----------------------------------------------------------------------------------------------


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``update`` merged in recursively (``update`` wins on leaves)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _derive(parent: Recipe, name: str, update: Mapping[str, Any]) -> Recipe:
    """A new validated recipe: ``parent`` deep-merged with ``update`` and renamed."""
    merged = _deep_merge(parent.model_dump(), {**update, "name": name})
    return Recipe.model_validate(merged)


def _epochs(n: float) -> int:
    return round(n * _ITERS_PER_EPOCH_COCO_B64)


# The study (Li et al. 2021), ViT-B: 4 taps -> resolution modules -> BN FPN, window 14 + 4 global
# blocks, shared bias tables + abs pos, cosine 100 ep at batch 64, warmup 0.25 ep, MAE-tuned lr/wd.
_BASE = Recipe(name="bench-b")

_VIT_L = {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_blocks": (5, 11, 17, 23)}

_VITDET_B = {
    "backbone": {"rel_pos": "decomposed", "init_style": "vitdet", "drop_path": 0.1},
    "neck": {"kind": "simple_fpn", "norm": "ln"},
    "heads": {"norm": "ln"},
    "solver": {
        "lr": 1e-4,
        "schedule": "step",
        "warmup_iters": 250,
        "steps": (163_889, 177_546),
        "layer_decay": 0.7,
    },
}

# CPU presets: 128-px canvas (8x8 tokens), 4 narrow blocks, 2x2 windows of 4, globals at 1 and 3.
_TINY = {
    "seed": 0,
    "backbone": {
        "embed_dim": 96,
        "depth": 4,
        "num_heads": 3,
        "window_size": 4,
        "global_blocks": (1, 3),
        "drop_path": 0.0,
        "pretrain_img_size": 64,
    },
    "neck": {"out_channels": 64},
    "heads": {
        "box_conv_dim": 64,
        "box_fc": 128,
        "mask_conv_dim": 64,
        "anchor_sizes": (16, 32, 64, 128, 256),
        "rpn_batch_size_per_image": 64,
        "rpn_pre_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 200,
        "rpn_post_nms_top_n_train": 100,
        "rpn_post_nms_top_n_test": 50,
        "roi_batch_size_per_image": 64,
        "detections_per_img": 20,
    },
    "input": {"image_size": 128},
    "solver": {
        "lr": 5e-4,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_iters": 20,
        "max_iters": 300,
        "steps": (),
        "layer_decay": None,
        "batch_size": 4,
        "amp": "none",
        "checkpoint_period": 100,
        "eval_period": 100,
    },
    "data": {"train_scale_range": (0.5, 1.5), "num_workers": 0},
}


def _build_catalogue() -> dict[str, Recipe]:
    cat: dict[str, Recipe] = {"bench-b": _BASE}
    cat["bench-l"] = _derive(_BASE, "bench-l", {"backbone": {**_VIT_L, "drop_path": 0.3}})
    cat["vitdet-b"] = _derive(_BASE, "vitdet-b", _VITDET_B)
    cat["vitdet-l"] = _derive(
        cat["vitdet-b"],
        "vitdet-l",
        {"backbone": {**_VIT_L, "drop_path": 0.4}, "solver": {"layer_decay": 0.8}},
    )
    # ViT-H: 75 epochs, milestones scaled by 3/4 (detectron2 mask_rcnn_vitdet_h_75ep.py).
    cat["vitdet-h"] = _derive(
        cat["vitdet-b"],
        "vitdet-h",
        {
            "backbone": {
                "embed_dim": 1280,
                "depth": 32,
                "num_heads": 16,
                "global_blocks": (7, 15, 23, 31),
                "drop_path": 0.5,
            },
            "solver": {
                "layer_decay": 0.9,
                "max_iters": _epochs(100) * 3 // 4,
                "steps": (163_889 * 3 // 4, 177_546 * 3 // 4),
            },
        },
    )
    # MIMDet ViT-B (arXiv 2204.02964; hustvl/MIMDet configs/mimdet): conv stem + global-attention MAE
    # encoder on sampled tokens +
    # 4 MAE decoder blocks, standard BN FPN; "3x" = 36 ep at 120k images, steps at 27 / 33 ep.
    mim_ep = 120_000 / 64
    cat["mimdet-b"] = _derive(
        _BASE,
        "mimdet-b",
        {
            "backbone": {
                "kind": "mimdet",
                "window_size": 0,
                "global_blocks": tuple(range(12)),
                "rel_pos": "none",
                "act_checkpoint": True,
            },
            "neck": {"kind": "fpn"},
            "solver": {
                "schedule": "step",
                "max_iters": round(36 * mim_ep),
                "steps": (round(27 * mim_ep), round(33 * mim_ep)),
                "warmup_iters": round(0.25 * mim_ep),
                "warmup_factor": 0.0,
            },
        },
    )
    # Swin-T for MoBY (arXiv 2105.04553): patch 4, embed 96, depths 2-2-6-2, window 7, "3x" AdamW schedule.
    cat["swin-t"] = _derive(
        _BASE,
        "swin-t",
        {
            "backbone": {
                "kind": "swin",
                "embed_dim": 96,
                "depth": 12,
                "num_heads": 3,
                "patch_size": 4,
                "window_size": 7,
                "global_blocks": (),
                "rel_pos": "none",
                "drop_path": 0.2,
                "stage_depths": (2, 2, 6, 2),
                "stage_heads": (3, 6, 12, 24),
            },
            "neck": {"kind": "fpn"},
            "solver": {
                "lr": 1e-4,
                "weight_decay": 0.05,
                "schedule": "step",
                "max_iters": _epochs(36),
                "steps": (_epochs(27), _epochs(33)),
                "warmup_iters": 500,
            },
        },
    )
    cat["bench-tiny"] = _derive(_BASE, "bench-tiny", _TINY)
    cat["vitdet-tiny"] = _derive(cat["vitdet-b"], "vitdet-tiny", _TINY)
    return cat


_CATALOGUE: dict[str, Recipe] = _build_catalogue()


def list_recipes() -> list[str]:
    """Names of the built-in recipes, in catalogue order."""
    return list(_CATALOGUE)


def get_recipe(name: str) -> Recipe:
    """The built-in recipe called ``name``; raises :class:`RecipeError` naming the known ones."""
    return lookup(_CATALOGUE, name, "recipe", RecipeError)


# ----------------------------------------------------------------------------------------------
# Overrides: ``section.field=value`` strings from ``--set``.
# ----------------------------------------------------------------------------------------------


def recipe_keys(model: type[BaseModel] | None = None) -> list[str]:
    """Every overridable dotted key (``seed``, ``solver.lr``, ...) of ``model`` (default :class:`Recipe`)."""
    keys: list[str] = []
    for name, field in (model or Recipe).model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(f"{name}.{sub}" for sub in ann.model_fields)
        else:
            keys.append(name)
    return keys


def _annotation(key: str, root: type[BaseModel] | None = None) -> Any:
    parts = key.split(".")
    model: type[BaseModel] = root or Recipe
    ann: Any = None
    for part in parts:
        ann = model.model_fields[part].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return ann


def _expected(ann: Any) -> str:
    """Human-readable name of a field type: ``float``, ``one of 'cosine', 'step'``, ``tuple of int``."""
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _expected(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_expected(args[0])} like [1, 2]"
        return f"a list of {len(args)} {_expected(args[0])} values"
    return getattr(ann, "__name__", str(ann))


def _parse_value(raw: str, ann: Any) -> Any:
    """Parse a command-line value with YAML rules (``1e-4``, ``[2, 5]``, ``true``, ``null``).

    A bare comma list (``2,5,8``) becomes a list for tuple fields; ``none`` means null for optional
    fields whose literal values do not include ``"none"``.
    """
    text = raw.strip()
    is_tuple = typing.get_origin(ann) is tuple
    if is_tuple and "," in text and not text.startswith(("[", "(")):
        text = f"[{text}]"
    if text.startswith("(") and text.endswith(")"):
        text = f"[{text[1:-1]}]"
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = raw
    if is_tuple and not isinstance(value, list) and value is not None:
        value = [value] if text else []
    args = typing.get_args(ann)
    if isinstance(value, str) and value.lower() == "none" and type(None) in args:
        value = None
    return value


def apply_overrides(recipe: _R, overrides: Sequence[str]) -> _R:
    """Return ``recipe`` with ``key=value`` overrides applied and the result validated.

    Works for any two-level recipe model (:class:`Recipe`, the pre-training recipes).

    Raises :class:`RecipeError` naming the bad key (with close matches) or the bad value (with the
    expected type). Example: ``apply_overrides(r, ["solver.lr=1e-4", "backbone.global_blocks=2,5"])``.
    """
    root = type(recipe)
    data = recipe.model_dump()
    known = recipe_keys(root)
    touched: dict[str, str] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"override {item!r} is not of the form key=value (e.g. solver.lr=1e-4)")
        if key not in known:
            raise RecipeError(
                f"unknown recipe key {key!r}.{did_you_mean(key, known)} Keys look like 'section.field', "
                "e.g. solver.lr."
            )
        ann = _annotation(key, root)
        value = _parse_value(raw, ann)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
        touched[key] = raw
    try:
        return root.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_describe(exc, touched, root)) from None


def _describe(exc: ValidationError, touched: Mapping[str, str], root: type[BaseModel] | None = None) -> str:
    """One line per pydantic error, naming the dotted key, the given value and what was expected."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        key = ".".join(loc)
        msg = err["msg"].removeprefix("Value error, ")
        if key in touched:
            expected = _expected(_annotation(key, root))
            lines.append(f"invalid value {touched[key]!r} for {key!r}: expected {expected} ({msg})")
        elif key:
            culprits = [f"{k}={v}" for k, v in touched.items() if k.startswith(f"{key}.") or not key]
            cause = f" (after {', '.join(culprits)})" if culprits else ""
            lines.append(f"invalid recipe at {key!r}: {msg}{cause}")
        else:
            lines.append(f"invalid recipe: {msg}")
    return "; ".join(dict.fromkeys(lines))  # one line per key, even when several list items fail


# ----------------------------------------------------------------------------------------------
# Persistence
# ----------------------------------------------------------------------------------------------


def save_resolved_recipe(recipe: Recipe, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``recipe.json`` (the fully resolved recipe) into ``out_dir`` atomically; return its path."""
    return atomic_write_json(Path(out_dir) / RECIPE_FILENAME, recipe.model_dump(mode="json"), newline=True)


def load_recipe(source: str | os.PathLike[str] | Mapping[str, Any]) -> Recipe:
    """A recipe from a ``recipe.json`` path (or a directory holding one) or from its dict form."""
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source)
        if path.is_dir():
            path = path / RECIPE_FILENAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecipeError(f"recipe file {str(path)!r} does not exist") from None
        except json.JSONDecodeError as exc:
            raise RecipeError(f"recipe file {str(path)!r} is not valid JSON: {exc}") from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_describe(exc, {})) from None
