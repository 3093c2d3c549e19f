"""Torch-free model registry client on MLflow: manifests, register, resolve, download, verify."""

from vitbench.registry.client import (
    DownloadResult,
    IntegrityError,
    Lineage,
    ModelNotFoundError,
    ModelRef,
    ModelVersionInfo,
    RegisteredModelInfo,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
)
from vitbench.registry.hashing import HashMismatchError, sha256_bytes, sha256_file, verify_file
from vitbench.registry.manifest import ManifestError, ModelManifest, ParityReport

__all__ = [
    "DownloadResult",
    "HashMismatchError",
    "IntegrityError",
    "Lineage",
    "ManifestError",
    "ModelManifest",
    "ModelNotFoundError",
    "ModelRef",
    "ModelVersionInfo",
    "ParityReport",
    "RegisteredModelInfo",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailableError",
    "sha256_bytes",
    "sha256_file",
    "verify_file",
]
