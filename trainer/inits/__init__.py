"""Initializations of the study: catalog, safe loading, converters and the LoadReport.

``from vitbench.trainer.inits import load_initialization`` is the entry point for training. The catalog is
torch-free; the loading API imports torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vitbench.trainer.inits.catalog import CATALOG, InitSpec, get_init, list_inits
from vitbench.trainer.inits.errors import InitError
from vitbench.trainer.inits.report import LoadReport

if TYPE_CHECKING:
    from vitbench.trainer.inits.api import check_initialization, load_initialization, prepare_initialization
    from vitbench.trainer.inits.overrides import apply_init_overrides

__all__ = [
    "CATALOG",
    "InitError",
    "InitSpec",
    "LoadReport",
    "apply_init_overrides",
    "check_initialization",
    "get_init",
    "list_inits",
    "load_initialization",
    "prepare_initialization",
]

_LAZY = {
    "load_initialization": "vitbench.trainer.inits.api",
    "check_initialization": "vitbench.trainer.inits.api",
    "prepare_initialization": "vitbench.trainer.inits.api",
    "apply_init_overrides": "vitbench.trainer.inits.overrides",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitbench.trainer.inits' has no attribute {name!r}")
