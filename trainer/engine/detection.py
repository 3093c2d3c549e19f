"""The detection task: Mask R-CNN with a ViT backbone on a COCO-format dataset, evaluated with COCO AP.

:class:`TrainConfig` adds the detection inputs to :class:`EngineConfig`; :class:`DetectionTask` plugs
them into the engine (see :mod:`vitbench.trainer.engine.task` for the contract).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vitbench.fileio import atomic_write_json
from vitbench.trainer import distributed as du
from vitbench.trainer.data import split_paths
from vitbench.trainer.data.check import DatasetError, check_dataset
from vitbench.trainer.data.coco import CocoDetection, TrainingSampler, collate, to_model_inputs
from vitbench.trainer.data.transforms import build_eval_transform, build_train_transform
from vitbench.trainer.engine.task import EngineConfig, TaskContext, TrainingSetupError, TrainTask
from vitbench.trainer.evaluation.coco_eval import evaluate
from vitbench.trainer.identity import RunIdentity, dataset_digest
from vitbench.trainer.recipes import Recipe


def training_set(data_root: Path, recipe: Recipe) -> CocoDetection:
    """The ``train`` split of ``data_root`` with ``recipe``'s training augmentation (large-scale jitter
    to ``input.image_size``, horizontal flips), as the detection task trains on it."""
    img_dir, ann = split_paths(data_root, "train")
    r = recipe
    augment = build_train_transform(
        r.input.image_size, r.data.train_scale_range, r.input.pixel_mean, r.data.hflip_prob
    )
    return CocoDetection(img_dir, ann, augment, train=True)


@dataclass(kw_only=True)
class TrainConfig(EngineConfig):
    """A detection run: the engine's settings plus init, weights and dataset.

    ``check_data`` validates the whole dataset before training; ``eval_batch_size`` images per eval batch.
    """

    init: str
    data_root: Path
    weights: str | None = None
    weights_sha256: str | None = None
    check_data: bool = True
    eval_batch_size: int = 2


class DetectionTask(TrainTask):
    """Mask R-CNN losses from torchvision's detector; COCO box/mask AP on the ``val`` split."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self._train_ds: CocoDetection | None = None
        self._val_ds: CocoDetection | None = None
        self._report: Any = None
        self._meta: dict[str, Any] = {}

    # --- setup -----------------------------------------------------------------------------
    def prepare(self, ctx: TaskContext) -> None:
        if self.cfg.check_data:
            problems = check_dataset(self.cfg.data_root) if ctx.is_main else []
            problems = du.broadcast_object(problems)
            if problems:
                raise DatasetError(problems)
        train_ds = training_set(self.cfg.data_root, ctx.recipe)
        v_dir, v_ann = split_paths(self.cfg.data_root, "val")
        val_ds = CocoDetection(v_dir, v_ann, build_eval_transform(), train=False)
        if train_ds.class_names != val_ds.class_names:
            raise TrainingSetupError(
                f"train and val categories differ: {train_ds.class_names} vs {val_ds.class_names}"
            )
        self._train_ds, self._val_ds = train_ds, val_ds

    @property
    def train_ds(self) -> CocoDetection:
        if self._train_ds is None:
            raise RuntimeError("DetectionTask.prepare() has not run")
        return self._train_ds

    @property
    def dataset_size(self) -> int:
        return len(self.train_ds) if self._train_ds is not None else 1

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    def sync_batchnorm(self) -> bool:
        r = self.cfg.recipe
        return "syncbn" in (r.neck.norm, r.heads.norm)

    def build_model(self, ctx: TaskContext) -> nn.Module:
        from vitbench.trainer.inits import load_initialization
        from vitbench.trainer.models.detector import build_detector

        num_classes = len(self.train_ds.class_names)
        torch.manual_seed(ctx.recipe.seed)  # same initial weights on every rank
        model = build_detector(ctx.recipe, num_classes)
        self._report = load_initialization(
            model, ctx.recipe, self.cfg.init, self.cfg.weights, self.cfg.weights_sha256
        )
        self._meta = {
            "init": self.cfg.init,
            "num_classes": num_classes,
            "class_names": list(self.train_ds.class_names),
            "dataset": str(self.cfg.data_root),
            "iteration": 0,
            "weights": self.cfg.weights,
        }
        return model

    def build_loader(self, ctx: TaskContext, per_rank_batch: int, start: int) -> Iterator[Any]:
        r = ctx.recipe
        sampler = TrainingSampler(len(self.train_ds), r.seed, ctx.dist.rank, ctx.dist.world_size, start=start)
        loader: DataLoader[Any] = DataLoader(
            self.train_ds,
            batch_size=per_rank_batch,
            sampler=sampler,
            num_workers=r.data.num_workers,
            collate_fn=collate,
            persistent_workers=r.data.num_workers > 0,
            # a private generator: creating the iterator must not draw from the (restored) global RNG
            generator=torch.Generator().manual_seed(r.seed),
        )
        return iter(loader)

    def write_setup_files(self, ctx: TaskContext) -> None:
        with contextlib.suppress(AttributeError):  # a report without to_dict (custom loaders)
            atomic_write_json(ctx.run_dir.load_report, self._report.to_dict())

    # --- step and evaluation ---------------------------------------------------------------
    def losses(self, model: nn.Module, batch: Any, ctx: TaskContext) -> Mapping[str, torch.Tensor]:
        images, targets = batch
        inputs, tgts = to_model_inputs(images, targets, ctx.device)
        loss_dict: Mapping[str, torch.Tensor] = model(inputs, tgts)
        return loss_dict

    def evaluate(self, model: nn.Module, ctx: TaskContext) -> dict[str, float] | None:
        if self._val_ds is None:
            raise RuntimeError("DetectionTask.prepare() has not run")
        return evaluate(
            model, self._val_ds, ctx.device, batch_size=self.cfg.eval_batch_size, amp_dtype=ctx.amp_dtype
        )

    def summary(self) -> dict[str, Any]:
        return {"init": self.cfg.init}

    def identity(self, ctx: TaskContext) -> RunIdentity:
        from vitbench.trainer.engine.registry_hook import code_version

        return RunIdentity(
            recipe=ctx.recipe.model_dump(mode="json"),
            init=self.cfg.init,
            weights=self.cfg.weights,
            weights_sha256=getattr(self._report, "sha256", None),
            dataset=str(Path(self.cfg.data_root).resolve()),
            dataset_sha256=dataset_digest(self.cfg.data_root),
            code=code_version(),
        )
