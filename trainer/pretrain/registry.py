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
from vitbench.trainer.engine.registry_hook import RegistryHook, code_version


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
