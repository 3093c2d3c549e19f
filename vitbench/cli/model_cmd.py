"""CLI commands: ``vitbench recipes`` and ``vitbench model summary``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vitbench.cli.common import fail, print_json

model_app = typer.Typer(
    name="model",
    help="Inspect detector architectures built from recipes.",
    no_args_is_help=True,
)


def _recipe_row(name: str) -> dict[str, Any]:
    from vitbench.trainer.recipes import get_recipe

    r = get_recipe(name)
    bb = r.backbone
    return {
        "name": name,
        "backbone": bb.kind,
        "embed_dim": bb.embed_dim,
        "depth": bb.depth if bb.kind != "swin" else sum(bb.stage_depths),
        "num_heads": bb.num_heads,
        "window_size": bb.window_size,
        "global_blocks": list(bb.global_blocks),
        "rel_pos": bb.rel_pos,
        "neck": r.neck.kind,
        "norm": r.neck.norm,
        "image_size": r.input.image_size,
        "schedule": r.solver.schedule,
        "max_iters": r.solver.max_iters,
        "batch_size": r.solver.batch_size,
        "lr": r.solver.lr,
    }


def recipes(
    as_json: Annotated[bool, typer.Option("--json", help="Print the full resolved recipes as JSON.")] = False,
) -> None:
    """List the built-in recipes (architecture + schedule); `--json` prints every field."""
    from vitbench.trainer.recipes import get_recipe, list_recipes

    names = list_recipes()
    if as_json:
        print_json([get_recipe(n).model_dump(mode="json") for n in names])
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vitbench recipes", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("name", "backbone", "attention", "neck", "input", "schedule"):
        table.add_column(col, no_wrap=col in ("name", "input"))
    for n in names:
        row = _recipe_row(n)
        if row["backbone"] == "vit":
            globals_ = ",".join(str(i) for i in row["global_blocks"])
            attention = f"win {row['window_size']} + global {globals_}; {row['rel_pos']}"
        elif row["backbone"] == "mimdet":
            attention = "global, sampled tokens"
        else:
            attention = f"shifted win {row['window_size']}"
        table.add_row(
            n,
            f"{row['backbone']} {row['embed_dim']}x{row['depth']}",
            attention,
            f"{row['neck']} {row['norm']}",
            f"{row['image_size']}",
            f"{row['schedule']} {row['max_iters']:,} it x{row['batch_size']} lr {row['lr']:g}",
        )
    Console().print(table)


def summary(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe name (see `vitbench recipes`).")],
    num_classes: Annotated[
        int, typer.Option("--num-classes", min=1, help="Object classes, background excluded (COCO: 80).")
    ] = 80,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a recipe field, e.g. --set backbone.window_size=16 (repeatable)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print params, strides and attention layout as JSON.")
    ] = False,
) -> None:
    """Parameter counts per component, output strides and attention layout of a recipe's detector.

    The model is built on the meta device, so large recipes (ViT-L/H) cost no memory.
    """
    from vitbench.trainer.recipes import RecipeError, apply_overrides, get_recipe

    try:
        resolved = apply_overrides(get_recipe(recipe), overrides or [])
    except RecipeError as exc:
        fail(str(exc))
    try:
        from vitbench.trainer.models.summary import summarize_recipe

        info = summarize_recipe(resolved, num_classes)
    except ImportError as exc:
        fail(f"recipe {recipe!r} needs a backbone that is not available: {exc}")
    if as_json:
        print_json(info)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    params = Table(title=f"{resolved.name}: Mask R-CNN, {num_classes} classes", title_justify="left")
    params.add_column("component")
    params.add_column("parameters", justify="right")
    params.add_column("millions", justify="right")
    for key, value in info["params"].items():
        style = "bold" if key == "total" else None
        params.add_row(key, f"{value:,}", f"{value / 1e6:.2f}M", style=style)
    console.print(params)
    strides = ", ".join(f"{k} /{v}" for k, v in info["strides"].items())
    att = info["attention"]
    console.print(f"[bold]strides[/]    {strides}")
    console.print(
        f"[bold]attention[/]  window {att['window_size']}, global blocks {att['global_blocks']}, "
        f"rel-pos {att['rel_pos']}"
    )


def register(app: typer.Typer) -> None:
    """Add ``recipes`` and the ``model`` group to the root app."""
    app.command("recipes")(recipes)
    model_app.command("summary")(summary)
    app.add_typer(model_app, name="model")
