"""Wire schemas of the HTTP API (pydantic); these are what ``/openapi.json`` documents."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class MaskFormat(StrEnum):
    """How instance masks are encoded in the response."""

    rle = "rle"
    png = "png"
    polygon = "polygon"
    none = "none"


class DetectQuery(BaseModel):
    """Query parameters of ``POST /detect``; unknown parameters are rejected (422)."""

    model_config = ConfigDict(extra="forbid")

    score_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Minimum score; default from the server settings."
    )
    max_detections: int | None = Field(
        default=None, ge=1, le=1000, description="Most detections returned (highest scores first)."
    )
    mask_format: MaskFormat = Field(
        default=MaskFormat.rle,
        description="`rle` (COCO compressed RLE, column-major), `png` (base64 1-bit PNG), "
        "`polygon` (COCO polygons) or `none`.",
    )
    classes: list[str] | None = Field(
        default=None,
        description="Only these classes: names or 1-based label ids, repeated or comma-separated.",
    )


class ImageInfo(BaseModel):
    """Size of the decoded image after EXIF orientation, pixels."""

    width: int
    height: int


class RleMask(BaseModel):
    """COCO compressed RLE (pycocotools ``counts`` string, column-major order) of the whole image."""

    format: Literal["rle"] = "rle"
    size: list[int] = Field(description="[height, width]", min_length=2, max_length=2)
    counts: str


class PngMask(BaseModel):
    """Base64 1-bit PNG of the whole image; white pixels are the object."""

    format: Literal["png"] = "png"
    size: list[int] = Field(description="[height, width]", min_length=2, max_length=2)
    data: str


class PolygonMask(BaseModel):
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` in image pixels (holes are separate rings)."""

    format: Literal["polygon"] = "polygon"
    size: list[int] = Field(description="[height, width]", min_length=2, max_length=2)
    polygons: list[list[float]]


Mask = Annotated[RleMask | PngMask | PolygonMask, Field(discriminator="format")]


class Detection(BaseModel):
    """One detected instance; ``box`` is ``[x1, y1, x2, y2]`` in original-image pixels (x2 > x1, y2 > y1)."""

    box: list[float] = Field(min_length=4, max_length=4)
    score: float
    label: int = Field(description="1-based class id")
    label_name: str
    mask: Mask | None = Field(default=None, description="absent when mask_format=none")


class ModelIdentity(BaseModel):
    """The registered model that answered."""

    name: str
    version: str


class Timings(BaseModel):
    """Milliseconds spent per stage of this request."""

    decode: float
    preprocess: float
    queue: float
    inference: float
    postprocess: float
    total: float


class DetectResponse(BaseModel):
    """Answer of ``POST /detect``."""

    image: ImageInfo
    detections: list[Detection]
    model: ModelIdentity
    timings_ms: Timings


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer the service produces itself."""

    detail: str


class ModelInfo(BaseModel):
    """The loaded model, from its manifest."""

    name: str
    version: str
    reference: str
    recipe: str
    classes: list[str]
    input_size: int
    pixel_mean: list[float]
    pixel_std: list[float]
    providers: list[str]
    ready: bool


class ModelsResponse(BaseModel):
    """Answer of ``GET /v1/models``."""

    models: list[ModelInfo]


class HealthResponse(BaseModel):
    """Answer of the health routes."""

    status: Literal["alive", "ready", "loading", "draining", "failed"]
    detail: str | None = None
