"""Registry side of pre-training: log a pre-training run and register its release file, and resolve a
registry reference given to ``--weights`` into a verified local file.

A pre-training version is tagged ``method``, ``init`` (the catalog init that loads it), ``recipe``,
``dataset``, ``sha256`` (added by the client), ``iteration``, ``loss`` and ``code_version``. A detector
fine-tuned from it carries ``pretrained_from`` (``name/version``) and ``pretrained_sha256``, which
``vitbench registry show`` prints as its lineage.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitbench.registry.client import ModelRef, ModelVersionInfo, RegistryClient, RegistryError
from vitbench.trainer.engine.hooks import LoopState
from vitbench.trainer.engine.registry_hook import RegistryHook, code_version

LINEAGE_TAG = "pretrained_from"
LINEAGE_SHA_TAG = "pretrained_sha256"


class PretrainRegistryHook(RegistryHook):
    """Record a pre-training run (params = the pre-training recipe) and register its release file.

    ``releases`` is called after the final save and returns ``[(init, path), ...]``: the first file
    becomes the model version, the others are logged as run artifacts (e.g. MAE's ``_full`` file).
    """

    def __init__(
        self,
        client: RegistryClient,
        model_name: str,
        experiment: str,
        pretrain_recipe: Mapping[str, Any],
        releases: Callable[[], list[tuple[str, Path]]],
        tags: Mapping[str, str] | None = None,
        *,
        run_name: str | None = None,
    ) -> None:
        super().__init__(client, model_name, experiment, tags, run_name=run_name)
        self.pretrain_recipe = dict(pretrain_recipe)
        self.releases = releases
        self.last_loss: float | None = None

    def before_train(self, loop: LoopState) -> None:
        if not loop.is_main:
            return
        meta = loop.meta
        run_tags = {
            "method": str(meta.get("method", "")),
            "recipe": str(self.pretrain_recipe.get("name", "")),
            "dataset": str(meta.get("dataset", "")),
            "out_dir": str(loop.out_dir),
            "kind": "pretrain",
        }
        self.run_id = self.client.start_run(
            self.experiment, self.run_name or Path(loop.out_dir).name, run_tags
        )
        self.client.log_params(
            self.run_id,
            {
                **self.pretrain_recipe,
                "dataset": meta.get("dataset", ""),
                "num_samples": meta.get("num_samples", ""),
                "max_iters": loop.max_iters,
                "start_iteration": loop.iteration,
            },
        )

    def after_step(self, loop: LoopState, metrics: Mapping[str, float]) -> None:
        super().after_step(loop, metrics)
        if "total_loss" in metrics:
            self.last_loss = float(metrics["total_loss"])

    def after_train(self, loop: LoopState) -> None:
        if not loop.is_main or self.run_id is None:
            return
        out_dir = Path(loop.out_dir)
        files = self.releases()
        if not files or not all(p.is_file() for _, p in files):
            self.client.end_run(self.run_id, "FAILED")
            raise RegistryError(f"cannot register: the pre-training run in {out_dir} wrote no release file")
        for name in ("metrics.jsonl", "recipe.json", "pretrain_recipe.json"):
            if (out_dir / name).is_file():
                self.client.log_artifact(
                    self.run_id, out_dir / name, "metrics" if name.endswith("jsonl") else None
                )
        plot = self._plot(out_dir)
        if plot is not None:
            self.client.log_artifact(self.run_id, plot, "plots")
        (init, primary), *others = files
        for _, path in others:
            self.client.log_artifact(self.run_id, path, "releases")
        meta = loop.meta
        tags: dict[str, Any] = {
            "kind": "pretrain",
            "method": meta.get("method", ""),
            "init": init,
            "recipe": self.pretrain_recipe.get("name", ""),
            "detector_recipe": meta.get("detector_recipe", ""),
            "dataset": meta.get("dataset", ""),
            "iteration": loop.iteration,
            "loss": "n/a" if self.last_loss is None else f"{self.last_loss:.4f}",
            "code_version": self.version_of_code or code_version(),
            **self.tags,
        }
        self.version = self.client.register_version(
            self.model_name,
            self.run_id,
            primary,
            tags,
            description=f"{tags['method']} pre-training ({tags['recipe']}) on {tags['dataset']}",
        )
        self.client.end_run(self.run_id, "FINISHED")


@dataclass(frozen=True)
class ResolvedWeights:
    """``--weights`` after resolution: a local path or URI, its expected sha256, the registry version."""

    location: str
    sha256: str | None
    version: ModelVersionInfo | None = None


def looks_like_ref(weights: str) -> bool:
    """True when ``weights`` reads as a registry reference (``name@alias``, ``name/N``, ``models:/...``)
    and is not an existing local path or a URI."""
    if weights.startswith("models:/"):
        return True
    if "://" in weights or os.path.exists(weights):
        return False
    try:
        ModelRef.parse(weights)
    except RegistryError:
        return False
    return True


def resolve_weights(
    weights: str | None,
    sha256: str | None,
    open_client: Callable[[], RegistryClient],
    cache_dir: Path,
) -> ResolvedWeights | None:
    """Resolve ``--weights``: a path or URI is passed through; a registry reference is downloaded into
    ``cache_dir/<name>/<version>/`` and verified against the version's ``sha256`` tag (the client
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
    result = client.download(info.ref, cache_dir / info.name / info.version)
    return ResolvedWeights(str(result.path), result.sha256, info)


def lineage_tags(resolved: ResolvedWeights | None) -> dict[str, str]:
    """Version tags that name the pre-training version a detector came from (empty for paths/URIs)."""
    if resolved is None or resolved.version is None:
        return {}
    return {LINEAGE_TAG: resolved.version.ref, LINEAGE_SHA_TAG: resolved.sha256 or ""}
