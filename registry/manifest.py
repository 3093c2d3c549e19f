"""The model manifest stored as ``manifest.json`` beside ``model.onnx`` (torch-free).

It tells a consumer everything needed to run the exported graph without the training code:
the fixed input size and normalization, class names, opset, tensor layouts, the parity report
that proved the export matches eager PyTorch, and the SHA-256 of every exported file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vitbench.fileio import atomic_write_text
from vitbench.registry.hashing import is_sha256

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
MANIFEST_FORMAT = 1


class ManifestError(ValueError):
    """A manifest file is missing, unreadable or does not satisfy the schema."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputSpec(_Frozen):
    """The graph input: one normalized, padded RGB image ``float32[1, 3, S, S]``."""

    name: str = "images"
    size: int = Field(gt=0, description="S: the square canvas side in pixels (the recipe's input.image_size)")
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"
    pixel_mean: tuple[float, float, float] = Field(description="per-channel mean, 0-255 scale")
    pixel_std: tuple[float, float, float] = Field(description="per-channel std, 0-255 scale")
    resize: Literal["longest-side"] = "longest-side"
    pad: Literal["bottom-right"] = "bottom-right"

    @field_validator("pixel_std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"pixel_std must be positive, got {list(v)}")
        return v

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(1, 3, S, S)``."""
        return (1, 3, self.size, self.size)


class OutputSpec(_Frozen):
    """One graph output; ``shape`` uses ``"N"`` for the number of detections."""

    name: str
    dtype: Literal["float32", "int64"]
    shape: tuple[int | str, ...]
    description: str


def default_outputs(mask_size: int = 28) -> tuple[OutputSpec, ...]:
    """The output layout of every vitbench ONNX export (see docs/architecture.md)."""
    return (
        OutputSpec(
            name="boxes",
            dtype="float32",
            shape=("N", 4),
            description="x1, y1, x2, y2 in the S×S canvas, clipped to the canvas (not to the resized image)",
        ),
        OutputSpec(
            name="scores", dtype="float32", shape=("N",), description="detection confidence in [0, 1]"
        ),
        OutputSpec(name="labels", dtype="int64", shape=("N",), description="1-based; class_names[label - 1]"),
        OutputSpec(
            name="mask_logits",
            dtype="float32",
            shape=("N", mask_size, mask_size),
            description="per-detection mask probabilities in the box (sigmoid applied), not pasted",
        ),
    )


class ImageParity(_Frozen):
    """Eager vs exported outputs on one image."""

    image: str
    n_eager: int = Field(ge=0)
    n_exported: int = Field(ge=0)
    n_matched: int = Field(ge=0)
    min_box_iou: float | None = None
    max_score_diff: float | None = None
    min_mask_iou: float | None = None
    passed: bool


class ParityReport(_Frozen):
    """Result of running eager PyTorch and the exported graph on the same images."""

    runtime: str = Field(description="e.g. 'onnxruntime 1.22.0 CPUExecutionProvider'")
    box_iou_min: float = 0.99
    score_diff_max: float = 1e-3
    mask_iou_min: float = 0.95
    score_threshold: float | None = Field(
        default=None, description="score threshold the check ran at (below the model's when it had to be)"
    )
    images: tuple[ImageParity, ...]
    passed: bool

    @property
    def compared(self) -> int:
        """Detections matched between eager and exported over all images; 0 proves nothing."""
        return sum(im.n_matched for im in self.images)

    @model_validator(mode="after")
    def _consistent(self) -> ParityReport:
        if self.passed and not all(im.passed for im in self.images):
            raise ValueError("parity report says passed but an image failed")
        return self


class ModelManifest(_Frozen):
    """Everything a runtime needs to use an exported detector; stored as ``manifest.json``."""

    format: int = MANIFEST_FORMAT
    model_name: str | None = None
    model_version: str | None = None
    recipe: str
    init: str | None = None
    neck: str | None = None
    input: InputSpec
    class_names: tuple[str, ...] = Field(min_length=1)
    opset: int = Field(ge=11)
    outputs: tuple[OutputSpec, ...] = Field(default_factory=default_outputs)
    mask_size: int = 28
    mask_output: Literal["probability"] = "probability"
    score_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    detections_per_image: int = Field(default=100, gt=0)
    exporter: str = Field(default="", description="e.g. 'torch 2.14.1 torch.onnx.export(dynamo=False)'")
    source_sha256: str | None = Field(
        default=None, description="SHA-256 of the checkpoint it was exported from"
    )
    files: dict[str, str] = Field(default_factory=dict, description="file name -> SHA-256 (hex)")
    parity: ParityReport | None = None
    tensorrt: dict[str, str] | None = None

    @field_validator("files")
    @classmethod
    def _hex_digests(cls, v: dict[str, str]) -> dict[str, str]:
        for name, digest in v.items():
            if "/" in name or "\\" in name or name in {"", ".", ".."}:
                raise ValueError(f"file names must be plain names, got {name!r}")
            if not is_sha256(digest):
                raise ValueError(f"files[{name!r}] is not a lower-case hex sha256: {digest!r}")
        return v

    def output(self, name: str) -> OutputSpec:
        """The output named ``name`` (KeyError naming the known outputs otherwise)."""
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(f"no output {name!r}; outputs are {[o.name for o in self.outputs]}")

    def to_json(self) -> str:
        """Pretty JSON text (stable key order)."""
        return self.model_dump_json(indent=2) + "\n"

    def save(self, path: Path) -> Path:
        """Write to ``path`` through a temporary file and an atomic rename; return ``path``."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> ModelManifest:
        """Read and validate ``path``; raise :class:`ManifestError` naming the file and the problem."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
        try:
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest {path} is not valid JSON: {exc}") from exc
        except ValidationError as exc:
            raise ManifestError(f"manifest {path} does not match the schema: {exc}") from exc
