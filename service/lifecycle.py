"""Lifecycle of one app instance: loading → ready → draining, or failed.

Loading (fetch, session creation, warm-up) runs in a worker thread after the server starts, so
liveness answers at once while readiness waits for the warm-up, as Triton and KServe do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np

from vitbench.service import masks, preprocess
from vitbench.service.backends import RawDetections
from vitbench.service.batching import DynamicBatcher
from vitbench.service.model_source import ModelArtifact, ModelSource
from vitbench.service.pipeline import Backend, DetectorPipeline
from vitbench.service.settings import ServiceSettings

logger = logging.getLogger(__name__)

Status = Literal["loading", "ready", "draining", "failed"]
BackendFactory = Callable[[ModelArtifact, ServiceSettings], Backend]


def onnx_backend_factory(artifact: ModelArtifact, settings: ServiceSettings) -> Backend:
    """The production backend: an ONNX Runtime session with the configured providers."""
    from vitbench.service.backends import OnnxBackend

    return OnnxBackend(
        artifact.onnx_path,
        image_size=artifact.manifest.input.size,
        providers=list(settings.providers),
        intra_op_threads=settings.session_threads,
        intra_op_spinning=settings.intra_op_spinning,
        trt_cache_dir=settings.trt_cache_dir,
        trt_fp16=settings.trt_fp16,
    )


class ServiceState:
    """Mutable state shared by the routes of one app; only the event loop thread changes it."""

    def __init__(
        self, settings: ServiceSettings, source: ModelSource, backend_factory: BackendFactory
    ) -> None:
        self.settings = settings
        self.source = source
        self.backend_factory = backend_factory
        self.status: Status = "loading"
        self.error: str | None = None
        self.pipeline: DetectorPipeline | None = None
        self.batcher: DynamicBatcher[np.ndarray, RawDetections] | None = None
        self.in_flight = 0
        self.preparing = 0  # admitted requests still reading/decoding (they will reach the batcher)
        self.prepare_pool: ThreadPoolExecutor | None = None
        self.finish_pool: ThreadPoolExecutor | None = None
        self.warmup_s: float | None = None
        self.failure_callbacks: list[Callable[[str], None]] = []
        self.status_callbacks: list[Callable[[Status], None]] = []

    def reset(self) -> None:
        """Back to ``loading`` with nothing loaded (each lifespan starts from here); opens the pools.

        Decode/preprocess and postprocess get their own thread pools (``settings.stage_threads``
        each) so that these CPU stages of some requests run while the inference thread runs others.
        """
        self.pipeline, self.batcher, self.in_flight, self.preparing, self.warmup_s = None, None, 0, 0, None
        self.close_pools()
        threads = self.settings.stage_threads
        self.prepare_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="prepare")
        self.finish_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="postprocess")
        self.set_status("loading")

    def close_pools(self) -> None:
        """Shut the stage pools down (after the batcher has drained)."""
        for pool in (self.prepare_pool, self.finish_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self.prepare_pool = self.finish_pool = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def set_status(self, status: Status, error: str | None = None) -> None:
        self.status = status
        self.error = error
        for callback in self.status_callbacks:
            callback(status)
        if status == "failed":
            for fail in self.failure_callbacks:
                fail(error or "model failed to load")

    def begin_drain(self) -> None:
        """Stop being ready (readiness probes answer 503); requests in progress and new ones still run."""
        if self.status in ("ready", "loading"):
            logger.info("draining: readiness is now 503")
            self.set_status("draining")

    def load_blocking(self) -> DetectorPipeline:
        """Fetch, open and warm up the model (runs in a worker thread)."""
        started = time.perf_counter()
        logger.info("loading model", extra={"source": self.source.describe()})
        artifact = self.source.fetch()
        backend = self.backend_factory(artifact, self.settings)
        stream_threads = self.settings.stream_threads(backend.active_providers)
        stream_backend = None
        if stream_threads is not None:  # queued batches get a session with fewer threads per run
            narrow = self.settings.model_copy(update={"intra_op_threads": stream_threads})
            stream_backend = self.backend_factory(artifact, narrow)
        pipeline = DetectorPipeline(artifact, backend, self.settings.jpeg_draft_factor, stream_backend)
        self.warmup_s = pipeline.warmup()
        logger.info(
            "model ready",
            extra={
                "model": artifact.name,
                "version": artifact.version,
                "providers": backend.active_providers,
                "intra_op_threads": self.settings.session_threads,  # 0: ORT's default
                "stream_intra_op_threads": stream_threads,
                "warmup_s": round(self.warmup_s, 3),
                "load_s": round(time.perf_counter() - started, 3),
                "rle_encoder": "c" if masks.NATIVE_RLE else "numpy",
                "preprocess": "c" if preprocess.NATIVE_PREPROCESS else "numpy",
            },
        )
        missing = [
            name
            for name, built in (
                ("vitbench.service._rle (RLE masks)", masks.NATIVE_RLE),
                ("vitbench.service._resize (preprocessing)", preprocess.NATIVE_PREPROCESS),
            )
            if not built
        ]
        if missing:
            logger.warning(
                "C extensions not built: %s; numpy computes the same bytes, slower. Reinstall vitbench "
                "where a C compiler and the Python headers exist",
                ", ".join(missing),
            )
        return pipeline

    async def load(
        self, make_batcher: Callable[[DetectorPipeline], DynamicBatcher[np.ndarray, RawDetections]]
    ) -> None:
        """Load in a thread, then start the batcher and become ready (unless draining already)."""
        try:
            pipeline = await asyncio.to_thread(self.load_blocking)
            batcher = make_batcher(pipeline)
            await batcher.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error(
                "model failed to load: %s", exc, exc_info=not isinstance(exc, RuntimeError | ValueError)
            )
            self.set_status("failed", f"{type(exc).__name__}: {exc}")
            return
        self.pipeline, self.batcher = pipeline, batcher
        if self.status == "loading":
            self.set_status("ready")
