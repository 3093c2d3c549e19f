"""``vitbench data synth`` (deterministic synthetic COCO dataset) and ``vitbench data check`` (validation)."""

from __future__ import annotations

from pathlib import Path

import typer

from vitbench.cli.common import fail, print_json


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write train/, val/ and annotations/ into."),
    images: int = typer.Option(200, "--images", min=2, help="Total number of images (train + val)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    val_fraction: float = typer.Option(
        0.2, "--val-fraction", min=0.01, max=0.9, help="Share of images in val."
    ),
    categories: int = typer.Option(4, "--categories", min=1, max=5, help="Number of shape categories (1-5)."),
    max_objects: int = typer.Option(4, "--max-objects", min=1, help="Most objects drawn per image."),
    unlabeled: int = typer.Option(
        0,
        "--unlabeled",
        min=0,
        help="Also write this many extra images for pre-training: pixels only under OUT/unlabeled/ "
        "(mae, mocov3) and their objects as 64-px crops in an ImageFolder tree OUT/crops/<category>/ "
        "(supervised). Disjoint from train and val.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace train/, val/, annotations/ (and unlabeled/, crops/) already in --out."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Write a synthetic COCO-format dataset of textured, occluding shapes with instance masks.

    Refuses an --out that already holds a dataset unless --force (which replaces it whole).
    """
    from vitbench.trainer.data.synth import SynthConfig, SynthOutputError, write_dataset

    try:
        cfg = SynthConfig(num_categories=categories, max_objects=max_objects)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        counts = write_dataset(out, images, seed, cfg, val_fraction, force=force, unlabeled=unlabeled)
    except SynthOutputError as exc:
        fail(str(exc))
    summary = {"out": str(out), "seed": seed, **{f"{k}_images": v for k, v in counts.items()}}
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"wrote {counts['train']} train and {counts['val']} val images to {out} (seed {seed})")
        if unlabeled:
            typer.echo(
                f"wrote {counts['unlabeled']} unlabeled images to {out / 'unlabeled'} and "
                f"{counts['crops']} object crops to {out / 'crops'}"
            )


def check(
    data_dir: Path = typer.Option(..., "--data", help="COCO-format dataset folder to validate."),
    split: list[str] = typer.Option(["train", "val"], "--split", help="Split(s) to check (repeatable)."),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="Fully decode every image (slower)."),
    as_json: bool = typer.Option(False, "--json", help="Print problems as JSON."),
) -> None:
    """Validate a dataset; list every problem with its image and annotation id. Exit 1 if any."""
    from rich.console import Console
    from rich.table import Table

    from vitbench.trainer.data.check import check_dataset

    problems = check_dataset(data_dir, tuple(split), decode)
    if as_json:
        print_json({"ok": not problems, "problems": [p.to_dict() for p in problems]})
    elif not problems:
        Console().print(f"[green]ok[/]: {data_dir} ({', '.join(split)}) has no problems")
    else:
        table = Table(title=f"{len(problems)} problem(s) in {data_dir}")
        for col in ("split", "image_id", "annotation_id", "file", "problem"):
            table.add_column(col, overflow="fold")
        for p in problems:
            table.add_row(
                p.split,
                "" if p.image_id is None else str(p.image_id),
                "" if p.annotation_id is None else str(p.annotation_id),
                p.file or "",
                p.message,
            )
        Console(stderr=True).print(table)
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the root app."""
    data = typer.Typer(help="Datasets: synthesize a COCO-format dataset, validate one.", no_args_is_help=True)

    data.command("synth")(synth)

    data.command("check")(check)

    app.add_typer(data, name="data")
