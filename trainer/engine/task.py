"""The seam between the training engine and what is being trained: :class:`TrainTask`.

The engine (:class:`vitbench.trainer.engine.loop.Trainer`) owns everything that is the same for every
kind of training run: the run folder guard, ``--resume`` from the newest complete checkpoint, the
optimizer with its parameter groups (weight decay, layer-wise lr decay), the lr schedule, AMP
(bf16/fp16 autocast + grad scaler), gradient accumulation, DDP, atomic periodic checkpoints with
pruning, SIGTERM → save → :class:`TrainingInterruptedError`, metrics averaging across ranks and the
hooks (``metrics.jsonl``, progress bar, registry). A task owns what differs:

=====================  =====================================================================
``prepare``            validate the inputs and build the datasets (every rank; before the model)
``build_model``        the module to train, seeded and initialized, on the CPU
``build_loader``       an endless iterator of batches for this rank, starting ``start`` samples in
``losses``             one micro-batch → ``{name: scalar tensor}`` (the engine sums them)
``after_step``         optional: runs after every optimizer step (e.g. a momentum encoder's EMA)
``evaluate``           optional: metrics of the current model (``None``: the task does not evaluate)
``final_state``        what ``model_final.pth`` holds (default: ``model``, ``recipe``, ``meta``)
``meta``               the checkpoint's ``meta`` dict (the engine adds ``iteration``, ``resumed_from``)
``identity``           optional: what the run is (:mod:`vitbench.trainer.identity`); ``--resume`` checks it
=====================  =====================================================================

Detection (Mask R-CNN on COCO-format data, :mod:`vitbench.trainer.engine.detection`) is the first
task. Pre-training fits the same seam: MAE returns its reconstruction loss from ``losses`` and has no
``evaluate``; MoCo v3 updates its momentum encoder in ``after_step`` (keep the momentum encoder a
submodule with ``requires_grad=False`` so it is checkpointed with the model but gets no optimizer
group); each writes its release format from ``final_state``.

Methods get a :class:`TaskContext` (the running trainer): recipe, device, distributed info, run folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from vitbench.trainer import distributed as du
from vitbench.trainer.engine.hooks import LoopState
from vitbench.trainer.identity import RunIdentity
from vitbench.trainer.recipes import Recipe
from vitbench.trainer.rundir import RunDir


class TrainingSetupError(ValueError):
    """A user-facing problem found before training starts (bad data, existing run, bad batch split)."""


class RunIdentityError(TrainingSetupError):
    """``--resume`` asked to continue a run as something else; the message names each difference."""


@dataclass(kw_only=True)
class EngineConfig:
    """What the engine needs for any task. ``recipe`` is final (all overrides applied).

    ``log_period``: average and publish losses every N steps; ``keep_checkpoints``: periodic
    checkpoints kept (``<= 0`` keeps all); ``stop_grace_s``: seconds to save after a stop request
    before the process exits with 143.
    """

    recipe: Recipe
    out_dir: Path
    resume: bool = False
    device: str = "auto"
    dist: du.DistInfo = field(default_factory=du.DistInfo)
    log_period: int = 10
    keep_checkpoints: int = 3
    stop_grace_s: float = 60.0


class TaskContext(LoopState, Protocol):
    """What a task may read from the running engine: what hooks see (iteration, recipe, is_main, ...)
    plus the device, the distributed setup, the run folder and the autocast dtype."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dist(self) -> du.DistInfo: ...

    @property
    def run_dir(self) -> RunDir: ...

    @property
    def amp_dtype(self) -> torch.dtype | None: ...


class TrainTask(ABC):
    """One kind of training run plugged into the engine (see the module docstring for the contract)."""

    def prepare(self, ctx: TaskContext) -> None:
        """Check inputs and build datasets; raise :class:`TrainingSetupError` for user mistakes."""
        return None

    @property
    def dataset_size(self) -> int:
        """Training samples per epoch (the ``epoch`` of metrics lines is iterations × batch / this)."""
        return 1

    @property
    def meta(self) -> dict[str, Any]:
        """The ``meta`` dict stored in every checkpoint (known after :meth:`build_model`)."""
        return {}

    def sync_batchnorm(self) -> bool:
        """Convert BatchNorm layers to SyncBatchNorm under DDP on CUDA."""
        return False

    @abstractmethod
    def build_model(self, ctx: TaskContext) -> nn.Module:
        """The model to train, initialized (same weights on every rank), still on the CPU."""

    @abstractmethod
    def build_loader(self, ctx: TaskContext, per_rank_batch: int, start: int) -> Iterator[Any]:
        """Endless batches of ``per_rank_batch`` for this rank; ``start`` global samples were consumed.

        The loader must not draw from the global RNG when created (resume restores it just before).
        """

    @abstractmethod
    def losses(self, model: nn.Module, batch: Any, ctx: TaskContext) -> Mapping[str, torch.Tensor]:
        """Scalar losses of one micro-batch (called under autocast; ``model`` may be DDP-wrapped)."""

    def after_step(self, model: nn.Module, ctx: TaskContext) -> None:
        """Called after every optimizer step, before the iteration counter advances."""
        return None

    def evaluate(self, model: nn.Module, ctx: TaskContext) -> dict[str, float] | None:
        """Metrics of ``model`` (unwrapped, eval mode) on every rank, or ``None`` if the task has none."""
        return None

    def write_setup_files(self, ctx: TaskContext) -> None:
        """Main process, once the run starts: extra files for the run folder (e.g. a load report)."""
        return None

    def final_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """What the final model file holds, given the engine's ``{"model", "recipe", "meta"}``."""
        return state

    def summary(self) -> dict[str, Any]:
        """Fields this task adds to the run summary (``eval.json``) between ``epoch`` and ``recipe``."""
        return {}

    def identity(self, ctx: TaskContext) -> RunIdentity | None:
        """What the run is (after :meth:`build_model`); None: the engine records and checks nothing."""
        return None
