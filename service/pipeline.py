"""The detection pipeline: decode → preprocess → (batched) run → postprocess.

The stages are plain blocking functions; the app runs decode/preprocess and postprocess in the
thread pool and inference through the :class:`~service.batching.DynamicBatcher`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vitbench.service.backends import RawDetections
from vitbench.service.decode import decode_image, draft_target
from vitbench.service.model_source import ModelArtifact
from vitbench.service.postprocess import FilterOptions, postprocess
from vitbench.service.preprocess import Letterbox, preprocess


class Backend(Protocol):
    """What the pipeline needs from an inference backend."""

    @property
    def active_providers(self) -> list[str]: ...

    def run_batch(self, batch: list[np.ndarray]) -> list[RawDetections]: ...


@dataclass(frozen=True)
class Prepared:
    """A decoded, preprocessed image: ``images`` float32 [1, 3, S, S] and how to map results back."""

    images: np.ndarray
    letterbox: Letterbox
    decode_s: float
    preprocess_s: float


class DetectorPipeline:
    """One loaded model: its manifest, its backend and the stages around it."""

    def __init__(
        self,
        artifact: ModelArtifact,
        backend: Backend,
        jpeg_draft_factor: float = 0.0,
        stream_backend: Backend | None = None,
    ) -> None:
        """``jpeg_draft_factor`` > 0: JPEGs are decoded at the largest DCT reduction that keeps their
        longest side >= factor × S (see :func:`~service.decode.decode_image`); 0 = always full size.

        ``backend`` runs lone requests (:meth:`detect_alone`); ``stream_backend`` (default: the same)
        runs the batcher's batches (:meth:`run_batch`), e.g. a session with fewer threads per run
        while several runs share the cores."""
        self.artifact = artifact
        self.backend = backend
        self.stream_backend = stream_backend if stream_backend is not None else backend
        self.jpeg_draft_factor = jpeg_draft_factor
        spec = artifact.manifest.input
        self.image_size = spec.size
        self.pixel_mean = spec.pixel_mean
        self.pixel_std = spec.pixel_std
        self.class_names: tuple[str, ...] = artifact.manifest.class_names

    def prepare(self, data: bytes, max_pixels: int) -> Prepared:
        """Decode ``data`` (raises :class:`~service.decode.DecodeError`) and build the graph input."""
        t0 = time.perf_counter()
        image = decode_image(data, max_pixels, draft_target(self.jpeg_draft_factor, self.image_size))
        t1 = time.perf_counter()
        images, letterbox = preprocess(
            image.pixels,
            self.image_size,
            self.pixel_mean,
            self.pixel_std,
            (image.original_height, image.original_width),
        )
        t2 = time.perf_counter()
        return Prepared(images, letterbox, t1 - t0, t2 - t1)

    def run_batch(self, batch: list[np.ndarray]) -> list[RawDetections]:
        """Blocking inference on [1, 3, S, S] inputs (called from the batcher's worker thread)."""
        return self.stream_backend.run_batch(batch)

    def finish(self, raw: RawDetections, prepared: Prepared, options: FilterOptions) -> list[dict[str, Any]]:
        """Response detections for one image's raw outputs."""
        return postprocess(raw, prepared.letterbox, self.class_names, options)

    def detect_alone(
        self, data: bytes, max_pixels: int, options: FilterOptions
    ) -> tuple[Prepared, float, list[dict[str, Any]], float]:
        """All stages of one request in the calling thread: (prepared, inference s, detections,
        postprocess s). For a lone request, where nothing could overlap anyway."""
        prepared = self.prepare(data, max_pixels)
        t0 = time.perf_counter()
        (raw,) = self.backend.run_batch([prepared.images])
        t1 = time.perf_counter()
        detections = self.finish(raw, prepared, options)
        return prepared, t1 - t0, detections, time.perf_counter() - t1

    def warmup(self) -> float:
        """Run one mean-grey image through the backend(s); returns the seconds it took."""
        t0 = time.perf_counter()
        grey = np.full((self.image_size, self.image_size, 3), 114, dtype=np.uint8)
        images, _ = preprocess(grey, self.image_size, self.pixel_mean, self.pixel_std)
        self.backend.run_batch([images])
        if self.stream_backend is not self.backend:
            self.stream_backend.run_batch([images])
        return time.perf_counter() - t0
