"""The training loop: data → Mask R-CNN losses → AdamW step, with hooks, checkpoints, eval and DDP.

One :class:`Trainer` runs one training run described by a :class:`TrainConfig`. It validates the data
up front, builds the detector, loads the initialization, then steps ``recipe.solver.max_iters``
optimizer steps of ``solver.batch_size`` images in total (split over ranks and ``grad_accum``
micro-batches). Every ``checkpoint_period`` steps rank 0 writes the full training state atomically;
every ``eval_period`` steps (and at the end) it evaluates COCO box/mask AP on the val split.

Interruption: :meth:`Trainer.request_stop` (wired to SIGTERM by the CLI) makes every rank stop at the
next step boundary; rank 0 saves a checkpoint and :class:`TrainingInterruptedError` is raised. If that does
not finish within ``stop_grace_s`` seconds the process exits (code 143) — the previous checkpoint stays
intact because files are only ever renamed into place complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vitbench.trainer.data import split_paths
from vitbench.trainer.data.check import DatasetError, check_dataset
from vitbench.trainer.data.coco import CocoDetection, TrainingSampler, collate, to_model_inputs
from vitbench.trainer.data.transforms import build_eval_transform, build_train_transform
from vitbench.trainer.engine import distributed as du
from vitbench.trainer.engine.checkpoint import (
    CHECKPOINT_DIR,
    FINAL_NAME,
    atomic_save,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    rng_state,
    set_rng_state,
    unwrap,
)
from vitbench.trainer.engine.hooks import Hook
from vitbench.trainer.engine.optim import build_optimizer
from vitbench.trainer.engine.schedule import build_scheduler
from vitbench.trainer.evaluation.coco_eval import evaluate
from vitbench.trainer.recipes import Recipe, save_resolved_recipe

EXIT_INTERRUPTED = 143  # 128 + SIGTERM: a preempted run, not a finished one


class TrainingInterruptedError(RuntimeError):
    """Training stopped early on request; ``checkpoint`` is the file that was saved (None on non-main)."""

    def __init__(self, iteration: int, checkpoint: Path | None) -> None:
        super().__init__(f"training interrupted at iteration {iteration}; saved {checkpoint}")
        self.iteration = iteration
        self.checkpoint = checkpoint


class TrainingSetupError(ValueError):
    """A user-facing problem found before training starts (bad data, existing run, bad batch split)."""


@dataclass
class TrainConfig:
    """Everything one run needs. ``recipe`` is final (init and ``--set`` overrides already applied)."""

    recipe: Recipe
    init: str
    data_root: Path
    out_dir: Path
    weights: str | None = None
    weights_sha256: str | None = None
    resume: bool = False
    device: str = "auto"
    dist: du.DistInfo = field(default_factory=du.DistInfo)
    log_period: int = 10
    keep_checkpoints: int = 3
    stop_grace_s: float = 60.0
    check_data: bool = True
    eval_batch_size: int = 2


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a finished run: final iteration, final eval metrics, wall time (s) and files."""

    iteration: int
    metrics: dict[str, float]
    wall_time_s: float
    final_model: Path
    eval_file: Path


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 works on CPU and GPU; fp16 autocast is only used on CUDA (CPU falls back to fp32)."""
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16" and device.type == "cuda":
        return torch.float16
    return None


class Trainer:
    """Runs one training run; implements :class:`trainer.engine.hooks.LoopState` for hooks."""

    def __init__(self, cfg: TrainConfig, hooks: Sequence[Hook] = ()) -> None:
        self.cfg = cfg
        self.hooks = list(hooks)
        self._recipe = cfg.recipe
        self._iteration = 0
        self._stop = threading.Event()
        self._dataset_size = 1
        self._meta: dict[str, Any] = {}
        self.device = du.select_device(cfg.dist, cfg.device)

    # --- LoopState -------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        return self._iteration

    @property
    def max_iters(self) -> int:
        return self._recipe.solver.max_iters

    @property
    def recipe(self) -> Recipe:
        return self._recipe

    @property
    def out_dir(self) -> Path:
        return self.cfg.out_dir

    @property
    def is_main(self) -> bool:
        return self.cfg.dist.is_main

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    @property
    def epoch(self) -> float:
        return self._iteration * self._recipe.solver.batch_size / self._dataset_size

    # --- control ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to save and stop at the next step boundary (safe to call from a signal handler)."""
        self._stop.set()

    # --- setup -----------------------------------------------------------------------------
    def _per_rank_batch(self) -> int:
        s = self._recipe.solver
        denom = self.cfg.dist.world_size * s.grad_accum
        if s.batch_size % denom:
            raise TrainingSetupError(
                f"solver.batch_size {s.batch_size} must be divisible by world size × solver.grad_accum = "
                f"{self.cfg.dist.world_size} × {s.grad_accum}"
            )
        return s.batch_size // denom

    def _check_data(self) -> None:
        problems = check_dataset(self.cfg.data_root) if self.is_main else []
        problems = du.broadcast_object(problems)
        if problems:
            raise DatasetError(problems)

    def _build_data(self) -> tuple[CocoDetection, CocoDetection]:
        r = self._recipe
        img_dir, ann = split_paths(self.cfg.data_root, "train")
        train_ds = CocoDetection(
            img_dir,
            ann,
            build_train_transform(
                r.input.image_size, r.data.train_scale_range, r.input.pixel_mean, r.data.hflip_prob
            ),
            train=True,
        )
        v_dir, v_ann = split_paths(self.cfg.data_root, "val")
        val_ds = CocoDetection(v_dir, v_ann, build_eval_transform(), train=False)
        if train_ds.class_names != val_ds.class_names:
            raise TrainingSetupError(
                f"train and val categories differ: {train_ds.class_names} vs {val_ds.class_names}"
            )
        return train_ds, val_ds

    def _build_model(self, num_classes: int) -> tuple[nn.Module, Any]:
        from vitbench.trainer.inits import load_initialization
        from vitbench.trainer.models.detector import build_detector

        torch.manual_seed(self._recipe.seed)  # same initial weights on every rank
        model = build_detector(self._recipe, num_classes)
        report = load_initialization(
            model, self._recipe, self.cfg.init, self.cfg.weights, self.cfg.weights_sha256
        )
        return model, report

    # --- checkpoints -----------------------------------------------------------------------
    def _state(
        self, model: nn.Module, full: bool, opt: Any = None, sched: Any = None, scaler: Any = None
    ) -> dict[str, Any]:
        self._meta["iteration"] = self._iteration
        state: dict[str, Any] = {
            "model": unwrap(model).state_dict(),
            "recipe": self._recipe.model_dump(mode="json"),
            "meta": dict(self._meta),
        }
        if full:
            state.update(
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                scaler=scaler.state_dict(),
                iteration=self._iteration,
                rng=rng_state(),
            )
        return state

    def _save_checkpoint(self, model: nn.Module, opt: Any, sched: Any, scaler: Any) -> Path | None:
        path: Path | None = None
        if self.is_main:
            ckpt_dir = self.out_dir / CHECKPOINT_DIR
            path = atomic_save(
                self._state(model, True, opt, sched, scaler), ckpt_dir / checkpoint_name(self._iteration)
            )
            prune_checkpoints(ckpt_dir, self.cfg.keep_checkpoints)
        du.barrier()
        return path

    def _truncate_metrics(self, iteration: int) -> None:
        """Drop metrics lines logged after ``iteration`` (they belong to the interrupted tail)."""
        path = self.out_dir / "metrics.jsonl"
        if not self.is_main or not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= iteration:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by kill -9
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{k}\n" for k in kept), encoding="utf-8")
        os.replace(tmp, path)

    # --- evaluation ------------------------------------------------------------------------
    def _evaluate(self, model: nn.Module, val_ds: CocoDetection) -> dict[str, float]:
        net = unwrap(model)
        was_training = net.training
        results = evaluate(
            net,
            val_ds,
            self.device,
            batch_size=self.cfg.eval_batch_size,
            amp_dtype=_amp_dtype(self._recipe.solver.amp, self.device),
        )
        net.train(was_training)
        for h in self.hooks:
            h.after_eval(self, results)
        return results

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``max_iters`` (or resume and finish); returns the final metrics (same on every rank)."""
        t_start = time.perf_counter()
        cfg, r = self.cfg, self._recipe
        per_rank = self._per_rank_batch()
        ckpt_dir = cfg.out_dir / CHECKPOINT_DIR
        if self.is_main:
            cfg.out_dir.mkdir(parents=True, exist_ok=True)
            if not cfg.resume and (list_checkpoints(ckpt_dir) or (cfg.out_dir / FINAL_NAME).exists()):
                raise TrainingSetupError(
                    f"{cfg.out_dir} already holds a run; pass --resume to continue it or choose another --out"
                )
        if cfg.check_data:
            self._check_data()
        train_ds, val_ds = self._build_data()
        self._dataset_size = len(train_ds)
        num_classes = len(train_ds.class_names)
        model, report = self._build_model(num_classes)
        self._meta = {
            "init": cfg.init,
            "num_classes": num_classes,
            "class_names": list(train_ds.class_names),
            "dataset": str(cfg.data_root),
            "iteration": 0,
            "weights": cfg.weights,
        }
        model.to(self.device)
        if cfg.dist.distributed:
            if self.device.type == "cuda" and "syncbn" in (r.neck.norm, r.heads.norm):
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        s = r.solver
        opt = build_optimizer(unwrap(model), s.lr, s.weight_decay, s.betas, s.layer_decay, r.backbone.depth)
        sched = build_scheduler(
            opt, s.max_iters, s.schedule, s.warmup_iters, s.warmup_factor, s.steps, s.gamma
        )
        amp_dtype = _amp_dtype(s.amp, self.device)
        scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)

        resumed_from: Path | None = None
        if cfg.resume:
            found = latest_checkpoint(ckpt_dir) if self.is_main else None
            found_path = du.broadcast_object(str(found[0]) if found else None)
            if found_path is not None:
                state = found[1] if found else latest_checkpoint(ckpt_dir)[1]  # type: ignore[index]
                unwrap(model).load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                scaler.load_state_dict(state["scaler"])
                self._iteration = int(state["iteration"])
                set_rng_state(state["rng"])
                resumed_from = Path(found_path)
                self._truncate_metrics(self._iteration)
        if resumed_from is None:
            torch.manual_seed(r.seed + cfg.dist.rank)  # per-rank sampling streams (RPN/RoI, drop path)
            if self.is_main:
                (cfg.out_dir / "metrics.jsonl").unlink(missing_ok=True)
        self._meta["resumed_from"] = str(resumed_from) if resumed_from else None
        if self.is_main:
            save_resolved_recipe(r, cfg.out_dir)
            with contextlib.suppress(AttributeError):
                (cfg.out_dir / "load_report.json").write_text(json.dumps(report.to_dict(), indent=2))

        sampler = TrainingSampler(
            len(train_ds), r.seed, cfg.dist.rank, cfg.dist.world_size, start=self._iteration * s.batch_size
        )
        loader: DataLoader[Any] = DataLoader(
            train_ds,
            batch_size=per_rank,
            sampler=sampler,
            num_workers=r.data.num_workers,
            collate_fn=collate,
            persistent_workers=r.data.num_workers > 0,
            # a private generator: creating the iterator must not draw from the (restored) global RNG
            generator=torch.Generator().manual_seed(r.seed),
        )
        batches = iter(loader)
        for h in self.hooks:
            h.before_train(self)

        model.train()
        sums: dict[str, float] = {}
        n_sums = 0
        t_log = time.perf_counter()
        it_log = self._iteration
        while self._iteration < s.max_iters:
            if du.any_flag(self._stop.is_set(), self.device):
                self._interrupt(model, opt, sched, scaler)
            opt.zero_grad(set_to_none=True)
            step_losses: dict[str, float] = {}
            for micro in range(s.grad_accum):
                images, targets = next(batches)
                inputs, tgts = to_model_inputs(images, targets, self.device)
                sync = micro == s.grad_accum - 1 or not isinstance(model, nn.parallel.DistributedDataParallel)
                ctx = contextlib.nullcontext() if sync else model.no_sync()  # type: ignore[operator]
                with ctx:
                    with torch.autocast(
                        self.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                    ):
                        loss_dict = model(inputs, tgts)
                    loss = sum(loss_dict.values()) / s.grad_accum
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"loss became {loss.item()} at iteration {self._iteration}: "
                            + ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
                        )
                    scaler.scale(loss).backward()
                for k, v in loss_dict.items():
                    step_losses[k] = step_losses.get(k, 0.0) + float(v.detach()) / s.grad_accum
            if s.clip_grad is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_grad)
            scaler.step(opt)
            scaler.update()
            lr = opt.param_groups[0]["lr"] / opt.param_groups[0].get("lr_scale", 1.0)
            sched.step()
            self._iteration += 1
            for k, v in step_losses.items():
                sums[k] = sums.get(k, 0.0) + v
            n_sums += 1

            if self._iteration % cfg.log_period == 0 or self._iteration == s.max_iters:
                avg = {k: v / n_sums for k, v in sums.items()}
                avg = du.mean_dict(avg, self.device)
                avg["total_loss"] = sum(avg.values())
                dt = time.perf_counter() - t_log
                avg["lr"] = lr
                avg["time_per_iter_s"] = dt / max(1, self._iteration - it_log)
                avg["images_per_s"] = s.batch_size * (self._iteration - it_log) / max(dt, 1e-9)
                for h in self.hooks:
                    h.after_step(self, avg)
                sums, n_sums, t_log, it_log = {}, 0, time.perf_counter(), self._iteration
            if self._iteration % s.checkpoint_period == 0 and self._iteration < s.max_iters:
                self._save_checkpoint(model, opt, sched, scaler)
            if s.eval_period and self._iteration % s.eval_period == 0 and self._iteration < s.max_iters:
                self._evaluate(model, val_ds)

        final_path = cfg.out_dir / FINAL_NAME
        if self.is_main:
            atomic_save(self._state(model, False), final_path)
        metrics = self._evaluate(model, val_ds)
        wall = time.perf_counter() - t_start
        eval_path = cfg.out_dir / "eval.json"
        if self.is_main:
            payload = {
                "iteration": self._iteration,
                "epoch": self.epoch,
                "init": cfg.init,
                "recipe": r.name,
                "metrics": metrics,
                "wall_time_s": wall,
                "checkpoint": str(final_path),
            }
            tmp = eval_path.with_name(".eval.json.tmp")
            tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
            os.replace(tmp, eval_path)
        for h in self.hooks:
            h.after_train(self)
        du.barrier()
        return TrainResult(self._iteration, metrics, wall, final_path, eval_path)

    def _interrupt(self, model: nn.Module, opt: Any, sched: Any, scaler: Any) -> None:
        """Save a checkpoint within the grace period and raise :class:`TrainingInterruptedError`."""
        timer = threading.Timer(self.cfg.stop_grace_s, lambda: os._exit(EXIT_INTERRUPTED))
        timer.daemon = True
        timer.start()
        try:
            path = self._save_checkpoint(model, opt, sched, scaler)
        finally:
            timer.cancel()
        raise TrainingInterruptedError(self._iteration, path)
