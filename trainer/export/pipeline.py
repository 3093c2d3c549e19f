"""Checkpoint → exported files + manifest with a parity report (the work behind ``vitbench export``)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from torchvision.models.detection import MaskRCNN

from vitbench.registry.hashing import sha256_file
from vitbench.registry.manifest import ONNX_FILE, ImageParity, ModelManifest, ParityReport
from vitbench.trainer.export.onnx import ExportableDetector, build_manifest, export_onnx, preprocess
from vitbench.trainer.export.parity import Runner, onnx_batch_runner, onnx_runner, run_parity, torch_runner

Format = Literal["onnx", "tensorrt"]

#: Score threshold of the second parity check when no detection reaches the model's own threshold.
PARITY_LOW_THRESHOLD = 0.001


@dataclass(frozen=True)
class ExportOutcome:
    """Files written (all listed with their SHA-256 in ``manifest.files``) and the manifest."""

    files: tuple[Path, ...]
    manifest: ModelManifest

    @property
    def parity(self) -> ParityReport:
        """The parity report (always present after :func:`export_checkpoint`)."""
        assert self.manifest.parity is not None
        return self.manifest.parity


def parity_images(model: MaskRCNN, count: int = 4, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Pre-processed ``(1, 3, S, S)`` float32 canvases for the parity check.

    ``count`` synthetic scenes (shapes on textured backgrounds, random sizes so the padding varies),
    one wide image (large bottom padding) and one flat mean-colour image (typically no detections).
    """
    from vitbench.trainer.data.synth import SynthConfig, render_image

    rng = np.random.default_rng(seed)
    images: list[tuple[str, np.ndarray]] = []
    for i in range(count):
        img, _ = render_image(rng, SynthConfig(min_image_size=64, max_image_size=160))
        images.append((f"synthetic-{i}", img))
    wide, _ = render_image(
        rng, SynthConfig(min_image_size=48, max_image_size=48, min_object_size=8, max_object_size=40)
    )
    images.append(("wide", np.concatenate([wide, wide, wide], axis=1)))  # (48, 144, 3)
    images.append(("flat", np.full((96, 96, 3), 124, dtype=np.uint8)))
    return [(name, preprocess(img, model)[0].numpy()) for name, img in images]


def export_checkpoint(
    checkpoint: Path,
    out_dir: Path,
    fmt: Format = "onnx",
    *,
    parity_count: int = 4,
    model_name: str | None = None,
    model_version: str | None = None,
    cache_root: Path | None = None,
) -> ExportOutcome:
    """Export the detector in ``checkpoint`` into ``out_dir`` and check parity against eager PyTorch.

    ``onnx``: ``model.onnx`` checked on ONNX Runtime's CPU provider (again at
    :data:`PARITY_LOW_THRESHOLD` when no detection reaches the model's threshold). ``tensorrt``: additionally
    ``backbone.onnx`` + ``tail.onnx`` checked through the TensorRT (fp16) / CUDA providers; raises
    :class:`~trainer.export.tensorrt.TensorRTUnavailableError` up front without a GPU.
    """
    import onnxruntime as ort

    from vitbench.trainer.engine.checkpoint import load_inference_model

    if fmt == "tensorrt":
        from vitbench.trainer.export.tensorrt import require_tensorrt

        require_tensorrt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source_sha = sha256_file(Path(checkpoint))
    model, recipe, meta = load_inference_model(checkpoint)
    size = int(recipe.input.image_size)
    images = parity_images(model, parity_count)
    import torch

    # traced on two images so that nothing batch-sized can be folded to the constant 1
    sample = torch.from_numpy(np.concatenate([images[0][1], images[1][1]]))
    result = export_onnx(model, size, out_dir / ONNX_FILE, sample=sample)
    eager = torch_runner(ExportableDetector(model, size).eval())
    threshold = float(recipe.heads.score_thresh)
    files = [result.path]
    tensorrt_info: dict[str, str] | None = None
    if fmt == "onnx":
        session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        single = run_parity(eager, onnx_runner(session), images, "", threshold)
        # the same images again, all in ONE session call (dynamic batch), compared per image
        batched = run_parity(eager, onnx_batch_runner(session, images), images, "", threshold)
        report = single.model_copy(
            update={
                "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider, each image at batch 1 and "
                f"within one batch of {len(images)}",
                "images": tuple(_worse(a, b) for a, b in zip(single.images, batched.images, strict=True)),
                "passed": single.passed and batched.passed,
            }
        )
        if not report.compared:
            report = _low_threshold_parity(model, size, images, out_dir, report.runtime)
    else:
        from vitbench.trainer.export.tensorrt import TensorRTDetector, export_split

        split = export_split(model, size, out_dir)
        files += [split.backbone, split.tail]
        detector = TensorRTDetector(
            split, size, cache_root or out_dir / "trt-cache", sha256_file(split.backbone)
        )
        model = model.cuda()
        eager = torch_runner_cuda(ExportableDetector(model, size).eval())
        report = run_parity(
            eager,
            detector,
            images,
            f"onnxruntime {ort.__version__} TensorRT fp16 (backbone) + CUDA (tail)",
            threshold,
        )
        tensorrt_info = detector.info()
    manifest = build_manifest(
        recipe,
        meta,
        opset=result.opset,
        exporter=result.exporter,
        files={p.name: sha256_file(p) for p in files},
        source_sha256=source_sha,
        model_name=model_name,
        model_version=model_version,
    ).model_copy(update={"parity": report, "tensorrt": tensorrt_info})
    manifest = ModelManifest.model_validate(manifest.model_dump())  # re-validate the updated copy
    return ExportOutcome(files=tuple(files), manifest=manifest)


def _worse(a: ImageParity, b: ImageParity) -> ImageParity:
    """One image's parity from two runs (batch 1, batched): the worse figures, passed only if both did."""

    def low(x: float | None, y: float | None) -> float | None:
        return min(v for v in (x, y) if v is not None) if x is not None or y is not None else None

    def high(x: float | None, y: float | None) -> float | None:
        return max(v for v in (x, y) if v is not None) if x is not None or y is not None else None

    return a.model_copy(
        update={
            "n_exported": a.n_exported if a.n_exported != a.n_eager else b.n_exported,
            "n_matched": min(a.n_matched, b.n_matched),
            "min_box_iou": low(a.min_box_iou, b.min_box_iou),
            "max_score_diff": high(a.max_score_diff, b.max_score_diff),
            "min_mask_iou": low(a.min_mask_iou, b.min_mask_iou),
            "passed": a.passed and b.passed,
        }
    )


def _low_threshold_parity(
    model: MaskRCNN, size: int, images: list[tuple[str, np.ndarray]], out_dir: Path, runtime: str
) -> ParityReport:
    """Parity at :data:`PARITY_LOW_THRESHOLD` when no detection reached the model's own threshold.

    The threshold is a constant of the exported graph, so a second graph is exported with it lowered
    (into a temporary folder; the model's threshold is restored afterwards). Its report still fails
    when nothing is detected even then.
    """
    import onnxruntime as ort
    import torch

    roi_heads = model.roi_heads
    original = roi_heads.score_thresh
    roi_heads.score_thresh = PARITY_LOW_THRESHOLD
    try:
        with tempfile.TemporaryDirectory(prefix=".parity-", dir=out_dir) as tmp:
            low = export_onnx(model, size, Path(tmp) / ONNX_FILE, sample=torch.from_numpy(images[0][1]))
            session = ort.InferenceSession(str(low.path), providers=["CPUExecutionProvider"])
            eager = torch_runner(ExportableDetector(model, size).eval())
            return run_parity(eager, onnx_runner(session), images, runtime, PARITY_LOW_THRESHOLD)
    finally:
        roi_heads.score_thresh = original


def torch_runner_cuda(module: ExportableDetector) -> Runner:
    """Eager runner on the GPU (inputs and outputs numpy on the host)."""
    import torch

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = module(torch.from_numpy(x).cuda())[:4]  # batch_index is all 0 for one image
        boxes, scores, labels, masks = (t.cpu().numpy() for t in out)
        return boxes, scores, labels, masks

    return run
