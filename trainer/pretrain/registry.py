"""Registry side of pre-training: log a pre-training run and register its release file.

A pre-training version is tagged ``method``, ``init`` (the catalog init that loads it), ``recipe``,
``dataset``, ``sha256`` (added by the client), ``iteration``, ``loss`` and ``code_version``. Fine-tuning
takes it with ``--weights NAME/VERSION`` (:mod:`vitbench.registry.weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vitbench.registry.client import RegistryClient, RegistryError
from vitbench.trainer.engine.hooks import LoopState
from vitbench.trainer.engine.registry_hook import RegistryHook
from vitbench.trainer.pretrain.task import PRETRAIN_RECIPE


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

    def run_tags(self, loop: LoopState) -> dict[str, str]:
        meta = loop.meta
        return {
            "method": str(meta.get("method", "")),
            "recipe": str(self.pretrain_recipe.get("name", "")),
            "dataset": str(meta.get("dataset", "")),
            "out_dir": str(loop.out_dir),
            "kind": "pretrain",
        }

    def run_params(self, loop: LoopState) -> dict[str, Any]:
        meta = loop.meta
        return {
            **self.pretrain_recipe,
            "dataset": meta.get("dataset", ""),
            "num_samples": meta.get("num_samples", ""),
        }

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
        self._log_run_files(out_dir, out_dir / PRETRAIN_RECIPE)
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
        }
        self._register(primary, tags, "{method} pre-training ({recipe}) on {dataset}")
