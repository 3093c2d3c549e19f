"""Load an initialization into a detector: fetch, verify, convert, compare, then (only if ok) copy.

The model is never touched before the whole checkpoint has been read, converted and compared with
the model's state dict, so a refused file leaves it exactly as it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vitbench.trainer.inits.catalog import InitSpec, get_init
from vitbench.trainer.inits.converters import CONVERTERS, MIMDET_PREFIX, SWIN_PREFIX, VIT_PREFIX, to_tensor
from vitbench.trainer.inits.errors import InitError
from vitbench.trainer.inits.loading import read_checkpoint_with_digest
from vitbench.trainer.inits.report import LoadReport, ShapeMismatch

# The part of the detector an init is responsible for, by backbone kind ("" = the whole detector).
_SCOPE = {"vit": VIT_PREFIX, "mimdet": MIMDET_PREFIX, "swin": SWIN_PREFIX}


@dataclass(frozen=True)
class PreparedInit:
    """A checked initialization: its report and the tensors to copy (empty when not ok)."""

    report: LoadReport
    tensors: Mapping[str, Tensor]


def _recipe_kind(recipe: Any) -> str:
    return str(getattr(getattr(recipe, "backbone", None), "kind", "vit"))


def _recipe_name(recipe: Any) -> str:
    return str(getattr(recipe, "name", "?"))


def _unwrap(raw: Mapping[str, Any], spec: InitSpec, label: str) -> Mapping[str, Any]:
    for key in spec.weights_key:
        inner = raw.get(key)
        if isinstance(inner, Mapping):
            return inner
    # A flat state dict (e.g. timm hub weights saved with state_dict()) is accepted as is.
    if raw and all(isinstance(v, Tensor) for v in raw.values()):
        return raw
    found = ", ".join(sorted(map(str, raw))[:8]) or "nothing"
    raise InitError(
        f"{label} is not a {spec.name} checkpoint: expected the weights under top-level key "
        f"{' or '.join(repr(k) for k in spec.weights_key)}, found {found}"
    )


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(re.search(p, key) for p in patterns)


def _filter(weights: Mapping[str, Any], spec: InitSpec) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Strip ``keep_prefix``, drop the catalog's known-irrelevant keys and non-tensors.

    Returns (kept tensors by stripped name, dropped keys, keys outside the prefix that are not known).
    """
    kept: dict[str, Tensor] = {}
    dropped: list[str] = []
    stray: list[str] = []
    for key, value in weights.items():
        name = str(key)
        if spec.keep_prefix and not name.startswith(spec.keep_prefix):
            (dropped if _matches(name, spec.drop) else stray).append(name)
            continue
        name = name.removeprefix(spec.keep_prefix)
        tensor = to_tensor(value)
        if _matches(name, spec.drop):
            dropped.append(str(key))
        elif tensor is None:
            stray.append(str(key))
        else:
            kept[name] = tensor
    return kept, dropped, stray


def prepare_initialization(
    model: nn.Module, recipe: Any, init: str, weights: str | None, sha256: str | None = None
) -> PreparedInit:
    """Read, verify and convert ``weights`` for ``init`` against ``model``; do not modify the model.

    Raises InitError for an unknown init, an init that does not apply to the recipe's backbone, a
    missing/unreadable/hostile file or a sha256 mismatch. A file that reads fine but does not fit the
    model is reported (``report.ok`` false) rather than raised, so callers can print the report.
    """
    spec = get_init(init)
    kind, rname = _recipe_kind(recipe), _recipe_name(recipe)
    if kind not in spec.applies_to:
        raise InitError(
            f"init {init!r} does not apply to recipe {rname!r} (backbone kind {kind!r}); "
            f"it applies to backbone kinds {', '.join(spec.applies_to)}"
        )
    if not spec.needs_weights:
        if weights:
            raise InitError(f"init {init!r} takes no weights file (got {weights!r}); omit --weights")
        return PreparedInit(LoadReport(init=init, recipe=rname, source=None, notes=("nothing loaded",)), {})
    if not weights:
        where = f" (published file: {spec.url})" if spec.url else ""
        raise InitError(
            f"init {init!r} needs a weights file{where}; pass a local path, http(s):// or s3:// URI"
        )

    base = weights.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    prefix = spec.sha256_prefix if base == spec.published_name else None
    raw, digest = read_checkpoint_with_digest(weights, sha256 or spec.sha256, sha256_prefix=prefix)
    state, dropped, stray = _filter(_unwrap(raw, spec, weights), spec)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted = CONVERTERS[spec.converter](state, target, kind)

    scope = "" if spec.converter == "detectron2" else _SCOPE.get(kind, "")
    loaded: list[str] = []
    unexpected: list[str] = list(stray)
    mismatched: list[ShapeMismatch] = []
    for key, tensor in converted.tensors.items():
        if key not in target:
            unexpected.append(key)
        elif tuple(tensor.shape) != target[key]:
            mismatched.append(ShapeMismatch(key, tuple(tensor.shape), target[key]))
        else:
            loaded.append(key)
    missing = [k for k in target if k.startswith(scope) and k not in converted.tensors]
    exp_missing = spec.expected_missing.get(kind, ())
    exp_unexpected = spec.expected_unexpected.get(kind, ())
    report = LoadReport(
        init=init,
        recipe=rname,
        source=weights,
        loaded=tuple(loaded),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        resized=tuple(converted.resized),
        dropped=tuple(dropped),
        mismatched=tuple(mismatched),
        unexpected_missing=tuple(k for k in missing if not _matches(k, exp_missing)),
        unexpected_extra=tuple(k for k in unexpected if not _matches(k, exp_unexpected)),
        notes=tuple(converted.notes),
        hint="" if mismatched else spec.hints.get(kind, ""),
        sha256=digest,
    )
    tensors = {k: converted.tensors[k] for k in loaded} if report.ok else {}
    return PreparedInit(report, tensors)


def check_initialization(
    model: nn.Module, recipe: Any, init: str, weights: str | None, sha256: str | None = None
) -> LoadReport:
    """The LoadReport that loading would produce; the model is left untouched."""
    return prepare_initialization(model, recipe, init, weights, sha256).report


def load_initialization(
    model: nn.Module, recipe: Any, init: str, weights: str | None, sha256: str | None = None
) -> LoadReport:
    """Load ``init`` from ``weights`` into ``model`` (a detector from ``build_detector(recipe, ...)``).

    Copies the converted tensors only when the report is ok; otherwise raises InitError with the
    report's failure message (naming e.g. the first mismatched tensor and both shapes) and leaves the
    model unchanged. ``random`` needs no weights and loads nothing.
    """
    prepared = prepare_initialization(model, recipe, init, weights, sha256)
    if not prepared.report.ok:
        raise InitError(prepared.report.failure_message())
    if prepared.tensors:
        params = model.state_dict()
        with torch.no_grad():
            for key, tensor in prepared.tensors.items():
                params[key].copy_(tensor.to(dtype=params[key].dtype))
    return prepared.report
