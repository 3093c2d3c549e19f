"""``POST /detect`` itself, from query and image bytes to the JSON answer, for both ways in.

FastAPI's route (``routes.py``, the documented one, also reading multipart forms) and the plain ASGI
route for raw image bodies (``raw_detect.py``) call :meth:`DetectEndpoint.answer`: the same checks in
the same order, the same errors (:class:`ServiceError`), metrics and bytes.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from vitbench.service.batching import BatcherClosedError, QueueFullError, RequestTimeoutError
from vitbench.service.decode import DecodeError
from vitbench.service.lifecycle import ServiceState
from vitbench.service.metrics import ServiceMetrics
from vitbench.service.pipeline import DetectorPipeline
from vitbench.service.postprocess import FilterOptions, resolve_classes
from vitbench.service.schemas import DetectQuery, DetectResponse, MaskFormat

_REJECT_REASON = {413: "too_large", 415: "unsupported", 422: "undecodable"}


class ServiceError(Exception):
    """An error answer of the service: ``{"detail": detail}`` with ``status`` and optional headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def validation_details(errors: Sequence[Any], prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The 422 body's ``detail`` list of pydantic ``errors``: ``{"loc", "msg", "type"}`` each, ``loc``
    after ``prefix`` (e.g. ``("query",)``)."""
    return [
        {"loc": [*prefix, *e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ]


def is_raw_image(media_type: str) -> bool:
    """A body ``POST /detect`` reads as the image bytes themselves: ``image/*`` or
    ``application/octet-stream`` (``media_type`` lower-case, without parameters)."""
    return media_type.startswith("image/") or media_type == "application/octet-stream"


def server_timing(timings_ms: dict[str, float]) -> str:
    """The W3C ``Server-Timing`` header value of the stage timings (ms): ``decode;dur=2.1, ...``.

    Browsers' developer tools show it beside the request, and clients read the stages without parsing
    the body (https://www.w3.org/TR/server-timing/).
    """
    return ", ".join(f"{stage};dur={ms}" for stage, ms in timings_ms.items())


class DetectEndpoint:
    """What ``POST /detect`` does once the request's query and a way to read its image are known."""

    def __init__(self, state: ServiceState, metrics: ServiceMetrics) -> None:
        self.state = state
        self.metrics = metrics
        self.settings = state.settings
        self.polygons_available = importlib.util.find_spec("contourpy") is not None

    def retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.settings.retry_after_s)}

    def check_api_key(self, key: str | None) -> None:
        """Raise 401 unless ``key`` is the configured API key (no key configured: everyone passes)."""
        expected = self.settings.api_key
        if expected is None:
            return
        if key is None or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
            self.metrics.rejected.labels(reason="unauthorized").inc()
            raise ServiceError(401, "missing or wrong X-API-Key header", {"WWW-Authenticate": "ApiKey"})

    def loaded(self) -> DetectorPipeline:
        """The pipeline, or 503 while the model is loading, failed or draining."""
        state = self.state
        if state.pipeline is None or state.batcher is None:
            self.metrics.rejected.labels(reason="not_ready").inc()
            detail = f"model not ready ({state.status})" + (f": {state.error}" if state.error else "")
            raise ServiceError(503, detail, self.retry_after())
        return state.pipeline

    async def answer(
        self, query: DetectQuery, read_image: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, str]:
        """The JSON body and ``Server-Timing`` header of a 200 answer; raises :class:`ServiceError`.

        ``read_image`` is awaited once, after the cheap checks (model ready, not overloaded, classes
        known), and returns the image bytes or raises :class:`ServiceError` (415, 422); no bytes is 422.
        """
        started = time.perf_counter()
        state, settings, metrics = self.state, self.settings, self.metrics
        pipeline = self.loaded()
        assert state.batcher is not None
        if state.in_flight >= settings.queue_size + settings.max_batch_size * settings.inference_streams:
            metrics.rejected.labels(reason="overloaded").inc()
            raise ServiceError(503, "too many requests in progress; retry later", self.retry_after())
        state.in_flight += 1
        metrics.in_flight.inc()
        try:
            try:
                label_ids = resolve_classes(query.classes, pipeline.class_names)
            except ValueError as exc:
                raise ServiceError(422, f"classes: {exc}") from exc
            if query.mask_format is MaskFormat.polygon and not self.polygons_available:
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
                data = await read_image()
            finally:
                state.preparing -= 1
            if not data:
                raise ServiceError(422, "the image is empty (0 bytes)")
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
                    503, f"inference queue is full ({exc}); retry later", self.retry_after()
                ) from exc
            except RequestTimeoutError as exc:
                metrics.rejected.labels(reason="timeout").inc()
                raise ServiceError(503, f"inference timed out: {exc}", self.retry_after()) from exc
            except BatcherClosedError as exc:
                raise ServiceError(503, str(exc), self.retry_after()) from exc
        finally:
            state.in_flight -= 1
            metrics.in_flight.dec()
        stages = {
            "decode": prepared.decode_s,
            "preprocess": prepared.preprocess_s,
            "queue": queue_s,
            "inference": run_s,
            "postprocess": post_s,
        }
        metrics.observe_stages(stages)
        metrics.detections.observe(len(detections))
        box = prepared.letterbox
        timings = {stage: round(seconds * 1000, 3) for stage, seconds in stages.items()}
        timings["total"] = round((time.perf_counter() - started) * 1000, 3)
        response = DetectResponse.model_validate(
            {
                "image": {"width": box.original_width, "height": box.original_height},
                "detections": detections,
                "model": {"name": pipeline.artifact.name, "version": pipeline.artifact.version},
                "timings_ms": timings,
            }
        )
        return response.model_dump_json().encode(), server_timing(timings)
