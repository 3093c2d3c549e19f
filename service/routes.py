"""HTTP routes: the page, health, model listing, metrics and ``POST /detect``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from vitbench.service.decode import SUPPORTED_MEDIA_TYPES
from vitbench.service.detect import DetectEndpoint, ServiceError, is_raw_image
from vitbench.service.lifecycle import ServiceState
from vitbench.service.metrics import ServiceMetrics
from vitbench.service.schemas import (
    DetectQuery,
    DetectResponse,
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
)

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


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def build_router(endpoint: DetectEndpoint, metrics: ServiceMetrics, index_html: str) -> APIRouter:
    """All routes of one app, closed over its state (no globals)."""
    state: ServiceState = endpoint.state
    settings = state.settings
    router = APIRouter()
    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when configured")

    def require_api_key(key: str | None = Depends(api_key_header)) -> None:
        endpoint.check_api_key(key)

    # The security scheme is documented (and enforced) only when a key is configured.
    protected = [Depends(require_api_key)] if settings.api_key is not None else []
    auth_errors = (401,) if settings.api_key is not None else ()

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
            {"status": state.status, "detail": state.error}, status_code=503, headers=endpoint.retry_after()
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
        pipeline = endpoint.loaded()
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
        # Raw image bodies normally arrive through raw_detect.RawDetectRoute, which answers the same.
        body, timing = await endpoint.answer(query, lambda: _read_image_bytes(request))
        return Response(body, media_type="application/json", headers={"Server-Timing": timing})

    return router


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
    elif is_raw_image(media):
        data = await request.body()
    else:
        raise ServiceError(
            415,
            f"unsupported content type {media or '(none)'!r}; send multipart/form-data with a file field "
            f"'image' or a raw body with one of {', '.join(SUPPORTED_MEDIA_TYPES)}",
        )
    return data
