"""What a run is: its identity, written to the run folder when it starts (``identity.json``).

A run is the resolved recipe, the initialization with the sha256 of the weights file it read, the
dataset (the sha256 of its annotation files; images are not hashed) and the code that trained it.
``--resume`` continues a run only when the request has the same identity, and ``bench run`` keeps a
finished run only when it is the run asked for: otherwise each difference is named
(:func:`differences`) and nothing is mixed. The code version is recorded but a different one is not a
difference (a resumed run may pick up a bug fix); paths are recorded but not compared (a dataset or a
weights file may move without changing).

Torch-free: the study and Kubernetes tooling read identities without torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vitbench.trainer.data import SPLITS, split_paths

FORMAT = 1
#: Fields compared between a recorded and a requested identity (besides the recipe, compared per key).
_COMPARED = ("init", "weights_sha256", "dataset_sha256")


@dataclass(frozen=True)
class RunIdentity:
    """The identity of one run; ``recipe`` is the resolved recipe (``Recipe.model_dump(mode="json")``)."""

    recipe: Mapping[str, Any]
    init: str
    weights: str | None
    weights_sha256: str | None
    dataset: str
    dataset_sha256: str
    code: str
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recipe": dict(self.recipe)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunIdentity:
        if not isinstance(data.get("recipe"), Mapping):
            raise TypeError("an identity needs its resolved recipe")
        return cls(
            recipe=data["recipe"],
            init=str(data.get("init")),
            weights=data.get("weights"),
            weights_sha256=data.get("weights_sha256"),
            dataset=str(data.get("dataset")),
            dataset_sha256=str(data.get("dataset_sha256")),
            code=str(data.get("code")),
            format=int(data.get("format") or FORMAT),
        )


def load_identity(path: Path) -> RunIdentity | None:
    """The identity stored at ``path``, or None when there is none (a run from before identities)."""
    try:
        return RunIdentity.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Difference:
    """One way a requested run differs from the recorded one: ``key`` was ``was`` and would be ``now``."""

    key: str
    was: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.key}: {_short(self.was)} → {_short(self.now)}"


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}…"
    return "none" if value is None else json.dumps(value) if not isinstance(value, str) else value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(recorded: RunIdentity, requested: RunIdentity) -> list[Difference]:
    """Every recipe key (dotted, e.g. ``solver.lr``) and compared field whose value differs."""
    diffs: list[Difference] = []
    was, now = _flatten(recorded.recipe), _flatten(requested.recipe)
    for key in sorted(set(was) | set(now)):
        if was.get(key) != now.get(key):
            diffs.append(Difference(key, was.get(key), now.get(key)))
    for key in _COMPARED:
        a, b = getattr(recorded, key), getattr(requested, key)
        if a != b:
            label = {"weights_sha256": "weights", "dataset_sha256": "dataset"}.get(key, key)
            diffs.append(Difference(label, a, b))
    return diffs


def dataset_digest(root: Path) -> str:
    """sha256 over the annotation files of every split (name, length and bytes, in split order)."""
    h = hashlib.sha256()
    for split in SPLITS:
        ann = split_paths(Path(root), split)[1]
        data = ann.read_bytes() if ann.is_file() else b""
        h.update(f"{split}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()
