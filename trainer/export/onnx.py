"""Export a vitbench Mask R-CNN to ONNX at its fixed square input size.

The exported graph is :class:`ExportableDetector`: backbone (ViT + neck) → RPN → RoI heads on a
batch of normalized, padded ``float32[B, 3, S, S]`` images (B dynamic), returning every image's
detections concatenated: ``boxes [N, 4]`` (canvas pixels), ``scores [N]``, ``labels [N]`` (int64,
1-based), ``mask_logits [N, 28, 28]`` (mask probabilities in the box, sigmoid applied) and
``batch_index [N]`` (int64, the image of each detection). Image decoding, resizing, normalization and mask
pasting stay outside the graph. Uses torch's legacy TorchScript exporter (``dynamo=False``), the
only one that handles torchvision's NMS in torch 2.14; opset 17 (RoiAlign needs >= 16).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.image_list import ImageList

from vitbench.registry.manifest import ONNX_FILE, InputSpec, ModelManifest, OutputSpec, default_outputs
from vitbench.trainer.export.batched import detect, propose

DEFAULT_OPSET = 17
INPUT_NAME = "images"
#: Per-detection outputs (also those of the TensorRT path's batch-1 tail graph).
OUTPUT_NAMES = ("boxes", "scores", "labels", "mask_logits")
#: Outputs of the dynamic-batch graph: the per-detection ones and the image each detection belongs to.
BATCHED_OUTPUT_NAMES = (*OUTPUT_NAMES, "batch_index")
#: The manifest's description of the extra output that marks a graph with a dynamic batch dimension.
BATCH_INDEX_OUTPUT = OutputSpec(
    name="batch_index",
    dtype="int64",
    shape=("N",),
    description="index in the input batch of the image each detection belongs to (outputs are concatenated "
    "image by image); the input's first dimension is dynamic",
)


class ExportError(RuntimeError):
    """The model could not be exported (the message names the step and the cause)."""


class ExportableDetector(nn.Module):
    """Backbone + RPN + RoI heads of a torchvision ``MaskRCNN`` on a batch of pre-processed images.

    Input: ``(B, 3, S, S)`` float32, normalized, padded bottom/right; each whole canvas is its image
    (boxes are clipped to ``S × S``). Output, all images' detections concatenated (image by image,
    by decreasing score): boxes ``(N, 4)``, scores ``(N,)``, labels ``(N,)`` int64, mask
    probabilities ``(N, 28, 28)``, batch_index ``(N,)`` int64; no mask pasting. The inference is
    torchvision's, written over the batch (:mod:`trainer.export.batched`).
    """

    def __init__(self, model: MaskRCNN, image_size: int) -> None:
        super().__init__()
        self.model = model
        self.image_size = int(image_size)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        features = self.model.backbone(images)  # OrderedDict of (B, C, S/k, S/k)
        proposals, valid = propose(self.model, images, features)  # (B, P, 4), (B, P)
        return detect(self.model, images, features, proposals, valid)


def reference_detections(model: MaskRCNN, images: Tensor) -> list[dict[str, Tensor]]:
    """torchvision's own per-image inference on ``(B, 3, S, S)`` canvases (RPN → RoI heads, no paste).

    The reference :class:`ExportableDetector` must reproduce; ``masks`` are ``(N, 28, 28)``.
    """
    size = int(images.shape[-1])
    sizes = [(size, size)] * int(images.shape[0])
    with torch.no_grad():
        features = model.backbone(images)
        proposals, _ = model.rpn(ImageList(images, sizes), features)
        detections, _ = model.roi_heads(features, proposals, sizes)
    return [{**d, "masks": d["masks"][:, 0]} for d in detections]


def preprocess(image: np.ndarray, model: MaskRCNN) -> tuple[Tensor, float]:
    """``(H, W, 3)`` uint8 RGB → ``(1, 3, S, S)`` canvas through the model's own transform, and the scale.

    ``scale`` maps original pixel coordinates to canvas coordinates (canvas = original × scale).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    transform = model.transform
    was_training = transform.training
    transform.eval()
    with torch.no_grad():
        batch, _ = transform([tensor])
    transform.train(was_training)
    h, w = batch.image_sizes[0]
    scale = max(h, w) / max(image.shape[0], image.shape[1])
    return batch.tensors, float(scale)


@dataclass(frozen=True)
class ExportResult:
    """Where the ONNX file went and the exporter used."""

    path: Path
    opset: int
    exporter: str


def export_onnx(
    model: MaskRCNN,
    image_size: int,
    path: Path,
    sample: Tensor | None = None,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Trace ``model`` wrapped in :class:`ExportableDetector` and write ONNX to ``path`` (atomically).

    ``sample`` is a ``(B, 3, S, S)`` batch of pre-processed images used for tracing (default: zeros =
    the mean colour). The batch size ``B`` and the number of detections ``N`` are dynamic axes.
    """
    if opset < 16:
        raise ExportError(f"opset {opset} is too old: RoiAlign needs opset >= 16")
    wrapper = ExportableDetector(model, image_size).eval()
    if sample is None:
        sample = torch.zeros(2, 3, image_size, image_size)  # B = 2: nothing folds to a batch of 1
    if sample.dim() != 4 or tuple(sample.shape[1:]) != (3, image_size, image_size):
        raise ExportError(
            f"sample must have shape (B, 3, {image_size}, {image_size}), got {tuple(sample.shape)}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    dynamic = {INPUT_NAME: {0: "B"}, **{name: {0: "N"} for name in BATCHED_OUTPUT_NAMES}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
            torch.onnx.export(
                wrapper,
                (sample,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(BATCHED_OUTPUT_NAMES),
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        import onnx

        onnx.checker.check_model(str(tmp))
        tmp.replace(path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    return ExportResult(
        path=path, opset=opset, exporter=f"torch {torch.__version__} torch.onnx.export(dynamo=False)"
    )


def build_manifest(
    recipe: object,
    meta: dict[str, object],
    *,
    opset: int,
    exporter: str,
    files: dict[str, str],
    source_sha256: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> ModelManifest:
    """The :class:`ModelManifest` for an export of ``recipe`` (a :class:`trainer.recipes.Recipe`)."""
    from vitbench.trainer.recipes import Recipe

    if not isinstance(recipe, Recipe):
        raise TypeError(f"expected a Recipe, got {type(recipe).__name__}")
    class_names = tuple(str(c) for c in meta.get("class_names") or ())  # type: ignore[attr-defined]
    num_classes = int(meta.get("num_classes", len(class_names)))  # type: ignore[call-overload]
    if len(class_names) != num_classes:
        class_names = tuple(f"class_{i}" for i in range(1, num_classes + 1))
    if ONNX_FILE not in files:
        raise ValueError(f"files must include {ONNX_FILE}")
    return ModelManifest(
        model_name=model_name,
        model_version=model_version,
        recipe=recipe.name,
        init=str(meta.get("init")) if meta.get("init") is not None else None,
        neck=recipe.neck.kind,
        input=InputSpec(
            size=recipe.input.image_size, pixel_mean=recipe.input.pixel_mean, pixel_std=recipe.input.pixel_std
        ),
        class_names=class_names,
        opset=opset,
        outputs=(*default_outputs(), BATCH_INDEX_OUTPUT),
        score_threshold=recipe.heads.score_thresh,
        detections_per_image=recipe.heads.detections_per_img,
        exporter=exporter,
        source_sha256=source_sha256,
        files=files,
    )
