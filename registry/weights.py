"""``--weights`` given as a registry reference: resolve it to a sha256-verified local file, and the
version tags that record the lineage of a model fine-tuned from it.

``NAME@ALIAS`` / ``NAME/VERSION`` / ``models:/...`` is downloaded (into a folder named by its sha256) with
:meth:`~vitbench.registry.client.RegistryClient.download` (which refuses a digest mismatch); an existing
local path or a URI is passed through. A detector trained from a registered version carries
``pretrained_from`` (``name/version``) and ``pretrained_sha256``; ``vitbench registry show`` prints them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vitbench.registry.client import ModelRef, ModelVersionInfo, RegistryClient, RegistryError

LINEAGE_TAG = "pretrained_from"
LINEAGE_SHA_TAG = "pretrained_sha256"


@dataclass(frozen=True)
class ResolvedWeights:
    """``--weights`` after resolution: a local path or URI, its expected sha256, the registry version."""

    location: str
    sha256: str | None
    version: ModelVersionInfo | None = None


def reads_as_ref(weights: str) -> bool:
    """True when ``weights`` is written as a registry reference (``name@alias``, ``name/N``,
    ``models:/...``) and not as a URI; whether a local file of that name exists is not asked."""
    if weights.startswith("models:/"):
        return True
    if "://" in weights:
        return False
    try:
        ModelRef.parse(weights)
    except RegistryError:
        return False
    return True


def looks_like_ref(weights: str) -> bool:
    """True when ``weights`` reads as a registry reference (``name@alias``, ``name/N``, ``models:/...``)
    and is not an existing local path or a URI."""
    return weights.startswith("models:/") or (not os.path.exists(weights) and reads_as_ref(weights))


def resolve_weights(
    weights: str | None,
    sha256: str | None,
    open_client: Callable[[], RegistryClient],
    cache_dir: Path,
) -> ResolvedWeights | None:
    """Resolve ``--weights``: a path or URI is passed through; a registry reference is downloaded into
    ``cache_dir/<sha256>/`` and verified against the version's ``sha256`` tag (the client
    refuses a mismatch). A ``sha256`` given with a reference must equal that tag."""
    if not weights:
        return None
    if not looks_like_ref(weights):
        return ResolvedWeights(weights, sha256)
    client = open_client()
    info = client.resolve(weights)
    tagged = info.tags.get("sha256")
    if sha256 and tagged and sha256.strip().lower() != tagged.lower():
        raise RegistryError(
            f"--weights-sha256 {sha256} does not match {info.ref}'s registered sha256 {tagged}; refusing it"
        )
    # content-addressed: two registries can both hold a different `name/1`
    result = client.download(info.ref, cache_dir / (tagged or f"{info.name}-{info.version}").lower())
    return ResolvedWeights(str(result.path), result.sha256, info)


def lineage_tags(resolved: ResolvedWeights | None) -> dict[str, str]:
    """Version tags that name the pre-training version a detector came from (empty for paths/URIs)."""
    if resolved is None or resolved.version is None:
        return {}
    return {LINEAGE_TAG: resolved.version.ref, LINEAGE_SHA_TAG: resolved.sha256 or ""}
