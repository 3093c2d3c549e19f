"""Training hooks: callbacks the loop calls at fixed points.

The engine's own duties between steps are hooks too (``StepMetrics``, ``PeriodicCheckpointer``,
``PeriodicEvaluator``, ``FinalSave`` in :mod:`vitbench.trainer.engine.loop`); the trainer runs them
before the hooks a caller passes, in that order. A hook sees the running loop through the
:class:`LoopState` protocol: ``iteration`` (steps done so far), ``max_iters``, ``recipe`` (the resolved
:class:`trainer.recipes.Recipe`), ``out_dir``, ``is_main`` (rank 0), ``meta`` (the checkpoint ``meta``
dict: init, num_classes, class_names, dataset, iteration) and ``epoch`` (float: iterations × global
batch / dataset size).
Hooks must not raise for ordinary conditions; an exception aborts training.
"""

from __future__ import annotations

import json
import os
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
