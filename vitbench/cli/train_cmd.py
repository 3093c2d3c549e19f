"""``vitbench train`` (one run: recipe × init on a dataset) and ``vitbench eval`` (COCO AP of a checkpoint).

Exit codes: 0 done, 2 user mistake (bad recipe/init/data/flags, ``--resume`` of a different run), 143
interrupted by SIGTERM and 130 by SIGINT (Ctrl-C) after saving a checkpoint (the resume command is
printed); a second Ctrl-C exits at once without saving.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from vitbench.cli.common import check_folder_option, print_json, user_errors
from vitbench.cli.options import DeviceOpt, GracePeriodOpt, HomeOpt, ProgressOpt


def train(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe name (see `vitbench recipes`).")],
    data: Annotated[
        Path, typer.Option("--data", help="COCO-format dataset folder (train/, val/, annotations/).")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Run folder: recipe.json, metrics.jsonl, checkpoints/, ...",
            callback=check_folder_option,
        ),
    ],
    init: Annotated[
        str, typer.Option("--init", "-i", help="Initialization (see `vitbench inits`).")
    ] = "random",
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="Pre-trained weights: path, http(s):// or s3://, or a registry reference NAME@ALIAS / "
            "NAME/VERSION (e.g. from `vitbench pretrain`; downloaded and sha256-verified, its init tag "
            "is used when --init is left at random).",
        ),
    ] = None,
    weights_sha256: Annotated[
        str | None, typer.Option("--weights-sha256", help="Expected sha256 of --weights.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from the newest complete checkpoint in --out; refused (naming each difference) "
            "unless recipe, init, weights and dataset are the run's own.",
        ),
    ] = False,
    overrides: list[str] = typer.Option(
        [], "--set", help="Recipe override key=value (repeatable), e.g. --set solver.max_iters=100."
    ),
    device: DeviceOpt = "auto",
    do_register: Annotated[
        bool,
        typer.Option(
            "--register/--no-register", help="Log the run and register the final model in the registry."
        ),
    ] = True,
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="Registered model name (default vitbench-<recipe>).")
    ] = None,
    experiment: Annotated[
        str, typer.Option("--experiment", help="MLflow experiment of the run.")
    ] = "vitbench",
    home: HomeOpt = None,
    grace_period: GracePeriodOpt = 60.0,
    log_period: Annotated[
        int, typer.Option("--log-period", min=1, help="Log metrics every N iterations.")
    ] = 10,
    progress: ProgressOpt = True,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the train record stream (JSON lines, schema in vitbench.trainer.records): the final "
            "result record on stdout, every metrics record on stderr (a pod's log then shows live "
            "progress to `vitbench bench status`).",
        ),
    ] = False,
) -> None:
    """Train one Mask R-CNN run (recipe × init) and evaluate it on the val split."""
    from vitbench.trainer import records
    from vitbench.trainer.distributed import DistInfo
    from vitbench.trainer.engine.loop import EXIT_INTERRUPTED, TrainingInterruptedError
    from vitbench.trainer.runs import Registration, RunRequest, train_run

    request = RunRequest(
        recipe=recipe,
        init=init,
        data=data,
        out=out,
        weights=weights,
        weights_sha256=weights_sha256,
        resume=resume,
        overrides=tuple(overrides),
        device=device,
        registration=Registration(model_name, experiment, home) if do_register else None,
        grace_period=grace_period,
        log_period=log_period,
        progress=progress,
        echo_records=as_json,
    )
    try:
        with user_errors():
            result = train_run(request)
    except TrainingInterruptedError as exc:
        if DistInfo.from_env(os.environ).is_main:
            typer.echo(
                f"interrupted ({signal.Signals(exc.signal).name}): saved iteration {exc.iteration} to "
                f"{exc.checkpoint}\nresume with: {resume_command(sys.argv)}",
                err=True,
            )
        raise typer.Exit(exc.exit_code or EXIT_INTERRUPTED) from None
    if not DistInfo.from_env(os.environ).is_main:
        return
    if result.registered:
        typer.echo(f"registered {result.registered}", err=True)
    if as_json:
        typer.echo(records.dumps(records.result_record(result.iteration, result.metrics, result.wall_time_s)))
    else:
        _print_metrics(result.metrics, f"{init} · {recipe} · {result.iteration} iterations")


def eval_(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A model_final.pth or periodic checkpoint."),
    data: Path = typer.Option(..., "--data", help="COCO-format dataset folder."),
    split: str = typer.Option("val", "--split", help="Which split to evaluate."),
    device: DeviceOpt = "auto",
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """COCO box and mask AP of a checkpoint; writes eval_<split>.json next to it."""
    from vitbench.trainer.runs import evaluate_checkpoint

    with user_errors():
        outcome = evaluate_checkpoint(checkpoint, data, split, device)
    if as_json:
        print_json(outcome.payload())
    else:
        _print_metrics(outcome.metrics, f"{checkpoint} on {data} ({split})")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``eval`` to the root app."""

    app.command("train")(train)

    app.command("eval")(eval_)


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same arguments plus ``--resume``."""
    args = ["vitbench", *argv[1:]]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(args)


def _print_metrics(metrics: dict[str, float], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        table.add_column(name, justify="right")
    for kind in ("bbox", "segm"):
        row = [kind] + [
            f"{metrics[f'{kind}/{n}']:.1f}" if f"{kind}/{n}" in metrics else "–"
            for n in ("AP", "AP50", "AP75", "APs", "APm", "APl")
        ]
        table.add_row(*row)
    Console().print(table)
