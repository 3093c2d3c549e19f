"""Output of the benchmark scripts, torch-free: a Markdown table on stdout and the JSON results file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def print_table(columns: Sequence[str], numeric: Sequence[bool], rows: Iterable[Sequence[str]]) -> None:
    """A Markdown table: ``columns`` headers, right-aligned where ``numeric``, one line per row of cells."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" if right else "---" for right in numeric) + "|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON at ``path`` (folders created); nothing when ``path`` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
