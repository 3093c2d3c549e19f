"""HTTP routes: the page, health, model listing, metrics and ``POST /detect``."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from vitbench.service.batching import BatcherClosedError, QueueFullError, RequestTimeoutError
from vitbench.service.decode import SUPPORTED_MEDIA_TYPES, DecodeError
from vitbench.service.lifecycle import ServiceState
from vitbench.service.metrics import ServiceMetrics
from vitbench.service.pipeline import DetectorPipeline
from vitbench.service.postprocess import FilterOptions, resolve_classes
from vitbench.service.schemas import (
    DetectQuery,
    DetectResponse,
    ErrorResponse,
    HealthResponse,
    MaskFormat,
    ModelInfo,
    ModelsResponse,
)

_REJECT_REASON = {413: "too_large", 415: "unsupported", 422: "undecodable"}

_DETECT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary", "description": "the image file"}
                },
            }
        },
        **{media: {"schema": {"type": "string", "format": "binary"}} for media in SUPPORTED_MEDIA_TYPES},
    },
}


class ServiceError(Exception):
    """An error answer of the service: ``{"detail": detail}`` with ``status`` and optional headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def build_router(state: ServiceState, metrics: ServiceMetrics, index_html: str) -> APIRouter:
    """All routes of one app, closed over its state (no globals)."""
    settings = state.settings
    router = APIRouter()
    polygons_available = importlib.util.find_spec("contourpy") is not None
    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when configured")

    def require_api_key(key: str | None = Depends(api_key_header)) -> None:
        expected = settings.api_key
        assert expected is not None
        if key is None or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
            metrics.rejected.labels(reason="unauthorized").inc()
            raise ServiceError(401, "missing or wrong X-API-Key header", {"WWW-Authenticate": "ApiKey"})

    # The security scheme is documented (and enforced) only when a key is configured.
    protected = [Depends(require_api_key)] if settings.api_key is not None else []
    auth_errors = (401,) if settings.api_key is not None else ()

    def retry_after() -> dict[str, str]:
        return {"Retry-After": str(settings.retry_after_s)}

    def loaded() -> DetectorPipeline:
        if state.pipeline is None or state.batcher is None:
            metrics.rejected.labels(reason="not_ready").inc()
            detail = f"model not ready ({state.status})" + (f": {state.error}" if state.error else "")
            raise ServiceError(503, detail, retry_after())
        return state.pipeline

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(index_html)

    def live() -> JSONResponse:
        if state.status == "failed":
            return JSONResponse({"status": "failed", "detail": state.error}, status_code=503)
        return JSONResponse({"status": "alive"})

    def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"status": state.status, "detail": state.error}, status_code=503, headers=retry_after()
        )

    health_doc: dict[int | str, dict[str, Any]] = {503: {"model": HealthResponse}}
    for path in ("/healthz", "/v2/health/live"):
        router.add_api_route(
            path,
            live,
            methods=["GET"],
            response_model=HealthResponse,
            responses=health_doc,
            summary="Liveness: the process answers (503 only if the model failed to load)",
        )
    for path in ("/readyz", "/v2/health/ready"):
        router.add_api_route(
            path,
            ready,
            methods=["GET"],
            response_model=HealthResponse,
            responses=health_doc,
            summary="Readiness: the model is loaded and warmed up, and not draining",
        )

    @router.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)")
    def prometheus() -> Response:
        metrics.queue_depth.set(state.batcher.depth if state.batcher else 0)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get(
        "/v1/models",
        response_model=ModelsResponse,
        responses=_errors(*auth_errors, 503),
        dependencies=protected,
        summary="The loaded model and its manifest",
    )
    def models() -> ModelsResponse:
        pipeline = loaded()
        manifest = pipeline.artifact.manifest
        info = ModelInfo(
            name=pipeline.artifact.name,
            version=pipeline.artifact.version,
            reference=pipeline.artifact.reference,
            recipe=manifest.recipe,
            classes=list(manifest.class_names),
            input_size=manifest.input.size,
            pixel_mean=list(manifest.input.pixel_mean),
            pixel_std=list(manifest.input.pixel_std),
            providers=pipeline.backend.active_providers,
            ready=state.ready,
        )
        return ModelsResponse(models=[info])

    @router.post(
        "/detect",
        response_model=DetectResponse,
        responses=_errors(*auth_errors, 413, 415, 422, 503),
        dependencies=protected,
        openapi_extra={"requestBody": _DETECT_BODY},
        summary="Detect instances in one image",
    )
    async def detect(request: Request, query: Annotated[DetectQuery, Query()]) -> Response:
        started = time.perf_counter()
        pipeline = loaded()
        assert state.batcher is not None
        if state.in_flight >= settings.queue_size + settings.max_batch_size * settings.inference_streams:
            metrics.rejected.labels(reason="overloaded").inc()
            raise ServiceError(503, "too many requests in progress; retry later", retry_after())
        state.in_flight += 1
        metrics.in_flight.inc()
        try:
            try:
                label_ids = resolve_classes(query.classes, pipeline.class_names)
            except ValueError as exc:
                raise ServiceError(422, f"classes: {exc}") from exc
            if query.mask_format is MaskFormat.polygon and not polygons_available:
                raise ServiceError(
                    422, "mask_format=polygon needs the contourpy package on the server; use rle or png"
                )
            options = FilterOptions(
                score_threshold=settings.score_threshold
                if query.score_threshold is None
                else query.score_threshold,
                max_detections=min(query.max_detections or settings.max_detections, settings.max_detections),
                label_ids=label_ids,
                mask_format=query.mask_format,
            )
            loop = asyncio.get_running_loop()
            state.preparing += 1  # tells the batcher that this request is on its way
            try:
                data = await _read_image_bytes(request)
            finally:
                state.preparing -= 1
            try:
                if state.in_flight == 1 and state.batcher.idle:
                    # Alone in the service: every stage on the inference thread, one hand-off.
                    prepared, run_s, detections, post_s = await state.batcher.run_alone(
                        functools.partial(pipeline.detect_alone, data, settings.max_pixels, options),
                        settings.request_timeout_s,
                    )
                    queue_s = 0.0
                    metrics.observe_batch(1, run_s)
                else:
                    state.preparing += 1
                    try:
                        prepared = await loop.run_in_executor(
                            state.prepare_pool, pipeline.prepare, data, settings.max_pixels
                        )
                    finally:
                        state.preparing -= 1
                    result = await state.batcher.submit(prepared.images, settings.request_timeout_s)
                    queue_s, run_s = result.queue_s, result.run_s
                    t_post = time.perf_counter()
                    detections = await loop.run_in_executor(
                        state.finish_pool, pipeline.finish, result.output, prepared, options
                    )
                    post_s = time.perf_counter() - t_post
            except DecodeError as exc:
                metrics.rejected.labels(reason=_REJECT_REASON.get(exc.status, "undecodable")).inc()
                raise ServiceError(exc.status, exc.message) from exc
            except QueueFullError as exc:
                metrics.rejected.labels(reason="overloaded").inc()
                raise ServiceError(
                    503, f"inference queue is full ({exc}); retry later", retry_after()
                ) from exc
            except RequestTimeoutError as exc:
                metrics.rejected.labels(reason="timeout").inc()
                raise ServiceError(503, f"inference timed out: {exc}", retry_after()) from exc
            except BatcherClosedError as exc:
                raise ServiceError(503, str(exc), retry_after()) from exc
        finally:
            state.in_flight -= 1
            metrics.in_flight.dec()
        for stage, seconds in (
            ("decode", prepared.decode_s),
            ("preprocess", prepared.preprocess_s),
            ("queue", queue_s),
            ("inference", run_s),
            ("postprocess", post_s),
        ):
            metrics.stage_seconds.labels(stage=stage).observe(seconds)
        metrics.detections.observe(len(detections))
        box = prepared.letterbox
        timings = {
            "decode": round(prepared.decode_s * 1000, 3),
            "preprocess": round(prepared.preprocess_s * 1000, 3),
            "queue": round(queue_s * 1000, 3),
            "inference": round(run_s * 1000, 3),
            "postprocess": round(post_s * 1000, 3),
            "total": round((time.perf_counter() - started) * 1000, 3),
        }
        response = DetectResponse.model_validate(
            {
                "image": {"width": box.original_width, "height": box.original_height},
                "detections": detections,
                "model": {"name": pipeline.artifact.name, "version": pipeline.artifact.version},
                "timings_ms": timings,
            }
        )
        # validated once here and serialized by pydantic; FastAPI passes a Response through as it is
        return Response(
            response.model_dump_json(),
            media_type="application/json",
            headers={"Server-Timing": server_timing(timings)},
        )

    return router


def server_timing(timings_ms: dict[str, float]) -> str:
    """The W3C ``Server-Timing`` header value of the stage timings (ms): ``decode;dur=2.1, ...``.

    Browsers' developer tools show it beside the request, and clients read the stages without parsing
    the body (https://www.w3.org/TR/server-timing/).
    """
    return ", ".join(f"{stage};dur={ms}" for stage, ms in timings_ms.items())


async def _read_image_bytes(request: Request) -> bytes:
    """The image bytes from a multipart ``image`` field or a raw ``image/*`` body (415 otherwise)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except (MultiPartException, StarletteHTTPException) as exc:
            detail = getattr(exc, "message", None) or getattr(exc, "detail", "")
            raise ServiceError(422, f"malformed multipart body: {detail}") from exc
        try:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ServiceError(422, "multipart body needs a file field named 'image'")
            data = await upload.read()
        finally:
            await form.close()
    elif media.startswith("image/") or media == "application/octet-stream":
        data = await request.body()
    else:
        raise ServiceError(
            415,
            f"unsupported content type {media or '(none)'!r}; send multipart/form-data with a file field "
            f"'image' or a raw body with one of {', '.join(SUPPORTED_MEDIA_TYPES)}",
        )
    if not data:
        raise ServiceError(422, "the image is empty (0 bytes)")
    return data
