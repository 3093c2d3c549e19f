"""The FastAPI application factory: ``create_app(settings)`` builds a fresh app with its own state.

Nothing is created at import time. The lifespan starts loading the model in the background, so
``/healthz`` answers at once and ``/readyz`` turns 200 only after the warm-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib.resources import files

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vitbench.registry.client import RegistryClient
from vitbench.registry.env import registry_location
from vitbench.service.backends import RawDetections
from vitbench.service.batching import DynamicBatcher
from vitbench.service.detect import DetectEndpoint, ServiceError, validation_details
from vitbench.service.lifecycle import BackendFactory, ServiceState, onnx_backend_factory
from vitbench.service.metrics import ServiceMetrics
from vitbench.service.middleware import AccessMiddleware, BodyLimitMiddleware
from vitbench.service.model_source import LocalModelSource, ModelSource, Pin, RegistryModelSource
from vitbench.service.pipeline import DetectorPipeline
from vitbench.service.raw_detect import RawDetectRoute
from vitbench.service.routes import build_router
from vitbench.service.settings import ServiceSettings

logger = logging.getLogger(__name__)

API_DESCRIPTION = """\
Instance detection with a registered, exported Mask R-CNN (plain ViT backbone).

`POST /detect` takes one image (multipart field `image`, or the raw bytes with an `image/*` content
type) and answers boxes in original-image pixels, scores, labels and instance masks (COCO RLE by
default). On CPU budget seconds per image for the full-size models.
"""


def source_from_settings(settings: ServiceSettings) -> ModelSource:
    """The model source the settings name: ``model_dir`` or a registry reference in ``model``."""
    if settings.model_dir is not None:
        return LocalModelSource(settings.model_dir)
    if settings.model is None:
        raise ValueError(
            "no model to serve: set VITBENCH_MODEL (name@alias or name/version) or VITBENCH_MODEL_DIR"
        )

    def client() -> RegistryClient:  # the settings already hold what the environment said
        where = registry_location(
            settings.home, tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri, env={}
        )
        return where.open()

    pin = Pin(settings.pin_model, settings.pin_sha256) if settings.pin_model and settings.pin_sha256 else None
    return RegistryModelSource(settings.model, client, settings.serving_cache, pin=pin)


def create_app(
    settings: ServiceSettings,
    source: ModelSource | None = None,
    backend_factory: BackendFactory = onnx_backend_factory,
    *,
    background_load: bool = True,
) -> FastAPI:
    """A new app serving the model from ``source`` (default: the one ``settings`` names).

    With ``background_load`` (the default) the server answers at once and ``/readyz`` turns 200 after
    the warm-up; without it, start-up waits for the model (and fails loudly if it cannot load).
    """
    model_source = source if source is not None else source_from_settings(settings)
    metrics = ServiceMetrics()
    state = ServiceState(settings, model_source, backend_factory)
    state.status_callbacks.append(lambda status: metrics.ready.set(1.0 if status == "ready" else 0.0))

    def make_batcher(pipeline: DetectorPipeline) -> DynamicBatcher[np.ndarray, RawDetections]:
        metrics.model_info.info(
            {
                "name": pipeline.artifact.name,
                "version": pipeline.artifact.version,
                "recipe": pipeline.artifact.manifest.recipe,
                "input_size": str(pipeline.image_size),
                "providers": ",".join(pipeline.backend.active_providers),
            }
        )
        return DynamicBatcher(
            pipeline.run_batch,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_queue_delay_ms / 1000.0,
            queue_size=settings.queue_size,
            on_batch=metrics.observe_batch,
            on_depth=metrics.queue_depth.set,
            incoming=lambda: state.preparing,
            streams=settings.inference_streams,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.reset()
        loader = asyncio.create_task(state.load(make_batcher), name="model-loader")
        if not background_load:
            await loader
            if state.status == "failed":
                raise RuntimeError(f"model failed to load: {state.error}")
        try:
            yield
        finally:
            state.begin_drain()
            loader.cancel()
            with suppress(asyncio.CancelledError):
                await loader
            if state.batcher is not None:
                await state.batcher.close(drain_timeout_s=settings.request_timeout_s)
            state.close_pools()
            logger.info("stopped")

    app = FastAPI(
        title="vitbench inference service",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = state
    app.state.metrics = metrics
    index_html = files("vitbench.service").joinpath("static/index.html").read_text(encoding="utf-8")
    endpoint = DetectEndpoint(state, metrics)
    router = build_router(endpoint, metrics, index_html)
    detect_route = next(route for route in router.routes if getattr(route, "path", None) == "/detect")
    app.include_router(router)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)

    def count_too_large() -> None:
        metrics.rejected.labels(reason="too_large").inc()

    # innermost first: raw image bodies are answered without FastAPI, inside the body limit and access log
    app.add_middleware(RawDetectRoute, endpoint=endpoint, route=detect_route)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, on_reject=count_too_large)
    app.add_middleware(AccessMiddleware, metrics=metrics)
    return app
