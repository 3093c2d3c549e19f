"""Training hooks: callbacks the loop calls at fixed points.

The engine's own duties between steps are hooks too (:class:`StepMetrics`, :class:`PeriodicCheckpointer`,
:class:`PeriodicEvaluator`, :class:`FinalSave`); the trainer runs them before the hooks a caller passes,
in that order. A hook sees the running loop through the :class:`LoopState` protocol: ``iteration``
(steps done so far), ``max_iters``, ``recipe`` (the resolved :class:`trainer.recipes.Recipe`),
``out_dir``, ``is_main`` (rank 0), ``meta`` (the checkpoint ``meta`` dict: init, num_classes,
class_names, dataset, iteration) and ``epoch`` (float: iterations × global batch / dataset size).
Hooks must not raise for ordinary conditions; an exception aborts training.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

from vitbench.trainer import rundir


@runtime_checkable
class LoopState(Protocol):
    """What a hook may read from the training loop."""

    @property
    def iteration(self) -> int: ...

    @property
    def max_iters(self) -> int: ...

    @property
    def recipe(self) -> Any: ...

    @property
    def out_dir(self) -> Path: ...

    @property
    def is_main(self) -> bool: ...

    @property
    def meta(self) -> dict[str, Any]: ...

    @property
    def epoch(self) -> float: ...


class Hook:
    """Base class: every callback is a no-op. Subclass and override what you need."""

    def before_train(self, loop: LoopState) -> None:
        """Called once before the first step (after a resume, ``loop.iteration`` may be > 0)."""

    def before_iteration(self, loop: LoopState) -> None:
        """Called before every optimizer step."""

    def after_iteration(self, loop: LoopState) -> None:
        """Called after every optimizer step (``loop.iteration`` already counts it)."""

    def after_step(self, loop: LoopState, metrics: Mapping[str, float]) -> None:
        """Called after each logged optimizer step with losses, ``lr`` and timing (rank 0 values)."""

    def after_eval(self, loop: LoopState, results: Mapping[str, float]) -> None:
        """Called after each evaluation with COCO keys ``bbox/AP``, ``bbox/AP50``, ..., ``segm/AP``..."""

    def after_train(self, loop: LoopState) -> None:
        """Called once when training finished normally (not on interruption)."""


class EngineState(LoopState, Protocol):
    """What the engine's own hooks drive (implemented by :class:`vitbench.trainer.engine.loop.Trainer`)."""

    @property
    def log_period(self) -> int: ...

    @property
    def last_losses(self) -> Mapping[str, float]: ...

    @property
    def last_lr(self) -> float: ...

    @property
    def global_batch(self) -> int: ...

    def mean_over_ranks(self, values: Mapping[str, float]) -> dict[str, float]: ...

    def publish_metrics(self, metrics: Mapping[str, float]) -> None: ...

    def save_checkpoint(self) -> Path | None: ...

    def evaluate(self) -> dict[str, float]: ...

    def save_final(self) -> Path: ...

    def write_summary(self, metrics: Mapping[str, float]) -> Path: ...


class StepMetrics(Hook):
    """Average each step's losses over ``log_period`` steps and over ranks, add ``total_loss``, ``lr``,
    ``time_per_iter_s``, ``images_per_s``, and publish them to every hook's ``after_step``."""

    def __init__(self, engine: EngineState) -> None:
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

    def __init__(self, engine: EngineState, period: int) -> None:
        self.engine, self.period = engine, period

    def after_iteration(self, loop: LoopState) -> None:
        if loop.iteration % self.period == 0 and loop.iteration < loop.max_iters:
            self.engine.save_checkpoint()


class PeriodicEvaluator(Hook):
    """Evaluate every ``period`` steps (0: never; the final evaluation is :class:`FinalSave`'s)."""

    def __init__(self, engine: EngineState, period: int) -> None:
        self.engine, self.period = engine, period

    def after_iteration(self, loop: LoopState) -> None:
        if self.period and loop.iteration % self.period == 0 and loop.iteration < loop.max_iters:
            self.engine.evaluate()


class FinalSave(Hook):
    """At the end: write the final model, evaluate once more and write the run summary (``eval.json``)."""

    def __init__(self, engine: EngineState) -> None:
        self.engine = engine
        self.metrics: dict[str, float] = {}

    def after_train(self, loop: LoopState) -> None:
        self.engine.save_final()
        self.metrics = self.engine.evaluate()
        self.engine.write_summary(self.metrics)


class JsonlMetricsHook(Hook):
    """Append one JSON object per logged step and per evaluation to ``out_dir/metrics.jsonl``.

    Only the main process writes. Each line carries ``iteration`` and ``epoch``; eval lines carry the
    COCO keys. Lines are flushed and fsynced so a kill -9 loses at most the line being written.
    With ``echo`` (e.g. ``sys.stderr``) every line is also written there, so a pod's log carries the
    live progress that ``vitbench bench status`` reads.
    """

    def __init__(self, filename: str = rundir.METRICS, echo: TextIO | None = None) -> None:
        self.filename = filename
        self.echo = echo

    def _write(self, loop: LoopState, record: Mapping[str, Any]) -> None:
        if not loop.is_main:
            return
        path = loop.out_dir / self.filename
        line = json.dumps({"iteration": loop.iteration, "epoch": round(loop.epoch, 6), **record})
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.echo is not None:
            self.echo.write(line + "\n")
            self.echo.flush()

    def after_step(self, loop: LoopState, metrics: Mapping[str, float]) -> None:
        self._write(loop, {"type": "train", **metrics})

    def after_eval(self, loop: LoopState, results: Mapping[str, float]) -> None:
        self._write(loop, {"type": "eval", **results})


class RichProgressHook(Hook):
    """A rich progress bar on stderr (main process only): iterations, loss, lr, AP after each eval."""

    def __init__(self, description: str = "train", transient: bool = False) -> None:
        self.description = description
        self.transient = transient
        self._progress: Any = None
        self._task: Any = None
        self._last_ap = ""

    def before_train(self, loop: LoopState) -> None:
        if not loop.is_main:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            transient=self.transient,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.description, total=loop.max_iters, completed=loop.iteration, info=""
        )

    def after_step(self, loop: LoopState, metrics: Mapping[str, float]) -> None:
        if self._progress is None:
            return
        loss, lr = metrics.get("total_loss", float("nan")), metrics.get("lr", 0.0)
        info = f"loss {loss:.3f} lr {lr:.2e}{self._last_ap}"
        self._progress.update(self._task, completed=loop.iteration, info=info)

    def after_eval(self, loop: LoopState, results: Mapping[str, float]) -> None:
        if self._progress is None:
            return
        self._last_ap = f" | box AP50 {results.get('bbox/AP50', 0.0):.1f}"

    def after_train(self, loop: LoopState) -> None:
        self.close()

    def close(self) -> None:
        """Stop the bar (also call this when training ends by an exception)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
