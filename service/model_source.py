"""Where the served model comes from: the registry (``name@alias``) or a local exported folder.

A :class:`ModelSource` is the seam between the app and the registry: the app calls ``fetch()`` once
at start-up (in a worker thread) and gets a verified ONNX file with its manifest.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vitbench.registry.hashing import HashMismatchError, sha256_file, verify_file
from vitbench.registry.manifest import MANIFEST_FILE, ONNX_FILE, ManifestError, ModelManifest

if TYPE_CHECKING:
    from vitbench.registry.client import ModelVersionInfo, RegistryClient


class ModelSourceError(RuntimeError):
    """The model could not be found, downloaded or verified; the message says which and why."""


@dataclass(frozen=True)
class ModelArtifact:
    """A verified exported model on local disk: ``onnx_path`` plus its manifest and identity."""

    onnx_path: Path
    manifest: ModelManifest
    name: str
    version: str
    reference: str


@dataclass(frozen=True)
class Pin:
    """The only version a pinned service loads: ``name/version`` and the SHA-256 of its export's manifest.

    The manifest lists the SHA-256 of ``model.onnx`` (checked on download), so one digest fixes every
    byte the service loads. The digest comes from the service's own configuration, not from the
    registry, so a writer who replaces the artifacts and rewrites the version's tags is still refused.
    """

    model: str
    manifest_sha256: str

    def __str__(self) -> str:
        return f"{self.model} (manifest sha256 {self.manifest_sha256})"


class ModelSource(Protocol):
    """Anything that can produce the model to serve (blocking; called once, off the event loop)."""

    def describe(self) -> str:
        """Human-readable origin, e.g. ``registry coco-vitdet@champion``."""
        ...

    def fetch(self) -> ModelArtifact:
        """Resolve, download and verify; raise :class:`ModelSourceError` on any failure."""
        ...


class LocalModelSource:
    """An exported folder holding ``model.onnx`` and ``manifest.json`` (checked against its sha256)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def describe(self) -> str:
        return f"folder {self.directory}"

    def fetch(self) -> ModelArtifact:
        onnx_path = self.directory / ONNX_FILE
        if not onnx_path.is_file():
            raise ModelSourceError(f"no {ONNX_FILE} in {self.directory}; expected an exported model folder")
        try:
            manifest = ModelManifest.load(self.directory / MANIFEST_FILE)
            if ONNX_FILE in manifest.files:
                verify_file(onnx_path, manifest.files[ONNX_FILE])
        except (ManifestError, HashMismatchError) as exc:
            raise ModelSourceError(str(exc)) from exc
        name = manifest.model_name or self.directory.name
        version = manifest.model_version or "local"
        return ModelArtifact(onnx_path, manifest, name, version, reference=str(self.directory))


class RegistryModelSource:
    """A registered version's ONNX export, downloaded into ``cache_dir`` and verified by the registry.

    With a :class:`Pin`, ``reference`` must resolve to the pinned version and the downloaded
    ``manifest.json`` must have the pinned digest; otherwise :class:`ModelSourceError` and nothing
    is left in the cache.
    """

    def __init__(
        self,
        reference: str,
        client_factory: Callable[[], RegistryClient],
        cache_dir: Path,
        pin: Pin | None = None,
    ) -> None:
        self.reference = reference
        self._client_factory = client_factory
        self.cache_dir = Path(cache_dir)
        self.pin = pin

    def describe(self) -> str:
        pinned = f", pinned to {self.pin.model}" if self.pin is not None else ""
        return f"registry {self.reference}{pinned}"

    def fetch(self) -> ModelArtifact:
        from vitbench.registry.client import RegistryError

        dst = self.cache_dir / re.sub(r"[^A-Za-z0-9_.\-]", "_", self.reference)
        try:
            client = self._client_factory()
            if self.pin is None:
                onnx_path, manifest, info = client.fetch_exported(self.reference, dst)
            else:
                onnx_path, manifest, info = self._fetch_pinned(client, self.pin, dst)
        except RegistryError as exc:
            raise ModelSourceError(f"cannot load {self.reference} from the registry: {exc}") from exc
        return ModelArtifact(
            onnx_path=Path(onnx_path),
            manifest=manifest,
            name=str(info.name),
            version=str(info.version),
            reference=self.reference,
        )

    def _fetch_pinned(
        self, client: RegistryClient, pin: Pin, dst: Path
    ) -> tuple[Path, ModelManifest, ModelVersionInfo]:
        """Resolve once, check the version, download into a staging folder, check the digest, move."""
        info = client.resolve(self.reference)
        if info.ref != pin.model:
            raise ModelSourceError(
                f"refusing {self.reference}: it resolves to {info.ref}, but this service is pinned to "
                f"{pin.model} (VITBENCH_PIN_MODEL); change the pin to serve another version"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pinned-", dir=self.cache_dir) as tmp:
            staged = Path(tmp)
            _, manifest, info = client.fetch_exported(info.ref, staged)
            actual = sha256_file(staged / MANIFEST_FILE)
            if actual != pin.manifest_sha256:
                raise ModelSourceError(
                    f"refusing {info.ref}: its export manifest has sha256 {actual}, but this service is "
                    f"pinned to {pin.manifest_sha256} (VITBENCH_PIN_SHA256); the registered artifacts "
                    "changed since the pin was taken"
                )
            dst.mkdir(parents=True, exist_ok=True)
            for item in staged.iterdir():
                os.replace(item, dst / item.name)
        return dst / ONNX_FILE, manifest, info
