"""``vitbench pretrain``: pre-train the study's ViT with MAE, supervised (DeiT) or MoCo v3 on your images.

Thin: parses options and calls :func:`vitbench.trainer.pretrain.flow.run_pretraining`. Exit codes:
0 done, 2 user mistake, 3 registry unreachable, 143 interrupted by SIGTERM after saving a checkpoint
(rerun with ``--resume``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitbench.cli.common import check_folder_option, fail, print_json, user_errors
from vitbench.cli.options import DeviceOpt, GracePeriodOpt, HomeOpt, ProgressOpt


def pretrain(
    method: Annotated[str, typer.Option("--method", "-m", help="mae, supervised or mocov3.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="mae/mocov3: any folder of images (recursive) or a COCO dataset (its train images); "
            "supervised: an ImageFolder tree (one sub-folder per class).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Run folder: release file(s), checkpoints/, metrics.jsonl.",
            callback=check_folder_option,
        ),
    ],
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe",
            "-r",
            help="Pre-training recipe: tiny (bench-tiny's ViT, 64 px, CPU), b or l (ViT-B/L, 224 px, the "
            "papers' schedules), or a full name such as mae-b.",
        ),
    ] = "tiny",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue from the newest checkpoint in --out (with the run's saved recipe)."
        ),
    ] = False,
    overrides: list[str] = typer.Option(
        [], "--set", help="Recipe override key=value (repeatable), e.g. --set solver.epochs=10."
    ),
    device: DeviceOpt = "auto",
    do_register: Annotated[
        bool, typer.Option("--register/--no-register", help="Log the run and register its release file.")
    ] = True,
    model_name: Annotated[
        str | None,
        typer.Option("--model-name", help="Registered model name (default: the recipe name, e.g. mae-tiny)."),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = "vitbench-pretrain",
    home: HomeOpt = None,
    grace_period: GracePeriodOpt = 60.0,
    log_period: Annotated[int, typer.Option("--log-period", min=1, help="Log metrics every N steps.")] = 10,
    progress: ProgressOpt = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Pre-train a ViT and write the method's official checkpoint format (loadable by its init)."""
    from vitbench.trainer.engine.loop import EXIT_INTERRUPTED, TrainingInterruptedError
    from vitbench.trainer.pretrain.flow import PretrainError, PretrainRun, run_pretraining
    from vitbench.trainer.runs import Registration

    try:
        with user_errors():
            outcome = run_pretraining(
                PretrainRun(
                    method=method,
                    recipe=recipe,
                    data=data,
                    out=out,
                    overrides=overrides,
                    resume=resume,
                    device=device,
                    log_period=log_period,
                    grace_period=grace_period,
                    progress=progress,
                    registration=Registration(model_name, experiment, home) if do_register else None,
                    echo_records=as_json,
                )
            )
    except TrainingInterruptedError as exc:
        typer.echo(
            f"interrupted: saved step {exc.iteration} to {exc.checkpoint}; rerun with --resume", err=True
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except PretrainError as exc:
        fail(str(exc))
    summary = {
        "iteration": outcome.iteration,
        "wall_time_s": round(outcome.wall_time_s, 2),
        "images_per_s": None if outcome.images_per_s is None else round(outcome.images_per_s, 1),
        "files": {init: str(path) for init, path in outcome.files},
        "detector_recipe": outcome.detector_recipe,
        "registered": outcome.registered,
    }
    if as_json:
        print_json(summary)
        return
    for init, path in outcome.files:
        typer.echo(
            f"{init}: {path}  (vitbench inits check --init {init} --path {path} "
            f"--recipe {outcome.detector_recipe})"
        )
    speed = f", {summary['images_per_s']} images/s" if outcome.images_per_s else ""
    typer.echo(f"{outcome.iteration} steps in {summary['wall_time_s']} s{speed}", err=True)
    if outcome.registered:
        typer.echo(f"registered {outcome.registered} (fine-tune with --weights {outcome.registered})")


def register(app: typer.Typer) -> None:
    """Add ``pretrain`` to the root app."""
    app.command("pretrain")(pretrain)
