"""The train record stream (schema 1): what ``vitbench train --json`` prints, and the one parser of it.

A Kubernetes Job runs ``vitbench train --json``; ``vitbench bench status`` reads the pod's log to show
progress. The log is a stream of **JSON lines**, each one object on one line with a ``type``:

==========  ======  ==========================================================================
type        stream  fields
==========  ======  ==========================================================================
``train``   stderr  ``iteration``, ``epoch``, the losses (``loss_*``, ``total_loss``), ``lr``,
                    ``time_per_iter_s``, ``images_per_s`` — one per logged step
``eval``    stderr  ``iteration``, ``epoch``, COCO metrics ``bbox/AP``, ``bbox/AP50``, ...,
                    ``segm/AP``, ... — one per evaluation
``result``  stdout  ``schema`` (this version, 1), ``iteration``, ``metrics`` (the final COCO
                    metrics), ``wall_time_s`` — once, when the run finished
==========  ======  ==========================================================================

``train`` and ``eval`` lines are the lines of the run folder's ``metrics.jsonl``. Anything else in a
log (progress bars, warnings, lines that are not JSON objects or lack a known ``type``) is ignored.
A reader accepts ``result`` records of schema ``<= SCHEMA``; fields are only ever added within a schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA = 1
TRAIN, EVAL, RESULT = "train", "eval", "result"
TYPES = (TRAIN, EVAL, RESULT)


def result_record(iteration: int, metrics: Mapping[str, float], wall_time_s: float) -> dict[str, Any]:
    """The ``result`` record of a finished run."""
    return {
        "type": RESULT,
        "schema": SCHEMA,
        "iteration": iteration,
        "metrics": dict(metrics),
        "wall_time_s": wall_time_s,
    }


def dumps(record: Mapping[str, Any]) -> str:
    """One record as one line (no newline)."""
    return json.dumps(record, default=str)


def parse_records(text: str | Iterable[str]) -> list[dict[str, Any]]:
    """The records in a log (text or lines), in log order; noise and unknown types are skipped."""
    lines = text.splitlines() if isinstance(text, str) else text
    out: list[dict[str, Any]] = []
    for raw in lines:
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("type") not in TYPES:
            continue
        if record["type"] == RESULT and not (
            isinstance(record.get("schema"), int) and record["schema"] <= SCHEMA
        ):
            continue
        out.append(record)
    return out


@dataclass(frozen=True)
class Progress:
    """Where a run stands: newest iteration, and box/mask AP of the newest evaluation (or result)."""

    iteration: int | None = None
    ap_box: float | None = None
    ap_mask: float | None = None


def progress(records: Iterable[Mapping[str, Any]]) -> Progress:
    """Scan ``records`` (log order) from the newest: the iteration of the newest record carrying one,
    the APs of the newest ``eval`` or ``result`` record carrying ``bbox/AP``."""
    iteration: int | None = None
    ap_box: float | None = None
    ap_mask: float | None = None
    for record in reversed(list(records)):
        metrics = record.get("metrics")
        values = {**record, **metrics} if isinstance(metrics, dict) else dict(record)
        if iteration is None and isinstance(values.get("iteration"), int):
            iteration = values["iteration"]
        if ap_box is None and isinstance(values.get("bbox/AP"), int | float):
            ap_box = float(values["bbox/AP"])
            mask = values.get("segm/AP")
            ap_mask = float(mask) if isinstance(mask, int | float) else None
        if iteration is not None and ap_box is not None:
            break
    return Progress(iteration, ap_box, ap_mask)
