"""Pre-training as a task of the one training engine (:class:`~vitbench.trainer.engine.task.TrainTask`).

The engine brings the run folder guard, ``--resume``, AdamW with its weight-decay groups, the
warmup + cosine schedule, AMP, gradient accumulation, DDP, atomic periodic checkpoints, SIGTERM and
the metrics hooks; this task brings the method's model, data, loss and — for MoCo v3 — the momentum
encoder's EMA after every optimizer step. At the end it writes the method's release-format file(s)
next to ``model_final.pth`` (which keeps the whole module, decoder / momentum encoder included).

The engine is driven by a fine-tuning-shaped :class:`~vitbench.trainer.recipes.Recipe` built from the
pre-training recipe by :func:`engine_recipe` (schedule in optimizer steps, ``eval_period`` 0); the
pre-training recipe itself is written to ``pretrain_recipe.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitbench.fileio import atomic_write_json
from vitbench.trainer.data.coco import TrainingSampler
from vitbench.trainer.engine.checkpoint import unwrap
from vitbench.trainer.engine.task import TaskContext, TrainingSetupError, TrainTask
from vitbench.trainer.pretrain import formats
from vitbench.trainer.pretrain.data import (
    SeededSamples,
    UnlabeledImages,
    find_images,
    image_folder,
    mae_transform,
    mocov3_transform,
    supervised_transform,
)
from vitbench.trainer.pretrain.mae import MaskedAutoencoder
from vitbench.trainer.pretrain.mocov3 import MoCoV3, momentum_at
from vitbench.trainer.pretrain.recipes import PretrainRecipe, check_matches_detector
from vitbench.trainer.pretrain.supervised import ViTClassifier
from vitbench.trainer.recipes import Recipe

PRETRAIN_RECIPE = "pretrain_recipe.json"
RELEASES = "releases.json"


def engine_recipe(pre: PretrainRecipe, dataset_size: int) -> Recipe:
    """The engine's view of a pre-training run: the detector recipe's ViT (for names and depth) with
    the pre-training schedule in steps — linear warmup from 0, cosine to 0, no eval, no layer decay."""
    det = check_matches_detector(pre)
    _, total, warmup = pre.iterations(dataset_size)
    s = pre.solver
    data = det.model_dump()
    data["name"] = pre.name
    data["seed"] = pre.seed
    data["solver"].update(
        lr=s.lr,
        weight_decay=s.weight_decay,
        betas=s.betas,
        schedule="cosine",
        warmup_iters=warmup,
        warmup_factor=0.0,
        max_iters=total,
        steps=(),
        layer_decay=None,
        batch_size=s.batch_size,
        amp=s.amp,
        grad_accum=s.grad_accum,
        checkpoint_period=s.checkpoint_period,
        eval_period=0,
        clip_grad=s.clip_grad,
    )
    data["data"]["num_workers"] = pre.data.num_workers
    return Recipe.model_validate(data)


def dataset_for(pre: PretrainRecipe, data_root: Path) -> Dataset[Any]:
    """The method's training set: images (mae, mocov3) or an ImageFolder tree (supervised)."""
    size, mean, std = pre.encoder.img_size, pre.data.pixel_mean, pre.data.pixel_std
    if pre.method == "supervised":
        return image_folder(data_root, supervised_transform(size, mean, std, pre.supervised.crop_min))  # type: ignore[no-any-return]
    paths = find_images(data_root)
    if pre.method == "mae":
        return UnlabeledImages(paths, mae_transform(size, mean, std, pre.mae.crop_min))
    return UnlabeledImages(paths, mocov3_transform(size, mean, std, pre.mocov3.crop_min))


def build_pretrain_model(pre: PretrainRecipe, num_classes: int = 0) -> nn.Module:
    """The method's module for ``pre``: its ``encoder`` section and the method's own (``num_classes``
    only for supervised)."""
    if pre.method == "mae":
        return MaskedAutoencoder(pre.encoder, pre.mae)
    if pre.method == "mocov3":
        return MoCoV3(pre.encoder, pre.mocov3)
    return ViTClassifier(pre.encoder, num_classes, pre.supervised)


@dataclass(kw_only=True)
class PretrainSpec:
    """What a pre-training task needs besides the engine's config."""

    recipe: PretrainRecipe
    data_root: Path
    out_dir: Path
    tag: str = ""  # file-name tag of the release files (default: the recipe's size, e.g. "tiny")


class PretrainTask(TrainTask):
    """One pre-training method (``spec.recipe.method``) as an engine task."""

    def __init__(self, spec: PretrainSpec) -> None:
        self.spec = spec
        self.pre = spec.recipe
        self._ds: Dataset[Any] | None = None
        self._meta: dict[str, Any] = {}
        self._ctx: TaskContext | None = None
        self.files: list[formats.PretrainedFile] = []

    # --- setup -----------------------------------------------------------------------------
    def prepare(self, ctx: TaskContext) -> None:
        self._ctx = ctx
        from vitbench.trainer.pretrain.data import PretrainDataError

        try:
            self._ds = dataset_for(self.pre, self.spec.data_root)
        except PretrainDataError as exc:
            raise TrainingSetupError(str(exc)) from None
        n = len(self._ds)  # type: ignore[arg-type]
        if n < ctx.recipe.solver.batch_size:
            raise TrainingSetupError(
                f"{self.spec.data_root} has {n} training samples, fewer than one batch "
                f"(solver.batch_size={ctx.recipe.solver.batch_size}); lower it with --set solver.batch_size=N"
            )

    @property
    def dataset(self) -> Dataset[Any]:
        if self._ds is None:
            raise RuntimeError("PretrainTask.prepare() has not run")
        return self._ds

    @property
    def dataset_size(self) -> int:
        return len(self._ds) if self._ds is not None else 1  # type: ignore[arg-type]

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    def sync_batchnorm(self) -> bool:
        return self.pre.method == "mocov3"  # the release converts its MLPs' BN to SyncBN

    def build_model(self, ctx: TaskContext) -> nn.Module:
        classes = list(getattr(self.dataset, "classes", []))
        torch.manual_seed(self.pre.seed)  # same initial weights on every rank
        model = build_pretrain_model(self.pre, len(classes))
        self._meta = {
            "method": self.pre.method,
            "pretrain_recipe": self.pre.name,
            "detector_recipe": self.pre.detector_recipe,
            "dataset": str(self.spec.data_root),
            "num_samples": self.dataset_size,
            "class_names": classes,
            "iteration": 0,
        }
        return model

    def build_loader(self, ctx: TaskContext, per_rank_batch: int, start: int) -> Iterator[Any]:
        seed = self.pre.seed
        sampler = TrainingSampler(self.dataset_size, seed, ctx.dist.rank, ctx.dist.world_size, start=start)
        workers = self.pre.data.num_workers
        loader: DataLoader[Any] = DataLoader(
            SeededSamples(self.dataset),
            batch_size=per_rank_batch,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        return iter(loader)

    def write_setup_files(self, ctx: TaskContext) -> None:
        atomic_write_json(ctx.run_dir.root / PRETRAIN_RECIPE, self.pre.model_dump(mode="json"))

    # --- step ------------------------------------------------------------------------------
    def losses(self, model: nn.Module, batch: Any, ctx: TaskContext) -> Mapping[str, torch.Tensor]:
        dev = ctx.device
        if self.pre.method == "mae":
            return {"loss_mae": model(batch.to(dev, non_blocking=True))}
        if self.pre.method == "mocov3":
            v1, v2 = batch
            return {"loss_contrastive": model(v1.to(dev, non_blocking=True), v2.to(dev, non_blocking=True))}
        images, labels = batch
        logits = model(images.to(dev, non_blocking=True))
        net = unwrap(model)
        assert isinstance(net, ViTClassifier)
        return {
            "loss_cls": nn.functional.cross_entropy(
                logits, labels.to(dev), label_smoothing=net.label_smoothing
            )
        }

    def after_step(self, model: nn.Module, ctx: TaskContext) -> None:
        if self.pre.method != "mocov3":
            return
        net = unwrap(model)
        assert isinstance(net, MoCoV3)
        total = ctx.recipe.solver.max_iters
        c = self.pre.mocov3
        net.update_momentum_encoder(momentum_at(ctx.iteration / total, c.momentum, c.momentum_cosine))

    # --- outputs ---------------------------------------------------------------------------
    @property
    def tag(self) -> str:
        return self.spec.tag or self.pre.name.split("-", 1)[-1]

    def final_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Write the release file(s) (main process; called by the engine's final save), keep ``state``."""
        out, weights = self.spec.out_dir, state["model"]
        if self.pre.method == "mae":
            self.files = formats.mae_files(weights, out, self.tag)
        elif self.pre.method == "supervised":
            self.files = formats.deit_file(weights, out, self.tag)
        else:
            opt, scaler = getattr(self._ctx, "optimizer", None), getattr(self._ctx, "scaler", None)
            epoch = round(state["meta"].get("iteration", 0) * self.pre.solver.batch_size / self.dataset_size)
            self.files = formats.mocov3_file(
                weights,
                out,
                self.tag,
                epoch=epoch,
                arch=f"vit_{self.tag}",
                optimizer=opt.state_dict() if opt is not None else None,
                scaler=scaler.state_dict() if scaler is not None else None,
            )
        atomic_write_json(out / RELEASES, [{"init": f.init, "file": f.path.name} for f in self.files])
        return state

    def summary(self) -> dict[str, Any]:
        return {"method": self.pre.method, "releases": {f.init: f.path.name for f in self.files}}


def read_releases(out_dir: Path) -> list[formats.PretrainedFile]:
    """The release files a finished pre-training run wrote (from ``releases.json``)."""
    path = out_dir / RELEASES
    if not path.is_file():
        return []
    return [
        formats.PretrainedFile(str(r["init"]), out_dir / str(r["file"])) for r in json.loads(path.read_text())
    ]
