"""Service settings, read from the environment with the ``VITBENCH_`` prefix.

Only the CLI layer (``vitbench serve``) and test code build a :class:`ServiceSettings`; the app and its
modules receive the object and never read the environment themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from vitbench.service.cpus import available_cores, limited_cores

DEFAULT_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
KNOWN_PROVIDERS = frozenset(
    {*DEFAULT_PROVIDERS, "ROCMExecutionProvider", "OpenVINOExecutionProvider", "CoreMLExecutionProvider"}
)


class ServiceSettings(BaseSettings):
    """Everything the inference service can be told; every field has a safe local default.

    Environment variables are the upper-cased field names with the ``VITBENCH_`` prefix, for example
    ``VITBENCH_MODEL=coco-vitdet@champion`` or
    ``VITBENCH_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider``.
    """

    model_config = SettingsConfigDict(env_prefix="VITBENCH_", extra="ignore", frozen=True)

    model: str | None = Field(
        default=None, description="Registry reference of the model to serve: `name@alias` or `name/version`."
    )
    model_dir: Path | None = Field(
        default=None,
        description="Serve an exported folder (model.onnx + manifest.json) directly instead of the registry.",
    )
    pin_model: str | None = Field(
        default=None,
        description=(
            "Pin: the only `name/version` the service loads; with `model` unset it is the model served. "
            "An alias in `model` must resolve to it, whatever the registry says, or loading is refused."
        ),
    )
    pin_sha256: str | None = Field(
        default=None,
        description=(
            "Pin: SHA-256 of the pinned version's export `manifest.json` (which lists the SHA-256 of "
            "`model.onnx`); `vitbench registry show` prints it as `export.onnx.manifest_sha256`. "
            "Required with `pin_model`; a download with another digest is refused."
        ),
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; unset = the embedded SQLite registry under `home`."
    )
    registry_uri: str | None = Field(default=None, description="MLflow registry URI when it differs.")
    home: Path = Field(default=Path(".vitbench"), description="Local data folder (embedded registry, cache).")
    cache_dir: Path | None = Field(
        default=None, description="Where downloaded models are kept; default `<home>/serving`."
    )
    providers: Annotated[list[str], NoDecode] = Field(
        default=list(DEFAULT_PROVIDERS),
        description="ONNX Runtime execution providers in order of preference; unavailable ones are skipped.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="ORT intra-op threads per run of a lone request; 0 = one per core this process may "
        "use: the CPU quota or CPU set in a container, else ORT's default (one per core).",
    )
    stream_intra_op_threads: int = Field(
        default=-1,
        ge=-1,
        le=256,
        description="CPU provider only: a second ORT session with this many intra-op threads runs the "
        "batches that form while requests queue, so `inference_streams` runs share the cores instead of "
        "each spreading over all of them (ORT's threads cost CPU to hand work over); a lone request keeps "
        "the first session and all its threads. -1 = cores / streams; 0 = no second session. The second "
        "session holds its own copy of the weights.",
    )
    intra_op_spinning: bool = Field(
        default=False,
        description="Let ORT's intra-op threads spin while they wait for work (ORT's own default). Off: "
        "they sleep, leaving the cores to the decode and mask threads that share them.",
    )
    cpu_threads: int = Field(
        default=0,
        ge=0,
        description="Threads for decode/preprocess and for mask paste/encode (one pool each), so these "
        "stages of some requests overlap inference of others; 0 = the machine's cores (at most 8).",
    )
    trt_cache_dir: Path | None = Field(default=None, description="TensorRT engine/timing cache folder.")
    trt_fp16: bool = Field(default=True, description="Build TensorRT engines in fp16.")

    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Default minimum score.")
    max_detections: int = Field(default=100, ge=1, le=1000, description="Most detections a request may get.")
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest request body (bytes)."
    )
    max_pixels: int = Field(default=40_000_000, ge=1, description="Largest image (width × height) decoded.")
    jpeg_draft_factor: float = Field(
        default=4.0,
        ge=0.0,
        description="Decode large JPEGs at a reduced DCT scale (1/2, 1/4, 1/8) that keeps the longest side "
        ">= this × the model input; 0 = always decode at full size.",
    )

    max_batch_size: int = Field(
        default=4, ge=1, le=256, description="Most images run together; 1 = no batching."
    )
    max_queue_delay_ms: float = Field(
        default=2.0,
        ge=0.0,
        description="Longest wait to fill a batch (ms), only while admitted requests are still being "
        "decoded; a lone request runs at once.",
    )
    inference_streams: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Batches run at once (like instances in Triton's instance_group). On a CPU a second "
        "batch fills the cores while the first waits in the model's serial parts (queued batches run on "
        "the session of `stream_intra_op_threads`); a lone request still runs alone. 1 = one batch at "
        "a time.",
    )
    queue_size: int = Field(default=64, ge=1, description="Requests waiting for inference before 503.")
    request_timeout_s: float = Field(default=30.0, gt=0.0, description="Queue + inference time limit (s).")
    retry_after_s: int = Field(default=1, ge=0, description="`Retry-After` seconds sent with 503 answers.")
    drain_seconds: float = Field(
        default=5.0, ge=0.0, description="After SIGTERM, answer /readyz 503 this long before stopping."
    )

    api_key: SecretStr | None = Field(
        default=None, description="When set, /detect and /v1/models need X-API-Key."
    )
    log_json: bool = Field(default=True, description="One JSON object per log line.")
    log_level: str = Field(default="INFO", description="Python logging level name.")

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("providers must name at least one execution provider")
        unknown = [p for p in value if p not in KNOWN_PROVIDERS]
        if unknown:
            raise ValueError(
                f"unknown execution provider(s) {unknown}; expected some of {sorted(KNOWN_PROVIDERS)}"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"log_level {value!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="before")
    @classmethod
    def _pin_is_the_default_model(cls, data: object) -> object:
        pinned_only = isinstance(data, dict) and not data.get("model") and not data.get("model_dir")
        if pinned_only and isinstance(data, dict) and data.get("pin_model"):
            return {**data, "model": data["pin_model"]}
        return data

    @field_validator("pin_model")
    @classmethod
    def _pin_is_a_version(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, sep, version = value.strip().removeprefix("models:/").rpartition("/")
        if not sep or not name or "@" in value or not version.isdigit() or int(version) < 1:
            raise ValueError(f"pin_model {value!r} must be NAME/VERSION (e.g. coco-vitdet/3), not an alias")
        return f"{name}/{int(version)}"

    @field_validator("pin_sha256")
    @classmethod
    def _pin_is_a_digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = value.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"pin_sha256 {value!r} is not a SHA-256 digest (64 hex characters)")
        return digest

    @model_validator(mode="after")
    def _one_model(self) -> ServiceSettings:
        if self.model is not None and self.model_dir is not None:
            raise ValueError("set either model (a registry reference) or model_dir, not both")
        if (self.pin_model is None) != (self.pin_sha256 is None):
            raise ValueError("a pin needs both pin_model (NAME/VERSION) and pin_sha256 (its manifest digest)")
        if self.pin_model is not None:
            if self.model_dir is not None:
                raise ValueError("pin_model pins a registry version; it cannot be combined with model_dir")
            model = (self.model or "").strip().removeprefix("models:/")
            if "@" not in model and model != self.pin_model:
                raise ValueError(
                    f"model {self.model!r} is not the pinned version {self.pin_model!r}; "
                    "serve the pin (leave model unset) or an alias that points at it"
                )
        return self

    @property
    def stage_threads(self) -> int:
        """Threads per CPU-stage pool (``cpu_threads`` or the available cores, capped at 8)."""
        return self.cpu_threads or max(1, min(8, available_cores()))

    @property
    def session_threads(self) -> int:
        """Intra-op threads of the session lone requests run on: ``intra_op_threads``, else the cores a
        CPU quota or affinity mask leaves this process (a container), else 0 (ORT's default)."""
        return self.intra_op_threads or limited_cores() or 0

    def stream_threads(self, providers: list[str]) -> int | None:
        """Intra-op threads of the second session that runs queued batches (see
        ``stream_intra_op_threads``), or None for no second session: only when ``providers`` (the
        active ones, best first) start with the CPU provider, with two or more streams, and when it
        would run on fewer threads than a lone request's session (``intra_op_threads``, else the
        available cores: what :attr:`session_threads` or ORT's default gives)."""
        if self.stream_intra_op_threads == 0 or self.inference_streams < 2:
            return None
        if providers[:1] != ["CPUExecutionProvider"]:
            return None
        cores = available_cores()
        threads = self.stream_intra_op_threads
        if threads < 0:
            threads = max(1, cores // self.inference_streams)
        return threads if threads < (self.intra_op_threads or cores) else None

    @property
    def serving_cache(self) -> Path:
        """Folder for downloaded models."""
        return self.cache_dir if self.cache_dir is not None else self.home / "serving"
