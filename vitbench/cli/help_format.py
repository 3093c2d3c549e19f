"""``--help`` never crops: long words in an option's help (defaults, examples) fold onto the next line.

typer renders each option's help in a narrow table column whose cells crop a word wider than the
column with "…" (``solver.max_iters=100`` or ``vitbench-registry-credentials`` at 80 columns). The
help texts are rich ``Text`` objects, and a ``Text``'s own ``overflow`` wins over the column's, so
marking them ``fold`` shows every character. typer is pinned (constraints.txt); if its internals
change, help falls back to typer's own rendering.
"""

from __future__ import annotations

from typing import Any


def fold_long_words() -> None:
    """Make typer's option help fold instead of crop (idempotent)."""
    try:
        from rich.text import Text
        from typer import rich_utils
    except ImportError:  # rich not installed: typer prints plain click help, which does not crop
        return
    original = getattr(rich_utils, "_get_parameter_help", None)
    if original is None or getattr(original, "_vitbench_fold", False):
        return

    def folding(*args: Any, **kwargs: Any) -> Any:
        columns = original(*args, **kwargs)
        for item in getattr(columns, "renderables", []):
            if isinstance(item, Text):
                item.overflow = "fold"
        return columns

    folding._vitbench_fold = True  # type: ignore[attr-defined]
    rich_utils._get_parameter_help = folding
