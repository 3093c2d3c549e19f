"""ONNX Runtime backend for the exported detector graph.

Graph contract (docs/architecture.md): input ``images`` float32 [B, 3, S, S]; outputs ``boxes`` float32
[N, 4] (S×S canvas), ``scores`` float32 [N], ``labels`` int64 [N] (1-based), ``mask_logits`` float32
[N, 28, 28] (probabilities) and, in graphs with a dynamic batch, ``batch_index`` int64 [N] (the image
of each detection). Graphs without ``batch_index`` are batch-1 exports: a batch runs image by image.
The session is thread-safe; one ``run`` uses ``intra_op_threads`` (which do not spin-wait unless asked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES: tuple[str, ...] = ("boxes", "scores", "labels", "mask_logits")
BATCH_INDEX = "batch_index"


class BackendError(RuntimeError):
    """The model file does not follow the graph contract or cannot be loaded."""


@dataclass(frozen=True)
class RawDetections:
    """One image's graph outputs: ``boxes`` [N, 4] canvas pixels, ``scores`` [N], ``labels`` [N] 1-based,
    ``masks`` [N, M, M] probabilities in [0, 1]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if (
            self.boxes.shape != (n, 4)
            or self.labels.shape != (n,)
            or self.masks.ndim != 3
            or len(self.masks) != n
        ):
            raise BackendError(
                f"model outputs disagree: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"labels {self.labels.shape}, masks {self.masks.shape}"
            )


def select_providers(preferred: list[str], available: list[str]) -> list[str]:
    """``preferred`` filtered by ``available``, order kept; CPU is appended when nothing else is left."""
    chosen = [p for p in preferred if p in available]
    if not chosen:
        chosen = ["CPUExecutionProvider"]
    return chosen


class OnnxBackend:
    """An ``onnxruntime.InferenceSession`` over one exported detector, checked against the contract."""

    def __init__(
        self,
        onnx_path: Path,
        image_size: int,
        providers: list[str],
        intra_op_threads: int = 0,
        intra_op_spinning: bool = False,
        trt_cache_dir: Path | None = None,
        trt_fp16: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.image_size = image_size
        self.providers = select_providers(providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        # ORT's threads spin between operators by default; beside other CPU work that only burns cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if intra_op_spinning else "0")
        provider_args: list[Any] = []
        for name in self.providers:
            if name == "TensorrtExecutionProvider":
                trt: dict[str, Any] = {"trt_fp16_enable": trt_fp16, "trt_layer_norm_fp32_fallback": True}
                if trt_cache_dir is not None:
                    trt_cache_dir.mkdir(parents=True, exist_ok=True)
                    trt.update(
                        trt_engine_cache_enable=True,
                        trt_engine_cache_path=str(trt_cache_dir),
                        trt_timing_cache_enable=True,
                        trt_timing_cache_path=str(trt_cache_dir),
                    )
                provider_args.append((name, trt))
            elif name == "CUDAExecutionProvider":
                provider_args.append((name, {"arena_extend_strategy": "kSameAsRequested"}))
            else:
                provider_args.append(name)
        try:
            self._session = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=provider_args
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise BackendError(f"cannot load ONNX model {onnx_path}: {exc}") from exc
        self._check_contract()
        logger.info("onnx session ready", extra={"providers": self._session.get_providers()})

    @property
    def active_providers(self) -> list[str]:
        """Providers the session actually uses, in priority order."""
        return list(self._session.get_providers())

    def _check_contract(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if INPUT_NAME not in inputs:
            raise BackendError(f"model has no input {INPUT_NAME!r}; it has {sorted(inputs)}")
        shape = inputs[INPUT_NAME].shape
        if len(shape) != 4:
            raise BackendError(f"input {INPUT_NAME!r} must be [1, 3, S, S], got {shape}")
        fixed = [d for d in shape[2:] if isinstance(d, int)]
        if any(d != self.image_size for d in fixed):
            raise BackendError(f"input {INPUT_NAME!r} is {shape} but the manifest says S={self.image_size}")
        missing = [o for o in OUTPUT_NAMES if o not in outputs]
        if missing:
            raise BackendError(f"model lacks output(s) {missing}; expected {list(OUTPUT_NAMES)}")
        self.batched = BATCH_INDEX in outputs and not isinstance(shape[0], int)

    @property
    def supports_batch(self) -> bool:
        """Whether one ``run`` takes several images (dynamic batch graph with ``batch_index``)."""
        return self.batched

    def run(self, images: np.ndarray) -> RawDetections:
        """Run one image, ``images`` float32 [1, 3, S, S] → its detections."""
        boxes, scores, labels, masks = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return RawDetections(
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            scores=np.asarray(scores, dtype=np.float32).reshape(-1),
            labels=np.asarray(labels, dtype=np.int64).reshape(-1),
            masks=np.asarray(masks, dtype=np.float32).reshape(len(scores), *np.shape(masks)[-2:]),
        )

    def run_batch(self, batch: list[np.ndarray]) -> list[RawDetections]:
        """Run [1, 3, S, S] images: in ONE session call when the graph is batched, else one by one."""
        if not self.batched or len(batch) == 1:
            return [self.run(images) for images in batch]
        names = [*OUTPUT_NAMES, BATCH_INDEX]
        stacked = np.concatenate(batch)  # [B, 3, S, S]
        boxes, scores, labels, masks, index = self._session.run(names, {INPUT_NAME: stacked})
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        masks = np.asarray(masks, dtype=np.float32).reshape(len(index), *np.shape(masks)[-2:])
        return [
            RawDetections(
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[index == i],
                scores=np.asarray(scores, dtype=np.float32).reshape(-1)[index == i],
                labels=np.asarray(labels, dtype=np.int64).reshape(-1)[index == i],
                masks=masks[index == i],
            )
            for i in range(len(batch))
        ]
