"""TensorRT path: the backbone through onnxruntime's TensorRT execution provider in fp16, the tail on CUDA.

TensorRT cannot take the detection tail (NMS, NonZero and RoiAlign are data-dependent-shape ops that
the ONNX-TensorRT parser hands back to ORT), so the detector is exported as two static graphs:

- ``backbone.onnx``: ``images float32[1, 3, S, S]`` → ``p2 … p6`` feature maps (ViT + neck);
- ``tail.onnx``: ``p2 … p6`` → ``boxes, scores, labels, mask_logits`` (RPN + RoI heads, as in
  :mod:`trainer.export.onnx`).

The backbone session uses ``TensorrtExecutionProvider`` (fp16, LayerNorm kept in fp32, engine and
timing caches under a folder keyed by the model's SHA-256, the GPU name and the TensorRT version so a
stale engine is never reused), with CUDA as fallback; the tail runs on ``CUDAExecutionProvider``.
Without a CUDA GPU and the TensorRT provider, :func:`require_tensorrt` raises a clear error.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.image_list import ImageList

from vitbench.trainer.export.onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES, ExportError
from vitbench.trainer.export.parity import Runner

TRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class TensorRTUnavailableError(RuntimeError):
    """No CUDA GPU or no TensorRT execution provider in this onnxruntime build."""


def require_tensorrt() -> str:
    """Return the GPU name, or raise :class:`TensorRTUnavailableError` saying what is missing."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "--format tensorrt needs an NVIDIA GPU with CUDA, and none is visible here "
            "(torch.cuda.is_available() is False); use --format onnx on this machine"
        )
    missing = [p for p in (TRT_PROVIDER, CUDA_PROVIDER) if p not in providers]
    if missing:
        raise TensorRTUnavailableError(
            f"onnxruntime {ort.__version__} lacks {', '.join(missing)} (available: {', '.join(providers)}); "
            "install onnxruntime-gpu with TensorRT libraries (the service image has them)"
        )
    return torch.cuda.get_device_name(0)


def tensorrt_version() -> str:
    """Version of the TensorRT runtime library, or ``unknown``."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        return "unknown"


def cache_key(model_sha256: str, gpu_name: str, trt_version: str) -> str:
    """16-hex key that changes with the model bytes, the GPU model and the TensorRT version."""
    raw = f"{model_sha256}|{gpu_name}|{trt_version}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


class BackboneGraph(nn.Module):
    """``(1, 3, S, S)`` → tuple of the neck's feature maps in level order."""

    def __init__(self, model: MaskRCNN) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        feats: OrderedDict[str, Tensor] = self.backbone(images)
        return tuple(feats.values())


class TailGraph(nn.Module):
    """Feature maps → boxes, scores, labels, mask probabilities (RPN + RoI heads; canvas ``S × S``)."""

    def __init__(self, model: MaskRCNN, image_size: int, level_names: list[str]) -> None:
        super().__init__()
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads
        self.image_size = int(image_size)
        self.level_names = level_names

    def forward(self, *levels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        size = self.image_size
        canvas = torch.zeros(1, 3, size, size, device=levels[0].device)  # only its shape feeds the anchors
        image_list = ImageList(canvas, [(size, size)])
        features = OrderedDict(zip(self.level_names, levels, strict=True))
        proposals, _ = self.rpn(image_list, features)
        detections, _ = self.roi_heads(features, proposals, [(size, size)])
        det = detections[0]
        return det["boxes"], det["scores"], det["labels"], det["masks"][:, 0]  # masks (N, 28, 28)


@dataclass(frozen=True)
class SplitExport:
    """The two graphs of the TensorRT path and the feature-map names that connect them."""

    backbone: Path
    tail: Path
    levels: tuple[str, ...]


def export_split(model: MaskRCNN, image_size: int, out_dir: Path, opset: int = DEFAULT_OPSET) -> SplitExport:
    """Export ``backbone.onnx`` (static shape, TensorRT-friendly) and ``tail.onnx`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = torch.zeros(1, 3, image_size, image_size)
    model = model.eval()
    with torch.no_grad():
        level_names = list(model.backbone(sample).keys())
    bb, tail = BackboneGraph(model).eval(), TailGraph(model, image_size, level_names).eval()
    with torch.no_grad():
        feats = bb(sample)
    Job = tuple[nn.Module, tuple[Tensor, ...], list[str], list[str], Path, dict[str, dict[int, str]] | None]
    outputs: list[Job] = [(bb, (sample,), [INPUT_NAME], level_names, out_dir / "backbone.onnx", None)]
    dyn = {name: {0: "N"} for name in OUTPUT_NAMES}
    outputs.append((tail, tuple(feats), level_names, list(OUTPUT_NAMES), out_dir / "tail.onnx", dyn))
    for module, args, inputs, outs, path, dynamic in outputs:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    tuple(args),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=inputs,
                    output_names=outs,
                    dynamic_axes=dynamic,
                )
            tmp.replace(path)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"export of {path.name} failed: {type(exc).__name__}: {exc}") from exc
    return SplitExport(out_dir / "backbone.onnx", out_dir / "tail.onnx", tuple(level_names))


def trt_provider_options(cache_dir: Path, image_size: int) -> dict[str, Any]:
    """TensorRT EP options: fp16, LayerNorm fp32, engine + timing cache in ``cache_dir``, static profile."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    shape = f"{INPUT_NAME}:1x3x{image_size}x{image_size}"
    return {
        "trt_fp16_enable": True,
        "trt_layer_norm_fp32_fallback": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": shape,
        "trt_profile_opt_shapes": shape,
        "trt_profile_max_shapes": shape,
        "trt_max_workspace_size": 4 << 30,
    }


class TensorRTDetector:
    """Backbone on the TensorRT EP (fp16), tail on the CUDA EP; callable as a parity :data:`Runner`."""

    def __init__(self, split: SplitExport, image_size: int, cache_root: Path, model_sha256: str) -> None:
        import onnxruntime as ort

        gpu = require_tensorrt()
        self.trt_version = tensorrt_version()
        self.cache_dir = Path(cache_root) / cache_key(model_sha256, gpu, self.trt_version)
        self.gpu = gpu
        opts = trt_provider_options(self.cache_dir, image_size)
        self.backbone = ort.InferenceSession(
            str(split.backbone), providers=[(TRT_PROVIDER, opts), CUDA_PROVIDER]
        )
        self.tail = ort.InferenceSession(str(split.tail), providers=[CUDA_PROVIDER, "CPUExecutionProvider"])
        self.levels = split.levels

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        feats = self.backbone.run(list(self.levels), {INPUT_NAME: x})
        out = self.tail.run(list(OUTPUT_NAMES), dict(zip(self.levels, feats, strict=True)))
        return out[0], out[1], out[2], out[3]

    def info(self) -> dict[str, str]:
        """What the manifest records about this engine."""
        return {
            "gpu": self.gpu,
            "tensorrt": self.trt_version,
            "precision": "fp16 (LayerNorm fp32)",
            "cache_key": self.cache_dir.name,
            "backbone_provider": TRT_PROVIDER,
            "tail_provider": CUDA_PROVIDER,
        }


def runner(detector: TensorRTDetector) -> Runner:
    """The detector as a parity runner."""
    return detector
