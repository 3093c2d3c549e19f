"""Checkpoint files: atomic writes, newest-complete lookup for ``--resume``, inference loading.

A training checkpoint ``checkpoints/model_<iteration:07d>.pth`` holds ``model``, ``recipe`` (resolved
recipe dict), ``meta`` ({init, num_classes, class_names, dataset, iteration}) and the training state
``optimizer``, ``scheduler``, ``scaler``, ``iteration`` and ``rng`` (python / numpy / torch [/ cuda]).
``model_final.pth`` holds ``model``, ``recipe`` and ``meta`` only. Every file is written to a
temporary name in the same folder, fsynced and renamed, so a file with the final name is always
complete; loading uses ``torch.load(weights_only=True)`` (no pickled code runs).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitbench.fileio import atomic_path
from vitbench.trainer import rundir

CHECKPOINT_DIR = rundir.CHECKPOINTS
FINAL_NAME = rundir.FINAL_MODEL
_NAME_RE = rundir.CHECKPOINT_RE
checkpoint_name = rundir.checkpoint_name


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or lacks the expected keys."""


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync, then ``os.replace`` onto ``path``."""
    with atomic_path(path, durable=True) as tmp, tmp.open("wb") as fh:
        torch.save(obj, fh)
    return path


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every complete periodic checkpoint in ``ckpt_dir``, newest first."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only``); raise :class:`CheckpointError` when unreadable."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; expected a .pth file (model_final.pth)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file does not exist: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, foreign pickle
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"checkpoint {path} is not a vitbench checkpoint (no 'model' key)")
    return obj


def latest_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``ckpt_dir`` that loads and carries training state, or None.

    Files that fail to load (e.g. damaged after the fact) are skipped in favour of older ones.
    """
    for _, path in list_checkpoints(ckpt_dir):
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            continue
        if "optimizer" in state and "iteration" in state:
            return path, state
    return None


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest periodic checkpoints (``keep <= 0`` keeps everything)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(ckpt_dir)[keep:]:
        path.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (and CUDA when used), in a ``weights_only``-safe form."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def load_inference_model(
    path: Path | str, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Rebuild the detector stored in a checkpoint: ``(model.eval(), recipe, meta)``.

    ``recipe`` is a :class:`trainer.recipes.Recipe`; ``meta`` has init, num_classes, class_names,
    dataset and iteration. Works for ``model_final.pth`` and periodic checkpoints alike.
    """
    from vitbench.trainer.models.detector import build_detector
    from vitbench.trainer.recipes import load_recipe

    state = load_checkpoint(Path(path), map_location=map_location)
    for key in ("recipe", "meta"):
        if key not in state:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}; expected a vitbench training checkpoint")
    recipe = load_recipe(state["recipe"])
    meta = dict(state["meta"])
    model = build_detector(recipe, int(meta["num_classes"]))
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match recipe {recipe.name!r}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    model.to(map_location)
    return model.eval(), recipe, meta
