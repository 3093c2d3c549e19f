"""The catalog of initializations: one frozen record per init, in an explicit mapping (torch-free).

Each record says where the published file comes from (``url`` is documentation only: nothing here
downloads), how its tensors are nested (``weights_key``, ``keep_prefix``), which of its tensors are
known to have no place in a detector (``drop``), which converter maps it, and — per backbone kind —
which model tensors are expected to stay at their fresh initialization (``expected_missing``) and which
checkpoint tensors are expected to find no home (``expected_unexpected``). All patterns are regular
expressions searched in full ``model.state_dict()`` keys (missing) or checkpoint keys after
conversion (unexpected). Sources: Li et al., arXiv 2111.11429 §3 (inits, positional information);
the releases' own code: github.com/facebookresearch/mae, github.com/facebookresearch/moco-v3,
github.com/microsoft/unilm/tree/master/beit, github.com/facebookresearch/deit, github.com/hustvl/MIMDet,
github.com/SwinTransformer/Transformer-SSL, github.com/facebookresearch/detectron2 (projects/ViTDet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from vitbench.suggest import lookup
from vitbench.trainer.inits.errors import InitError

BackboneKind = Literal["vit", "mimdet", "swin"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# BEiT's IN-22k pre-training normalizes with mean = std = 0.5 (microsoft/unilm beit/README.md).
HALF_MEAN = (127.5, 127.5, 127.5)
HALF_STD = (127.5, 127.5, 127.5)

# Model tensors that every non-detectron2 ViT init leaves at their fresh value: the study's shared
# bias tables and ViTDet's decomposed rel-pos are zero-initialized (arXiv 2111.11429 §3.1).
_VIT_RELPOS_MISSING = (
    r"^backbone\.net\.rel_pos_(window|global)\.relative_position_bias_table$",
    r"^backbone\.net\.blocks\.\d+\.attn\.rel_pos_[hw]$",
)
# MIMDet parts that are new in the detector (arXiv 2204.02964 §3; hustvl/MIMDet models/mimdet.py):
# conv stem, the projection that fills dropped tokens, the FPN.
_MIMDET_NEW = (
    r"^backbone\.stem\.",
    r"^backbone\.conv_feat_proj\.",
    r"^backbone\.fpn\.",
)
_TIMM_VIT_DROP = (r"^cls_token$", r"^norm\.", r"^head\.", r"^fc_norm\.", r"^head_dist\.", r"^dist_token$")


@dataclass(frozen=True, kw_only=True)
class InitSpec:
    """One initialization of the study.

    ``pretrain_img_size`` is in pixels; ``pixel_mean``/``pixel_std`` are RGB on the 0–255 scale (by
    default ImageNet's, as most releases). ``sha256`` is None where the publisher gives no digest.
    ``converter`` names an entry of ``trainer.inits.converters.CONVERTERS``.
    """

    name: str
    description: str
    url: str | None
    converter: str
    applies_to: tuple[BackboneKind, ...]
    sha256: str | None = None
    pretrain_img_size: int | None = 224
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    weights_key: tuple[str, ...] = ("model",)
    keep_prefix: str = ""
    drop: tuple[str, ...] = ()
    expected_missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    expected_unexpected: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    paper: str = ""
    # torch.hub-published files carry the first hex digits of their sha256 in the file name; when a file
    # with exactly the published name is loaded without a full digest, that prefix is verified.
    sha256_prefix: str | None = None
    # Advice printed when a load fails with missing/unexpected keys (not shape mismatches), by backbone kind.
    hints: Mapping[str, str] = field(default_factory=dict)

    @property
    def published_name(self) -> str | None:
        """File name of the published checkpoint (from ``url``), if any."""
        return self.url.rsplit("/", 1)[-1] if self.url else None

    @property
    def needs_weights(self) -> bool:
        """False only for ``random``."""
        return self.converter != "none"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary for ``vitbench inits --json``."""
        return {
            "name": self.name,
            "description": self.description,
            "url": self.url,
            "sha256": self.sha256,
            "sha256_prefix": self.sha256_prefix,
            "pretrain_img_size": self.pretrain_img_size,
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
            "converter": self.converter,
            "applies_to": list(self.applies_to),
            "weights_key": list(self.weights_key),
            "keep_prefix": self.keep_prefix,
            "needs_weights": self.needs_weights,
            "paper": self.paper,
        }


def _mae(name: str, description: str, url: str, applies_to: tuple[BackboneKind, ...]) -> InitSpec:
    return InitSpec(
        name=name,
        description=description,
        url=url,
        converter="mae",
        applies_to=applies_to,
        drop=(r"^cls_token$", r"^mask_token$", r"^decoder_pred\.", r"^decoder_pos_embed$"),
        expected_missing={"vit": _VIT_RELPOS_MISSING, "mimdet": _MIMDET_NEW},
        # The decoder of a `_full` file has no place in a plain ViT detector; MIMDet keeps its first
        # decoder_depth blocks and drops the rest (and the patchify stem it replaces with convs).
        expected_unexpected={
            "vit": (r"^decoder_", r"^norm\."),
            "mimdet": (r"^decoder_blocks\.\d+\.", r"^patch_embed\.", r"^pos_embed$"),
        },
        paper="He et al., Masked Autoencoders Are Scalable Vision Learners (arXiv 2111.06377)",
        hints={
            "mimdet": "MIMDet needs the MAE decoder: use init 'mae_full' with mae_pretrain_vit_*_full.pth"
        },
    )


CATALOG: Mapping[str, InitSpec] = MappingProxyType(
    {
        "random": InitSpec(
            name="random",
            description="No pre-training: every weight starts from the model's own initialization.",
            url=None,
            pretrain_img_size=None,
            converter="none",
            applies_to=("vit", "mimdet", "swin"),
            paper="Li et al. 2021 §3: random init follows the BEiT code",
        ),
        "supervised": InitSpec(
            name="supervised",
            description="Supervised ImageNet-1k ViT (DeiT release / timm ViT format).",
            url="https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth",
            sha256_prefix="b5f2ef4d",  # DeiT loads it with torch.hub check_hash=True
            converter="vit",
            applies_to=("vit",),
            drop=_TIMM_VIT_DROP,
            expected_missing={"vit": _VIT_RELPOS_MISSING},
            paper="Touvron et al., DeiT (arXiv 2012.12877)",
        ),
        "mocov3": InitSpec(
            name="mocov3",
            description="MoCo v3 ViT (state_dict with module.base_encoder.; momentum encoder, "
            "predictor and projection head dropped).",
            url="https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar",
            converter="vit",
            applies_to=("vit",),
            weights_key=("state_dict",),
            keep_prefix="module.base_encoder.",
            drop=(r"^module\.momentum_encoder\.", r"^module\.predictor\.", *_TIMM_VIT_DROP),
            expected_missing={"vit": _VIT_RELPOS_MISSING},
            paper="Chen, Xie, He, An Empirical Study of Training Self-Supervised ViTs (arXiv 2104.02057)",
        ),
        "beit": InitSpec(
            name="beit",
            description="BEiT pre-training (q/v biases, layer scale, shared rel-pos table resized into "
            "the window and global tables; no absolute embedding, so pos_embed starts random).",
            url="https://conversationhub.blob.core.windows.net/beit-share-public/beit/"
            "beit_base_patch16_224_pt22k.pth",
            pixel_mean=HALF_MEAN,
            pixel_std=HALF_STD,
            converter="beit",
            applies_to=("vit",),
            weights_key=("model", "module"),
            drop=(
                r"^cls_token$",
                r"^mask_token$",
                r"^norm\.",
                r"^fc_norm\.",
                r"^lm_head\.",
                r"relative_position_index$",
            ),
            expected_missing={"vit": (r"^backbone\.net\.pos_embed$", *_VIT_RELPOS_MISSING[1:])},
            # ViTDet's decomposed rel-pos cannot take BEiT's scalar tables
            # (detectron2/modeling/backbone/vit.py).
            expected_unexpected={"vit": (r"^rel_pos_bias\.relative_position_bias_table$",)},
            paper="Bao et al., BEiT (arXiv 2106.08254)",
            hints={
                "vit": "build the detector from apply_init_overrides(recipe, 'beit'), which turns on the q/v "
                "biases and layer scale that BEiT weights need"
            },
        ),
        "mae": _mae(
            "mae",
            "MAE encoder (mae_pretrain_vit_*.pth); for mimdet-b use mae_full, which has the decoder.",
            "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
            ("vit", "mimdet"),
        ),
        "mae_full": _mae(
            "mae_full",
            "MAE encoder + decoder (mae_pretrain_vit_*_full.pth): MIMDet keeps 4 decoder blocks.",
            "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base_full.pth",
            ("vit", "mimdet"),
        ),
        "moby": InitSpec(
            name="moby",
            description="MoBY self-supervised Swin-T (online encoder under encoder.; momentum branch, "
            "projectors, predictor and queues dropped).",
            url="https://github.com/SwinTransformer/storage/releases/download/v1.0.3/"
            "moby_swin_t_300ep_pretrained.pth",
            converter="moby",
            applies_to=("swin",),
            keep_prefix="encoder.",
            drop=(
                r"^encoder_k\.",
                r"^projector",
                r"^predictor\.",
                r"^queue",
                r"^norm\.",
                r"^head\.",
                r"relative_position_index$",
                r"attn_mask$",
            ),
            # torchvision stores the (derived, constant) index as a buffer; it is rebuilt, not loaded.
            expected_missing={"swin": (r"\.attn\.relative_position_index$",)},
            paper="Xie et al., Self-Supervised Learning with Swin Transformers (arXiv 2105.04553)",
        ),
        "detectron2": InitSpec(
            name="detectron2",
            description="A complete ViTDet Mask R-CNN from the detectron2 model zoo (.pkl, numpy arrays "
            "under model, backbone.net.* names).",
            url="https://dl.fbaipublicfiles.com/detectron2/ViTDet/COCO/mask_rcnn_vitdet_b/f325346929/"
            "model_final_61ccd1.pkl",
            pretrain_img_size=1024,
            converter="detectron2",
            applies_to=("vit",),
            drop=(r"^pixel_(mean|std)$",),
            paper="Li, Mao, Girshick, He, ViTDet (arXiv 2203.16527)",
        ),
    }
)


def list_inits() -> list[str]:
    """Names of the catalog's initializations, in catalog order."""
    return list(CATALOG)


def get_init(name: str) -> InitSpec:
    """The record for ``name``; raises InitError naming the known inits (and close matches)."""
    return lookup(CATALOG, name, "init", InitError)
