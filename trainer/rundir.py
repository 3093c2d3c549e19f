"""The run folder's layout: the one place that knows the names of the files a training run writes.

A run folder (``vitbench train --out DIR``, one ``<init>/`` per study run) holds::

    identity.json        what the run is: recipe, init + weights sha256, dataset sha256, code (IDENTITY)
    recipe.json          the fully resolved recipe (RECIPE)
    metrics.jsonl        one JSON object per logged step and per evaluation (METRICS)
    load_report.json     what the initialization loaded (LOAD_REPORT)
    checkpoints/         model_<iteration:07d>.pth, the newest few, full training state (CHECKPOINTS)
    model_final.pth      model + recipe + meta (FINAL_MODEL)
    eval.json            the run's summary: iteration, epoch, init, recipe, metrics, wall time (EVAL)

Torch-free: the study report, the demo and Kubernetes tooling read run folders without torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

IDENTITY = "identity.json"
RECIPE = "recipe.json"
METRICS = "metrics.jsonl"
LOAD_REPORT = "load_report.json"
CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model_final.pth"
EVAL = "eval.json"

CHECKPOINT_RE = re.compile(r"^model_(\d{7,})\.pth$")


def checkpoint_name(iteration: int) -> str:
    """``model_<iteration:07d>.pth``: sorts by name in iteration order up to 10 million steps."""
    return f"model_{iteration:07d}.pth"


class _File:
    """A read-only attribute of a :class:`RunDir`: ``root / name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: RunDir, owner: type | None = None) -> Path:
        return run.root / self.name


@dataclass(frozen=True, init=False)
class RunDir:
    """Paths inside one run folder ``root`` (nothing is created or read by constructing it)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def name(self) -> str:
        return self.root.name

    # the run's files, by the names above
    identity = _File(IDENTITY)
    recipe = _File(RECIPE)
    metrics = _File(METRICS)
    load_report = _File(LOAD_REPORT)
    checkpoints = _File(CHECKPOINTS)
    final_model = _File(FINAL_MODEL)
    eval = _File(EVAL)

    def checkpoint(self, iteration: int) -> Path:
        return self.checkpoints / checkpoint_name(iteration)

    def is_finished(self) -> bool:
        """True once the run wrote its summary (``eval.json``), i.e. it trained and evaluated to the end."""
        return self.eval.is_file()

    def has_started(self) -> bool:
        """True when a periodic checkpoint folder exists, i.e. ``--resume`` has something to continue."""
        return self.checkpoints.is_dir()

    def looks_like_run(self) -> bool:
        """True for a folder a run wrote into (its summary or its resolved recipe is there)."""
        return self.eval.exists() or self.recipe.exists()
