"""Where the served model comes from: the registry (``name@alias``) or a local exported folder.

A :class:`ModelSource` is the seam between the app and the registry: the app calls ``fetch()`` once
at start-up (in a worker thread) and gets a verified ONNX file with its manifest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vitbench.registry.hashing import HashMismatchError, verify_file
from vitbench.registry.manifest import MANIFEST_FILE, ONNX_FILE, ManifestError, ModelManifest

if TYPE_CHECKING:
    from vitbench.registry.client import RegistryClient


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
    """A registered version's ONNX export, downloaded into ``cache_dir`` and verified by the registry."""

    def __init__(self, reference: str, client_factory: Callable[[], RegistryClient], cache_dir: Path) -> None:
        self.reference = reference
        self._client_factory = client_factory
        self.cache_dir = Path(cache_dir)

    def describe(self) -> str:
        return f"registry {self.reference}"

    def fetch(self) -> ModelArtifact:
        from vitbench.registry.client import RegistryError

        dst = self.cache_dir / re.sub(r"[^A-Za-z0-9_.\-]", "_", self.reference)
        try:
            client = self._client_factory()
            onnx_path, manifest, info = client.fetch_exported(self.reference, dst)
        except RegistryError as exc:
            raise ModelSourceError(f"cannot load {self.reference} from the registry: {exc}") from exc
        return ModelArtifact(
            onnx_path=Path(onnx_path),
            manifest=manifest,
            name=str(info.name),
            version=str(info.version),
            reference=self.reference,
        )
