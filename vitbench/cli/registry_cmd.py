"""CLI commands: ``vitbench registry list|show|promote|download``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from vitbench.cli.common import open_registry, print_json, registry_errors
from vitbench.cli.options import HomeOpt

if TYPE_CHECKING:
    from rich.table import Table

registry_app = typer.Typer(
    name="registry",
    help="Browse the model registry, set aliases (champion) and download verified checkpoints.",
    no_args_is_help=True,
)

_SUMMARY_TAGS = ("init", "recipe", "ap_box", "ap_mask")


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _column(table: Table, name: str) -> None:
    """Add a column that folds long values instead of truncating them (aliases must stay readable)."""
    numeric = name in {"version", "versions", "ap_box", "ap_mask"}
    table.add_column(
        {"versions": "#ver"}.get(name, name),
        justify="right" if numeric else "left",
        overflow="fold",
        min_width={"aliases": 8, "model": 12, "recipe": 10}.get(name),
    )


def list_cmd(
    name: str | None = typer.Argument(None, help="Model name: list its versions instead of all models."),
    home: HomeOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List registered models (or the versions of one model) with their aliases and tags.

    The model table shows the newest version's tags; ``show`` prints everything about one version."""
    from rich.console import Console
    from rich.table import Table

    client = open_registry(home, create=False)
    with registry_errors():
        if name is None:
            models = client.list_models()
            if as_json:
                print_json([m.to_dict() for m in models])
                return
            table = Table(title=f"Registered models — {client.tracking_uri}")
            for col in ("model", "versions", "aliases", *_SUMMARY_TAGS):
                _column(table, col)
            for m in models:
                latest = m.latest
                tags = latest.tags if latest else {}
                aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())) or "-"
                table.add_row(
                    m.name,
                    str(len(m.versions)),
                    aliases,
                    *(tags.get(t, "-") for t in _SUMMARY_TAGS),
                )
            Console().print(table if models else f"no registered models in {client.tracking_uri}")
            return
        versions = client.list_versions(name)
        if as_json:
            print_json([v.to_dict() for v in versions])
            return
        table = Table(title=f"Versions of {name}")
        for col in ("version", "aliases", *_SUMMARY_TAGS, "sha256"):
            _column(table, col)
        for v in versions:
            table.add_row(
                v.version,
                ", ".join(v.aliases) or "-",
                *(v.tags.get(t, "-") for t in _SUMMARY_TAGS),
                v.tags.get("sha256", "-")[:8],
            )
        Console().print(table)


def show_cmd(
    ref: str = typer.Argument(..., help="Model reference: NAME@ALIAS or NAME/VERSION."),
    home: HomeOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show one version with its lineage and promotion history.

    Prints the tags, who moved which alias to or from this version and when, the run's resolved
    recipe (params), metrics and artifacts; ``--json`` has the history under ``version.promotions``."""
    from rich.console import Console
    from rich.table import Table

    from vitbench.registry.client import PROMOTION_TAG_PREFIX

    client = open_registry(home, create=False)
    with registry_errors():
        lineage = client.show(ref)
    if as_json:
        print_json(lineage.to_dict())
        return
    v = lineage.version
    console = Console()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("model", f"{v.name}/{v.version}")
    head.add_row("aliases", ", ".join(v.aliases) or "-")
    head.add_row("source", v.source)
    head.add_row("created", _when(v.created_ms))
    head.add_row("run", f"{v.run_id or '-'} ({lineage.run_name or '-'}, {lineage.run_status or '-'})")
    head.add_row("experiment", lineage.experiment or "-")
    if v.tags.get("pretrained_from"):
        head.add_row(
            "pre-trained from", f"{v.tags['pretrained_from']} (sha256 {v.tags.get('pretrained_sha256', '?')})"
        )
    console.print(head)
    for title, rows in (
        ("Tags", sorted((k, t) for k, t in v.tags.items() if not k.startswith(PROMOTION_TAG_PREFIX))),
        ("Metrics (latest)", sorted((k, f"{val:.6g}") for k, val in lineage.metrics.items())),
        ("Params (resolved recipe)", sorted(lineage.params.items())),
    ):
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="cyan")
        table.add_column(overflow="fold")
        for key, val in rows:
            table.add_row(key, val)
        if rows:
            console.print(table)
    if lineage.artifacts:
        console.print("[bold]Artifacts:[/] " + ", ".join(lineage.artifacts))
    history = Table(title="Promotion history", title_justify="left")
    for col in ("when (UTC)", "event", "alias", "by", "from/to"):
        history.add_column(col, overflow="fold")
    for e in v.promotions:
        moved = f"from {e.previous}" if e.previous else f"to {e.next}" if e.next else "-"
        history.add_row(e.at, e.action, e.alias, f"{e.by} ({e.identity})", moved)
    console.print(history if v.promotions else "[bold]Promotion history:[/] none recorded")


def promote_cmd(
    ref: str = typer.Argument(..., help="Model reference to promote: NAME/VERSION or NAME@ALIAS."),
    alias: str = typer.Option("champion", "--alias", help="Alias to point at this version."),
    home: HomeOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print the promoted version as JSON."),
) -> None:
    """Point an alias (default ``champion``) at a version; the alias moves off any other version."""
    from rich.console import Console

    client = open_registry(home, create=False)
    with registry_errors():
        info = client.promote(ref, alias)
    if as_json:
        print_json(info.to_dict())
        return
    last = info.promotions[-1] if info.promotions else None
    recorded = f"; recorded: {last.by} at {last.at}" if last else ""
    Console().print(
        f"{info.name}@{alias} → version {info.version} (sha256 {info.tags.get('sha256', '-')[:12]}){recorded}"
    )


def download_cmd(
    ref: str = typer.Argument(..., help="Model reference: NAME@ALIAS or NAME/VERSION."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Folder to write the checkpoint into."),
    force: bool = typer.Option(
        False, "--force", help="Replace a different checkpoint of the same name already in --out."
    ),
    home: HomeOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print path, sha256 and version as JSON."),
) -> None:
    """Download a version's checkpoint and verify its SHA-256; a tampered artifact is refused.

    A different checkpoint already in --out (another version) is kept unless --force."""
    from rich.console import Console

    client = open_registry(home, create=False)
    with registry_errors():
        result = client.download(ref, out, force=force)
    if as_json:
        print_json({"path": str(result.path), "sha256": result.sha256, "version": result.version.to_dict()})
        return
    Console().print(f"{result.path}  sha256 {result.sha256} verified ({result.version.ref})")


def register(app: typer.Typer) -> None:
    """Add the ``registry`` command group to the root app."""
    registry_app.command("list")(list_cmd)
    registry_app.command("show")(show_cmd)
    registry_app.command("promote")(promote_cmd)
    registry_app.command("download")(download_cmd)
    app.add_typer(registry_app, name="registry")
