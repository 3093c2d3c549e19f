"""CLI command: ``vitbench export --model REF --format onnx|tensorrt``."""

from __future__ import annotations

import tempfile
from enum import StrEnum
from pathlib import Path

import typer

from vitbench.cli.common import (
    HOME_HELP,
    check_folder_option,
    fail,
    open_registry,
    print_json,
    registry_errors,
)


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
    home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
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
    from rich.table import Table

    console = Console(stderr=True)
    if fmt is ExportFormat.tensorrt:
        from vitbench.trainer.export.tensorrt import TensorRTUnavailableError, require_tensorrt

        try:
            require_tensorrt()
        except TensorRTUnavailableError as exc:
            fail(str(exc))
    client = open_registry(home, create=False)
    from vitbench.trainer.export.onnx import ExportError
    from vitbench.trainer.export.pipeline import export_checkpoint

    with tempfile.TemporaryDirectory(prefix="vitbench-export-") as tmp:
        work = Path(tmp)
        with registry_errors():
            download = client.download(model, work / "checkpoint")
        info = download.version
        target = out if out is not None else work / "export"
        with console.status(f"exporting {info.ref} to {fmt.value} and checking parity ..."):
            try:
                outcome = export_checkpoint(
                    download.path,
                    target,
                    fmt.value,  # type: ignore[arg-type]
                    parity_count=parity_images,
                    model_name=info.name,
                    model_version=info.version,
                )
            except ExportError as exc:
                fail(str(exc), code=1)
        report = outcome.parity
        table = Table(title=f"Parity — {report.runtime}")
        for col in (
            "image",
            "eager",
            "exported",
            "matched",
            "min box IoU",
            "max |Δscore|",
            "min mask IoU",
            "ok",
        ):
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
        console.print(table)
        console.print(
            f"thresholds: box IoU ≥ {report.box_iou_min}, |Δscore| ≤ {report.score_diff_max}, "
            f"mask IoU ≥ {report.mask_iou_min}; detections at score ≥ {report.score_threshold}"
        )
        if report.score_threshold is not None and report.score_threshold < outcome.manifest.score_threshold:
            console.print(
                f"note: no detection reached the model's score threshold {outcome.manifest.score_threshold}, "
                f"so parity was checked on a second export at score ≥ {report.score_threshold}"
            )
        if not report.passed:
            outcome.manifest.save(target / "manifest.json")
            why = (
                f"nothing to compare: neither side detected anything on {len(report.images)} images at "
                f"score ≥ {report.score_threshold} (is the model trained?)"
                if not report.compared
                else "parity check failed"
            )
            fail(f"{why} for {info.ref}; nothing was uploaded (report: {target / 'manifest.json'})", 1)
        if out is not None:
            outcome.manifest.save(out / "manifest.json")
        if upload:
            with registry_errors():
                client.attach_export(info, list(outcome.files), outcome.manifest, fmt.value)
            console.print(
                f"attached {', '.join(p.name for p in outcome.files)} + manifest.json to {info.ref}"
            )
    if as_json:
        print_json(outcome.manifest.model_dump(mode="json"))


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to the root app."""
    app.command("export")(export)
