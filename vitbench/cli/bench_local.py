"""``vitbench bench run`` (train every init in turn, locally or under torchrun) and ``bench report``.

Weights for inits that need them come from ``--weights INIT=URI`` or the environment variable
``VITBENCH_WEIGHTS_<INIT>`` (e.g. ``VITBENCH_WEIGHTS_MAE=/ckpt/mae_pretrain_vit_base.pth``); an init
without weights, or one that does not apply to the recipe's backbone, is skipped with a message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vitbench.cli.common import check_folder_option, fail, print_json, user_errors
from vitbench.cli.options import DeviceOpt, HomeOpt

if TYPE_CHECKING:
    from vitbench.trainer.runs import StudyEvent, StudyOutcome, StudyRequest


def print_study_event(event: StudyEvent) -> None:
    """One line on stderr per skipped, kept or failed init."""
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    if event.kind == "skipped":
        err.print(f"[yellow]skipping {event.init}[/]: {event.detail}")
    elif event.kind == "kept":
        err.print(f"[green]{event.init}[/]: already finished in {event.detail} (same run), keeping it")
    else:
        err.print(f"[bold red]error:[/] {event.detail}", soft_wrap=True)


def run_study_cli(request: StudyRequest) -> StudyOutcome:
    """:func:`vitbench.trainer.runs.run_study` with events printed, errors as exit codes (2 user
    mistake, 143 interrupted); prints the list of failed inits."""
    from rich.console import Console

    from vitbench.trainer.engine.loop import EXIT_INTERRUPTED, TrainingInterruptedError
    from vitbench.trainer.runs import run_study

    try:
        with user_errors():
            outcome = run_study(request, on_event=print_study_event)
    except TrainingInterruptedError as exc:
        import signal
        import sys

        from vitbench.cli.train_cmd import resume_command

        typer.echo(
            f"interrupted ({signal.Signals(exc.signal).name}): saved iteration {exc.iteration} to "
            f"{exc.checkpoint}\nresume with: {resume_command(sys.argv)}",
            err=True,
        )
        raise typer.Exit(exc.exit_code or EXIT_INTERRUPTED) from None
    if outcome.failed:
        Console(stderr=True, highlight=False).print(
            f"[red]failed[/]: {', '.join(outcome.failed)} (see the errors above)"
        )
    return outcome


def parse_weights_option(items: Sequence[str]) -> dict[str, str]:
    """``--weights INIT=URI`` items as a dict; a bad item is a usage error."""
    from vitbench.trainer.study import parse_weights

    try:
        return parse_weights(items)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def print_report(out: Path, as_json: bool = False, runs: list[Any] | None = None) -> None:
    """Write the study's files under ``out`` and print the table (or JSON) and the file paths.

    ``runs`` (rows from :func:`trainer.study.runs_from_registry`) replaces the run folders under ``out``.
    """
    from rich.console import Console
    from rich.table import Table

    from vitbench.trainer.study import write_report

    try:
        files = write_report(out, runs)
    except FileNotFoundError as exc:
        fail(str(exc))
    if as_json:
        print_json(
            {
                "runs": [r.row() for r in files.runs],
                "unfinished": [str(p) for p in files.unfinished],
                "markdown": str(files.markdown),
                "csv": str(files.csv),
                "plot": str(files.plot),
            }
        )
        return
    table = Table(title=f"Study: {out}")
    for col, justify in (
        ("init", "left"),
        ("recipe", "left"),
        ("APbox", "right"),
        ("APmask", "right"),
        ("AP50", "right"),
        ("AP75", "right"),
        ("epochs", "right"),
        ("iters", "right"),
        ("wall (min)", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=col in ("init", "recipe"))  # type: ignore[arg-type]
    for r in files.runs:
        row = r.row()
        table.add_row(
            row["init"],
            row["recipe"],
            *[("–" if row[k] is None else f"{row[k]:.1f}") for k in ("APbox", "APmask", "AP50", "AP75")],
            f"{row['epochs']:.2f}",
            str(row["iterations"]),
            f"{row['wall_time_min']:.2f}",
        )
    console = Console()
    console.print(table)
    for p in files.unfinished:
        console.print(f"[yellow]unfinished[/]: {p} (rerun `bench run` with --resume)")
    console.print(f"table: {files.markdown}\ncsv:   {files.csv}\nplot:  {files.plot}")


def run(
    inits: str = typer.Option("random", "--inits", help="Comma-separated inits, e.g. random,supervised,mae."),
    recipe: str = typer.Option(..., "--recipe", "-r", help="Recipe name, e.g. bench-b or bench-tiny."),
    data: Path = typer.Option(..., "--data", help="COCO-format dataset folder."),
    out: Path = typer.Option(
        ..., "--out", help="Study folder; each init trains into OUT/<init>/.", callback=check_folder_option
    ),
    weights: list[str] = typer.Option(
        [], "--weights", help="INIT=URI weights (repeatable); or env VITBENCH_WEIGHTS_<INIT>."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Recipe override key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue unfinished runs from their checkpoints."),
    device: DeviceOpt = "auto",
    do_register: bool = typer.Option(
        True, "--register/--no-register", help="Log each run and register its final model."
    ),
    model_name: str | None = typer.Option(None, "--model-name", help="Registered model name."),
    home: HomeOpt = None,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the final table as JSON."),
) -> None:
    """Train each initialization in turn (skipping those without weights), then print the table."""
    from vitbench.trainer.distributed import DistInfo
    from vitbench.trainer.rundir import RunDir
    from vitbench.trainer.runs import Registration, StudyRequest

    names = [s.strip() for s in inits.split(",") if s.strip()]
    if not names:
        raise typer.BadParameter("--inits is empty; expected e.g. random,mae")
    outcome = run_study_cli(
        StudyRequest(
            inits=tuple(names),
            recipe=recipe,
            data=data,
            out=out,
            weights=parse_weights_option(weights),
            overrides=tuple(overrides),
            resume=resume,
            device=device,
            registration=Registration(model_name, home=home) if do_register else None,
            progress=progress,
        )
    )
    if not DistInfo.from_env(os.environ).is_main:
        return
    if outcome.nothing_to_run:
        fail("every init was skipped; nothing was trained")
    if outcome.failed and not any(RunDir(out / p.init).is_finished() for p in outcome.plan):
        raise typer.Exit(1)
    print_report(out, as_json)
    if outcome.failed:
        raise typer.Exit(1)


def report(
    out: Path = typer.Option(
        ..., "--out", help="Study folder written by `bench run`; with --registry, where to write."
    ),
    from_registry: bool = typer.Option(
        False,
        "--registry",
        help=(
            "Read the results from the model registry instead of run folders (the newest registered "
            "version of each init): how a study that ran as Kubernetes Jobs is reported."
        ),
    ),
    models: list[str] = typer.Option(
        [], "--model", help="With --registry: registered model names to read (repeatable; default all)."
    ),
    recipe: str | None = typer.Option(
        None, "--recipe", help="With --registry: keep only versions trained with this recipe."
    ),
    home: HomeOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print rows and file paths as JSON."),
) -> None:
    """Write study.md, study.csv and study_ap_vs_epoch.png into OUT and print the table.

    The rows come from the finished runs under OUT, or with --registry from the registry
    (MLFLOW_TRACKING_URI, or the embedded one under --home).
    """
    runs = None
    if from_registry:
        from vitbench.cli.common import open_registry, registry_errors
        from vitbench.trainer.study import runs_from_registry

        with registry_errors():
            runs = runs_from_registry(open_registry(home, create=False), models or None, recipe)
    print_report(out, as_json, runs)


def register(bench: typer.Typer) -> None:
    """Add ``run`` and ``report`` to the ``bench`` group."""

    bench.command("run")(run)

    bench.command("report")(report)
