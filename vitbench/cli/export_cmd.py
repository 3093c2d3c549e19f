"""CLI command: ``vitbench export --model REF --format onnx|tensorrt``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from vitbench.cli.common import check_folder_option, fail, open_registry, print_json, registry_errors
from vitbench.cli.options import HomeOpt

if TYPE_CHECKING:
    from rich.console import Group

    from vitbench.registry.manifest import ParityReport


class ExportFormat(StrEnum):
    """Export targets."""

    onnx = "onnx"
    tensorrt = "tensorrt"


def export(
    model: str = typer.Option(..., "--model", help="Registered model to export: NAME@ALIAS or NAME/VERSION."),
    fmt: ExportFormat = typer.Option(
        ExportFormat.onnx,
        "--format",
        help="onnx (ONNX Runtime, any machine) or tensorrt (needs an NVIDIA GPU).",
    ),
    home: HomeOpt = None,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Also keep the exported files in this folder (default: temporary folder only).",
        callback=check_folder_option,
    ),
    parity_images: int = typer.Option(
        4, "--parity-images", min=1, max=64, help="Synthetic images in the parity check (plus 2 fixed ones)."
    ),
    upload: bool = typer.Option(
        True, "--upload/--no-upload", help="Attach model.onnx + manifest.json to the model version."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Export a registered checkpoint to ONNX (or TensorRT), prove parity with eager PyTorch, and attach
    ``model.onnx`` + ``manifest.json`` to the same model version. A failed parity check uploads nothing
    and exits with code 1."""
    from rich.console import Console

    from vitbench.trainer.export.onnx import ExportError
    from vitbench.trainer.export.registered import ParityFailedError, export_registered

    console = Console(stderr=True)
    if fmt is ExportFormat.tensorrt:
        from vitbench.trainer.export.tensorrt import TensorRTUnavailableError, require_tensorrt

        try:
            require_tensorrt()
        except TensorRTUnavailableError as exc:
            fail(str(exc))
    client = open_registry(home, create=False)
    try:
        with registry_errors(), console.status(f"exporting {model} to {fmt.value} and checking parity ..."):
            done = export_registered(
                client, model, fmt.value, out=out, parity_images=parity_images, upload=upload
            )
    except ExportError as exc:
        fail(str(exc), code=1)
    except ParityFailedError as exc:
        console.print(parity_table(exc.outcome.parity))
        where = f" (report: {exc.report_file})" if exc.report_file else ""
        report = exc.outcome.parity
        why = (
            f"nothing to compare: neither side detected anything on {len(report.images)} images at "
            f"score ≥ {report.score_threshold} (is the model trained?)"
            if not report.compared
            else "parity check failed"
        )
        fail(f"{why} for {exc.version.ref}; nothing was uploaded{where}", 1)
    console.print(parity_table(done.parity))
    threshold, own = done.parity.score_threshold, done.outcome.manifest.score_threshold
    if threshold is not None and threshold < own:
        console.print(
            f"note: no detection reached the model's score threshold {own}, so parity was checked on a "
            f"second export at score ≥ {threshold}"
        )
    if done.attached:
        console.print(
            f"attached {', '.join(p.name for p in done.outcome.files)} + manifest.json to {done.version.ref}"
        )
    if as_json:
        print_json(done.outcome.manifest.model_dump(mode="json"))


def parity_table(report: ParityReport) -> Group:
    """The parity report as a table plus the thresholds line."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"Parity — {report.runtime}")
    for col in ("image", "eager", "exported", "matched", "min box IoU", "max |Δscore|", "min mask IoU", "ok"):
        table.add_column(
            col, justify="left" if col == "image" else "right", min_width=12 if col == "image" else None
        )
    for im in report.images:
        table.add_row(
            im.image,
            str(im.n_eager),
            str(im.n_exported),
            str(im.n_matched),
            "-" if im.min_box_iou is None else f"{im.min_box_iou:.5f}",
            "-" if im.max_score_diff is None else f"{im.max_score_diff:.2e}",
            "-" if im.min_mask_iou is None else f"{im.min_mask_iou:.4f}",
            "[green]yes[/]" if im.passed else "[red]NO[/]",
        )
    thresholds = (
        f"thresholds: box IoU ≥ {report.box_iou_min}, |Δscore| ≤ {report.score_diff_max}, "
        f"mask IoU ≥ {report.mask_iou_min}; detections at score ≥ {report.score_threshold}"
    )
    return Group(table, thresholds)


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to the root app."""
    app.command("export")(export)
