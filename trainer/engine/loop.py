"""The training engine: setup, resume, one optimizer step at a time, and hooks around the steps.

In the manner of detectron2's ``TrainerBase``/``SimpleTrainer``: :meth:`Trainer.run` is the loop
(setup → ``before_train`` → for each step ``before_iteration``, :meth:`Trainer.run_step`,
``after_iteration`` → ``after_train``); :meth:`Trainer.run_step` is one optimizer step (micro-batches
with gradient accumulation, autocast, grad scaling, clipping, lr schedule); periodic checkpoints,
evaluation, metrics averaging and the final save are hooks (:mod:`vitbench.trainer.engine.hooks`).
What is trained comes from a :class:`~vitbench.trainer.engine.task.TrainTask`; without one, the
trainer runs the detection task of its :class:`TrainConfig`.

A run steps ``recipe.solver.max_iters`` optimizer steps of ``solver.batch_size`` samples in total
(split over ranks and ``grad_accum`` micro-batches). Every ``checkpoint_period`` steps rank 0 writes the
full training state atomically; every ``eval_period`` steps (and at the end) the task evaluates.

Interruption: :meth:`Trainer.request_stop` (wired to SIGTERM by ``train_run``) makes every rank stop at
the next step boundary; rank 0 saves a checkpoint and :class:`TrainingInterruptedError` is raised. If
that does not finish within ``stop_grace_s`` seconds the process exits (code 143) — the previous
checkpoint stays intact because files are only ever renamed into place complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from vitbench.fileio import atomic_write_json, atomic_write_text
from vitbench.trainer import distributed as du
from vitbench.trainer.engine.checkpoint import (
    atomic_save,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    rng_state,
    set_rng_state,
    unwrap,
)
from vitbench.trainer.engine.detection import DetectionTask, TrainConfig
from vitbench.trainer.engine.hooks import Hook, LoopState
from vitbench.trainer.engine.optim import build_optimizer
from vitbench.trainer.engine.schedule import build_scheduler
from vitbench.trainer.engine.task import EngineConfig, RunIdentityError, TrainingSetupError, TrainTask
from vitbench.trainer.identity import RunIdentity, differences, load_identity
from vitbench.trainer.recipes import Recipe, save_resolved_recipe
from vitbench.trainer.rundir import RunDir

__all__ = [
    "EXIT_INTERRUPTED",
    "EngineConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterruptedError",
    "TrainingSetupError",
]

EXIT_INTERRUPTED = 143  # 128 + SIGTERM: a preempted run, not a finished one


class TrainingInterruptedError(RuntimeError):
    """Training stopped early on request; ``checkpoint`` is the file that was saved (None on non-main)."""

    def __init__(self, iteration: int, checkpoint: Path | None, signal: int = 15) -> None:
        super().__init__(f"training interrupted at iteration {iteration}; saved {checkpoint}")
        self.iteration = iteration
        self.checkpoint = checkpoint
        self.signal = signal  # what asked for the stop (SIGTERM 15, SIGINT 2): exit code 128 + signal

    @property
    def exit_code(self) -> int:
        return 128 + self.signal


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a finished run: final iteration, final eval metrics, wall time (s) and files."""

    iteration: int
    metrics: dict[str, float]
    wall_time_s: float
    final_model: Path
    eval_file: Path
    registered: str | None = None  # ``name/version`` when a registry hook registered the final model


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 works on CPU and GPU; fp16 autocast is only used on CUDA (CPU falls back to fp32)."""
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16" and device.type == "cuda":
        return torch.float16
    return None


class Trainer:
    """Runs one training run of ``task`` (default: the detection task of ``cfg``).

    Implements :class:`~vitbench.trainer.engine.hooks.LoopState` for hooks and
    :class:`~vitbench.trainer.engine.task.TaskContext` for the task.
    """

    def __init__(self, cfg: EngineConfig, hooks: Sequence[Hook] = (), task: TrainTask | None = None) -> None:
        if task is None:
            if not isinstance(cfg, TrainConfig):
                raise TypeError("Trainer needs a task, or a TrainConfig for the detection task")
            task = DetectionTask(cfg)
        self.cfg = cfg
        self.task = task
        self.user_hooks = list(hooks)
        self.hooks: list[Hook] = []
        self.run_dir = RunDir(cfg.out_dir)
        self.device = du.select_device(cfg.dist, cfg.device)
        self.amp_dtype = _amp_dtype(cfg.recipe.solver.amp, self.device)
        self._recipe = cfg.recipe
        self._iteration = 0
        self._stop = threading.Event()
        self._meta: dict[str, Any] = {}
        self.last_losses: dict[str, float] = {}
        self.last_lr = 0.0
        self.model: nn.Module | None = None
        self._final = FinalSave(self)
        self._t_start = 0.0
        self._wall_s = 0.0
        self._wall_before_s = 0.0  # wall time of the sessions before a resume

    # --- LoopState / TaskContext ------------------------------------------------------------
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
    def dist(self) -> du.DistInfo:
        return self.cfg.dist

    @property
    def is_main(self) -> bool:
        return self.cfg.dist.is_main

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    @property
    def epoch(self) -> float:
        return self._iteration * self._recipe.solver.batch_size / max(1, self.task.dataset_size)

    @property
    def log_period(self) -> int:
        return self.cfg.log_period

    @property
    def global_batch(self) -> int:
        return self._recipe.solver.batch_size

    # --- control ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to save and stop at the next step boundary (safe to call from a signal handler)."""
        self._stop.set()

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``max_iters`` (or resume and finish); returns the final metrics (same on every rank)."""
        self._t_start = time.perf_counter()
        self.setup()
        self._call("before_train")
        assert self.model is not None
        self.model.train()
        while self._iteration < self.max_iters:
            if du.any_flag(self._stop.is_set(), self.device):
                self._interrupt()
            self._call("before_iteration")
            self.run_step()
            self._iteration += 1
            self._call("after_iteration")
        self._call("after_train")
        du.barrier()
        return TrainResult(
            self._iteration,
            self._final.metrics,
            self._wall_s,
            self.run_dir.final_model,
            self.run_dir.eval,
        )

    def _call(self, event: str, *args: Any) -> None:
        for h in self.hooks:
            getattr(h, event)(self, *args)

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

    def _guard_run_dir(self) -> None:
        if not self.is_main:
            return
        rd = self.run_dir  # created only once the run's inputs are valid (see _check_identity)
        if not self.cfg.resume and (list_checkpoints(rd.checkpoints) or rd.final_model.exists()):
            raise TrainingSetupError(
                f"{self.out_dir} already holds a run; pass --resume to continue it or choose another --out"
            )

    def setup(self) -> None:
        """Check the run folder, build data, model (DDP), optimizer, schedule, scaler; resume; build hooks."""
        cfg, r, task = self.cfg, self._recipe, self.task
        per_rank = self._per_rank_batch()
        self._guard_run_dir()
        task.prepare(self)
        model = task.build_model(self)
        self._meta = task.meta
        model.to(self.device)
        if cfg.dist.distributed:
            if self.device.type == "cuda" and task.sync_batchnorm():
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.model = model
        s = r.solver
        self.optimizer = build_optimizer(
            unwrap(model), s.lr, s.weight_decay, s.betas, s.layer_decay, r.backbone.depth
        )
        self.scheduler = build_scheduler(self.optimizer, s)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self._check_identity(task.identity(self))
        resumed_from = self.resume_or_start()
        self._meta["resumed_from"] = str(resumed_from) if resumed_from else None
        if self.is_main:
            save_resolved_recipe(r, cfg.out_dir)
            task.write_setup_files(self)
        self._batches: Iterator[Any] = task.build_loader(self, per_rank, self._iteration * s.batch_size)
        self.hooks = [
            StepMetrics(self),
            PeriodicCheckpointer(self, s.checkpoint_period),
            PeriodicEvaluator(self, s.eval_period),
            self._final,
            *self.user_hooks,
        ]

    def _check_identity(self, identity: RunIdentity | None) -> None:
        """Refuse to resume a run as something else; record the identity of a run that starts.

        Resuming (``--resume`` with a checkpoint to continue) compares ``identity`` with the recorded
        one and raises :class:`RunIdentityError` naming each difference; a run folder from before
        identities is compared by its ``recipe.json``. Otherwise the folder is created and the identity
        written. Every rank gets the same verdict.
        """
        problem: str | None = None
        if self.is_main and identity is not None:
            rd = self.run_dir
            resuming = self.cfg.resume and bool(list_checkpoints(rd.checkpoints))
            recorded = load_identity(rd.identity) if resuming else None
            if resuming and recorded is None and rd.recipe.is_file():
                recorded = replace(identity, recipe=json.loads(rd.recipe.read_text(encoding="utf-8")))
            diffs = differences(recorded, identity) if recorded is not None else []
            if diffs:
                problem = (
                    f"--resume would continue the run in {rd.root} as a different run: "
                    + "; ".join(str(d) for d in diffs)
                    + ". Resume with the arguments it started with, or train into another --out"
                )
            elif recorded is None:
                rd.root.mkdir(parents=True, exist_ok=True)
                atomic_write_json(rd.identity, identity.to_dict())
        elif self.is_main:
            self.run_dir.root.mkdir(parents=True, exist_ok=True)
        problem = du.broadcast_object(problem)
        if problem:
            raise RunIdentityError(problem)

    def resume_or_start(self) -> Path | None:
        """With ``resume``, load the newest complete checkpoint (every rank); else seed per rank."""
        found_path: str | None = None
        if self.cfg.resume:
            ckpt_dir = self.run_dir.checkpoints
            found = latest_checkpoint(ckpt_dir) if self.is_main else None
            found_path = du.broadcast_object(str(found[0]) if found else None)
            if found_path is not None:
                state = found[1] if found else latest_checkpoint(ckpt_dir)[1]  # type: ignore[index]
                assert self.model is not None
                unwrap(self.model).load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                self.scaler.load_state_dict(state["scaler"])
                self._iteration = int(state["iteration"])
                self._wall_before_s = float(state.get("wall_time_s", 0.0))  # earlier sessions
                set_rng_state(state["rng"])
                self._truncate_metrics(self._iteration)
                return Path(found_path)
        torch.manual_seed(self._recipe.seed + self.cfg.dist.rank)  # per-rank sampling streams
        if self.is_main:
            self.run_dir.metrics.unlink(missing_ok=True)
        return None

    def _truncate_metrics(self, iteration: int) -> None:
        """Drop metrics lines logged after ``iteration`` (they belong to the interrupted tail)."""
        path = self.run_dir.metrics
        if not self.is_main or not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= iteration:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by kill -9
        atomic_write_text(path, "".join(f"{k}\n" for k in kept))

    # --- one step --------------------------------------------------------------------------
    def run_step(self) -> None:
        """One optimizer step: ``grad_accum`` micro-batches, clip, scaler step, lr schedule step."""
        assert self.model is not None
        model, opt, scaler, s = self.model, self.optimizer, self.scaler, self._recipe.solver
        opt.zero_grad(set_to_none=True)
        step_losses: dict[str, float] = {}
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        for micro in range(s.grad_accum):
            batch = next(self._batches)
            sync = micro == s.grad_accum - 1 or not ddp
            ctx = contextlib.nullcontext() if sync else model.no_sync()  # type: ignore[operator]
            with ctx:
                amp = self.amp_dtype
                with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    loss_dict = self.task.losses(model, batch, self)
                loss = cast(torch.Tensor, sum(loss_dict.values())) / s.grad_accum
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
        self.last_lr = opt.param_groups[0]["lr"] / opt.param_groups[0].get("lr_scale", 1.0)
        self.scheduler.step()
        self.task.after_step(model, self)
        self.last_losses = step_losses

    # --- what the engine's hooks call ------------------------------------------------------
    def mean_over_ranks(self, values: Mapping[str, float]) -> dict[str, float]:
        return du.mean_dict(values, self.device)

    def publish_metrics(self, metrics: Mapping[str, float]) -> None:
        """Hand averaged step metrics to every hook's ``after_step``."""
        self._call("after_step", metrics)

    def state(self, full: bool) -> dict[str, Any]:
        """The checkpoint dict: ``model``, ``recipe``, ``meta`` (+ training state when ``full``)."""
        assert self.model is not None
        self._meta["iteration"] = self._iteration
        state: dict[str, Any] = {
            "model": unwrap(self.model).state_dict(),
            "recipe": self._recipe.model_dump(mode="json"),
            "meta": dict(self._meta),
        }
        if full:
            state.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                iteration=self._iteration,
                rng=rng_state(),
                wall_time_s=self._wall_before_s + time.perf_counter() - self._t_start,
            )
        return state

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes ``checkpoints/model_<it>.pth`` and prunes old ones; every rank waits."""
        path: Path | None = None
        if self.is_main:
            path = atomic_save(self.state(True), self.run_dir.checkpoint(self._iteration))
            prune_checkpoints(self.run_dir.checkpoints, self.cfg.keep_checkpoints)
        du.barrier()
        return path

    def evaluate(self) -> dict[str, float]:
        """The task's metrics of the current model ({} if the task has none); calls ``after_eval``."""
        assert self.model is not None
        net = unwrap(self.model)
        was_training = net.training
        results = self.task.evaluate(net, self)
        net.train(was_training)
        if results is None:
            return {}
        self._call("after_eval", results)
        return results

    def save_final(self) -> Path:
        """Rank 0 writes the task's final state to ``model_final.pth``."""
        path = self.run_dir.final_model
        if self.is_main:
            atomic_save(self.task.final_state(self.state(False)), path)
        return path

    def write_summary(self, metrics: Mapping[str, float]) -> Path:
        """Rank 0 writes ``eval.json``: iteration, epoch, task fields, recipe, metrics, wall time, file."""
        path = self.run_dir.eval
        self._wall_s = self._wall_before_s + time.perf_counter() - self._t_start  # over every session
        if self.is_main:
            payload = {
                "iteration": self._iteration,
                "epoch": self.epoch,
                **self.task.summary(),
                "recipe": self._recipe.name,
                "metrics": dict(metrics),
                "wall_time_s": self._wall_s,
                "checkpoint": str(self.run_dir.final_model),
            }
            atomic_write_json(path, payload)
        return path

    def _interrupt(self) -> None:
        """Save a checkpoint within the grace period and raise :class:`TrainingInterruptedError`."""
        timer = threading.Timer(self.cfg.stop_grace_s, lambda: os._exit(EXIT_INTERRUPTED))
        timer.daemon = True
        timer.start()
        try:
            path = self.save_checkpoint()
        finally:
            timer.cancel()
        raise TrainingInterruptedError(self._iteration, path)


# --- the engine's own hooks (run before the caller's, in this order) ----------------------------


class StepMetrics(Hook):
    """Average each step's losses over ``log_period`` steps and over ranks, add ``total_loss``, ``lr``,
    ``time_per_iter_s``, ``images_per_s``, and publish them to every hook's ``after_step``."""

    def __init__(self, engine: Trainer) -> None:
        self.engine = engine
        self._sums: dict[str, float] = {}
        self._n = 0
        self._t: float | None = None
        self._it = 0

    def before_iteration(self, loop: LoopState) -> None:
        if self._t is None:
            self._t, self._it = time.perf_counter(), loop.iteration

    def after_iteration(self, loop: LoopState) -> None:
        e = self.engine
        for k, v in e.last_losses.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._n += 1
        if loop.iteration % e.log_period and loop.iteration != loop.max_iters:
            return
        avg = e.mean_over_ranks({k: v / self._n for k, v in self._sums.items()})
        avg["total_loss"] = sum(avg.values())
        dt = time.perf_counter() - (self._t or 0.0)
        steps = loop.iteration - self._it
        avg["lr"] = e.last_lr
        avg["time_per_iter_s"] = dt / max(1, steps)
        avg["images_per_s"] = e.global_batch * steps / max(dt, 1e-9)
        e.publish_metrics(avg)
        self._sums, self._n, self._t, self._it = {}, 0, time.perf_counter(), loop.iteration


class PeriodicCheckpointer(Hook):
    """Save the full training state every ``period`` steps (not at the end: :class:`FinalSave` does)."""

    def __init__(self, engine: Trainer, period: int) -> None:
        self.engine, self.period = engine, period

    def after_iteration(self, loop: LoopState) -> None:
        if loop.iteration % self.period == 0 and loop.iteration < loop.max_iters:
            self.engine.save_checkpoint()


class PeriodicEvaluator(Hook):
    """Evaluate every ``period`` steps (0: never; the final evaluation is :class:`FinalSave`'s)."""

    def __init__(self, engine: Trainer, period: int) -> None:
        self.engine, self.period = engine, period

    def after_iteration(self, loop: LoopState) -> None:
        if self.period and loop.iteration % self.period == 0 and loop.iteration < loop.max_iters:
            self.engine.evaluate()


class FinalSave(Hook):
    """At the end: write the final model, evaluate once more and write the run summary (``eval.json``)."""

    def __init__(self, engine: Trainer) -> None:
        self.engine = engine
        self.metrics: dict[str, float] = {}

    def after_train(self, loop: LoopState) -> None:
        self.engine.save_final()
        self.metrics = self.engine.evaluate()
        self.engine.write_summary(self.metrics)
