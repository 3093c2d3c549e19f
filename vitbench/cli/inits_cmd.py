"""CLI commands: ``vitbench inits [--json]`` and ``vitbench inits check --init I --path FILE --recipe R``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vitbench.cli.common import fail, print_json

inits_app = typer.Typer(
    name="inits",
    help="The catalog of initializations (random, supervised, MoCo v3, BEiT, MAE, MoBY, detectron2) "
    "and a checker that loads a checkpoint into a recipe's detector and prints its LoadReport.",
    invoke_without_command=True,
)

_LIST_LIMIT = 12


def inits(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalog as JSON.")] = False,
) -> None:
    """List the initializations: published file, pre-training size, pixel normalization, converter."""
    if ctx.invoked_subcommand is not None:
        return
    from vitbench.trainer.inits.catalog import CATALOG

    if as_json:
        print_json([spec.to_dict() for spec in CATALOG.values()])
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vitbench initializations", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("name", "backbones", "pre-train", "pixels", "description"):
        table.add_column(col, no_wrap=col != "description", overflow="fold")
    for spec in CATALOG.values():
        size = f"{spec.pretrain_img_size}px" if spec.pretrain_img_size else "-"
        table.add_row(spec.name, ",".join(spec.applies_to), size, _norm_label(spec), spec.description)
    Console().print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _norm_label(spec: Any) -> str:
    """``imagenet`` / ``0.5`` for the two normalizations in use, else the raw mean/std."""
    from vitbench.trainer.inits.catalog import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD

    pair = (spec.pixel_mean, spec.pixel_std)
    if pair == (IMAGENET_MEAN, IMAGENET_STD):
        return "imagenet"
    if pair == (HALF_MEAN, HALF_STD):
        return "0.5/0.5"
    return "/".join(",".join(f"{v:g}" for v in vals) for vals in pair)


def _print_report(report: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    status = "[bold green]ok[/]" if report.ok else "[bold red]NOT OK[/]"
    console.print(
        f"init [bold]{escape(report.init)}[/] → recipe [bold]{escape(report.recipe)}[/]: {status}  "
        f"(loaded {len(report.loaded)}, missing {len(report.missing)}, unexpected {len(report.unexpected)}, "
        f"resized {len(report.resized)}, dropped {len(report.dropped)})"
    )
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("kind", no_wrap=True)
    table.add_column("key", overflow="fold")
    table.add_column("expected", no_wrap=True)
    surprising_missing, surprising_extra = set(report.unexpected_missing), set(report.unexpected_extra)
    rows: list[tuple[str, str, str]] = []
    rows += [
        ("mismatch", f"{m.key}: {list(m.checkpoint_shape)} vs {list(m.model_shape)}", "no")
        for m in report.mismatched
    ]
    rows += [("missing", k, "no" if k in surprising_missing else "yes") for k in report.missing]
    rows += [("unexpected", k, "no" if k in surprising_extra else "yes") for k in report.unexpected]
    rows += [("resized", r, "yes") for r in report.resized]
    # the surprising rows first, then the rest, capped so a 300-tensor report stays readable
    rows.sort(key=lambda r: r[2] != "no")
    for kind, key, expected in rows[:_LIST_LIMIT]:
        style = "red" if expected == "no" else "dim"
        table.add_row(kind, f"[{style}]{escape(key)}[/]", expected)
    if rows:
        console.print(table)
    if len(rows) > _LIST_LIMIT:
        console.print(f"[dim]… {len(rows) - _LIST_LIMIT} more rows (use --json for all)[/]")
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
    if not report.ok:
        Console(stderr=True, highlight=False).print(
            f"[bold red]error:[/] {escape(report.failure_message())}", soft_wrap=True
        )


def check(
    init: Annotated[str, typer.Option("--init", help="Initialization name (see `vitbench inits`).")],
    path: Annotated[str, typer.Option("--path", help="Checkpoint: local path, http(s):// or s3:// URI.")],
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe whose detector receives the weights.")],
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Expected sha256 of the file (hex); refused on mismatch.")
    ] = None,
    num_classes: Annotated[
        int, typer.Option("--num-classes", min=1, help="Object classes of the detector (COCO: 80).")
    ] = 80,
    as_json: Annotated[bool, typer.Option("--json", help="Print the LoadReport as JSON.")] = False,
) -> None:
    """Load a checkpoint into RECIPE's detector (with the init's overrides) and print its LoadReport.

    Nothing is trained or written; the detector is built on the meta device (no memory for its weights).
    Exits 0 when the report is ok, 1 when it is not, 2 for an unreadable or refused file.
    """
    from vitbench.trainer.inits import InitError
    from vitbench.trainer.recipes import RecipeError, get_recipe

    try:
        from vitbench.trainer.inits.overrides import apply_init_overrides

        resolved = apply_init_overrides(get_recipe(recipe), init)
    except (RecipeError, InitError) as exc:
        fail(_escape(str(exc)))

    import torch

    from vitbench.trainer.inits.api import check_initialization
    from vitbench.trainer.models.detector import build_detector

    with torch.device("meta"):
        model = build_detector(resolved, num_classes=num_classes)
    try:
        report = check_initialization(model, resolved, init, path, sha256)
    except InitError as exc:
        fail(_escape(str(exc)))
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``vitbench inits`` (and ``inits check``) to the root app."""
    inits_app.callback()(inits)
    inits_app.command("check")(check)
    app.add_typer(inits_app)
