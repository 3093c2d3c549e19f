"""The pre-training flow behind ``vitbench pretrain``: resolve the recipe and data, run the engine
with :class:`~vitbench.trainer.pretrain.task.PretrainTask` (metrics file, optional progress bar), and
register the release file when a :class:`~vitbench.trainer.runs.Registration` is given.

CLI-agnostic: errors are :class:`PretrainError` (user mistakes) or
:class:`~vitbench.trainer.engine.loop.TrainingInterruptedError` (SIGTERM after saving).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitbench.registry.env import registry_location
from vitbench.trainer import distributed as du
from vitbench.trainer.engine.hooks import Hook, JsonlMetricsHook, RichProgressHook
from vitbench.trainer.pretrain.recipes import PretrainRecipe, get_pretrain_recipe
from vitbench.trainer.pretrain.registry import PretrainRegistryHook
from vitbench.trainer.pretrain.task import (
    PRETRAIN_RECIPE,
    PretrainSpec,
    PretrainTask,
    dataset_for,
    engine_recipe,
)
from vitbench.trainer.recipes import RecipeError, apply_overrides
from vitbench.trainer.runs import Registration


class PretrainError(ValueError):
    """A user mistake found before pre-training starts (recipe, data, run folder)."""


@dataclass(frozen=True)
class PretrainOutcome:
    """A finished pre-training run: steps, wall time (s), images/s of the last logged window, files."""

    iteration: int
    wall_time_s: float
    images_per_s: float | None
    files: list[tuple[str, Path]]
    detector_recipe: str
    registered: str | None = None


def resolve_recipe(
    method: str, recipe: str, overrides: Sequence[str], out: Path, resume: bool
) -> PretrainRecipe:
    """The run's recipe; on ``--resume`` the saved ``pretrain_recipe.json`` wins (and must exist if a
    checkpoint does), so a resumed run keeps its schedule."""
    saved = out / PRETRAIN_RECIPE
    try:
        if resume and saved.is_file():
            stored = PretrainRecipe.model_validate(json.loads(saved.read_text(encoding="utf-8")))
            if stored.method != method:
                raise PretrainError(f"{out} holds a {stored.method} run, not {method}")
            return stored
        return apply_overrides(get_pretrain_recipe(method, recipe), list(overrides))
    except RecipeError as exc:
        raise PretrainError(str(exc)) from None


@dataclass(kw_only=True)
class PretrainRun:
    """Everything one pre-training run needs (the CLI fills it)."""

    method: str
    recipe: str
    data: Path
    out: Path
    overrides: Sequence[str] = ()
    resume: bool = False
    device: str = "auto"
    log_period: int = 10
    grace_period: float = 60.0
    hooks: Sequence[Hook] = ()
    progress: bool = False
    registration: Registration | None = None
    echo_records: bool = False  # also write every metrics line to stderr (the pod log `bench status` reads)


def run_pretraining(run: PretrainRun) -> PretrainOutcome:
    """Run one pre-training (torchrun-aware); SIGTERM saves a checkpoint and raises
    :class:`TrainingInterruptedError` (rerun with ``resume``)."""
    import os

    from vitbench.trainer.engine.loop import EngineConfig, Trainer, TrainingSetupError
    from vitbench.trainer.pretrain.data import PretrainDataError

    pre = resolve_recipe(run.method, run.recipe, run.overrides, run.out, run.resume)
    try:
        size = len(dataset_for(pre, run.data))  # type: ignore[arg-type]
        recipe = engine_recipe(pre, size)
    except (PretrainDataError, RecipeError) as exc:
        raise PretrainError(str(exc)) from None
    info = du.DistInfo.from_env(os.environ)
    task = PretrainTask(PretrainSpec(recipe=pre, data_root=run.data, out_dir=run.out))
    hooks: list[Hook] = [JsonlMetricsHook(echo=sys.stderr if run.echo_records else None), *run.hooks]
    bar = RichProgressHook(f"pretrain {pre.name}") if run.progress and info.is_main else None
    if bar is not None:
        hooks.append(bar)
    reg: PretrainRegistryHook | None = None
    if run.registration is not None and info.is_main:
        r = run.registration
        reg = PretrainRegistryHook(
            client=r.client or registry_location(r.home).open(),
            model_name=r.model_name or pre.name,
            experiment=r.experiment,
            pretrain_recipe=pre.model_dump(mode="json"),
            releases=lambda: [(f.init, f.path) for f in task.files],
            tags={"dataset": str(run.data)},
        )
        hooks.append(reg)
    cfg = EngineConfig(
        recipe=recipe,
        out_dir=run.out,
        resume=run.resume,
        device=run.device,
        dist=info,
        log_period=run.log_period,
        stop_grace_s=run.grace_period,
    )
    speed: list[float] = []

    class _Speed(Hook):
        def after_step(self, loop: Any, metrics: Any) -> None:
            if "images_per_s" in metrics:
                speed.append(float(metrics["images_per_s"]))

    hooks.append(_Speed())
    try:
        du.init_process_group(info, du.select_device(info, run.device))
        trainer = Trainer(cfg, hooks, task=task)
        previous = signal.signal(signal.SIGTERM, lambda *_: trainer.request_stop())
        try:
            result = trainer.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
    except TrainingSetupError as exc:
        raise PretrainError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
        du.destroy_process_group()
    version = getattr(reg, "version", None)
    return PretrainOutcome(
        iteration=result.iteration,
        wall_time_s=result.wall_time_s,
        images_per_s=speed[-1] if speed else None,
        files=[(f.init, f.path) for f in task.files],
        detector_recipe=pre.detector_recipe,
        registered=version.ref if version is not None else None,
    )
