"""``vitbench train`` (one run: recipe × init on a dataset) and ``vitbench eval`` (COCO AP of a checkpoint).

Exit codes: 0 done, 2 user mistake (bad recipe/init/data/flags), 143 interrupted by SIGTERM after saving
a checkpoint (rerun with ``--resume``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from vitbench.cli.common import (
    DEVICE_HELP,
    HOME_HELP,
    check_device_option,
    check_folder_option,
    fail,
    print_json,
    resolve_home,
)


def build_recipe(recipe: str, init: str, overrides: list[str]) -> Any:
    """The run's final recipe: built-in ``recipe`` → the init's tuned overrides → ``--set`` overrides."""
    from vitbench.trainer.inits import InitError, apply_init_overrides
    from vitbench.trainer.recipes import RecipeError, apply_overrides, get_recipe

    try:
        return apply_overrides(apply_init_overrides(get_recipe(recipe), init), overrides)
    except (RecipeError, InitError) as exc:
        raise typer.BadParameter(str(exc)) from None


def run_training(
    *,
    recipe: str,
    init: str,
    data: Path,
    out: Path,
    weights: str | None = None,
    weights_sha256: str | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
    device: str = "auto",
    register: bool = False,
    model_name: str | None = None,
    experiment: str = "vitbench",
    home: Path | None = None,
    grace_period: float = 60.0,
    progress: bool = True,
    log_period: int = 10,
    description: str | None = None,
    echo_metrics: bool = False,
) -> Any:
    """Run one training run from CLI-level arguments; returns the :class:`TrainResult`.

    Reads torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK), installs the SIGTERM handler and turns
    user mistakes into ``fail(...)`` (exit 2). Raises ``typer.Exit(143)`` when interrupted.
    ``echo_metrics`` also writes every metrics record as a JSON line to stderr.
    """
    from vitbench.trainer.data.check import DatasetError
    from vitbench.trainer.engine import distributed as du
    from vitbench.trainer.engine.hooks import Hook, JsonlMetricsHook, RichProgressHook
    from vitbench.trainer.engine.loop import (
        EXIT_INTERRUPTED,
        TrainConfig,
        Trainer,
        TrainingInterruptedError,
        TrainingSetupError,
    )
    from vitbench.trainer.inits import InitError

    final_recipe = build_recipe(recipe, init, list(overrides or []))
    info = du.DistInfo.from_env(os.environ)
    cfg = TrainConfig(
        recipe=final_recipe,
        init=init,
        data_root=data,
        out_dir=out,
        weights=weights,
        weights_sha256=weights_sha256,
        resume=resume,
        device=device,
        dist=info,
        stop_grace_s=grace_period,
        log_period=log_period,
    )
    hooks: list[Hook] = [JsonlMetricsHook(echo=sys.stderr if echo_metrics else None)]
    bar: RichProgressHook | None = None
    if progress and info.is_main:
        bar = RichProgressHook(description or f"{init} · {final_recipe.name}")
        hooks.append(bar)
    if register and info.is_main:
        from vitbench.cli.common import open_registry
        from vitbench.trainer.engine.registry_hook import RegistryHook

        hooks.append(
            RegistryHook(
                client=open_registry(resolve_home(home)),
                model_name=model_name or f"vitbench-{recipe}",
                experiment=experiment,
                tags={"init": init, "recipe": final_recipe.name, "dataset": str(data)},
            )
        )
    try:
        du.init_process_group(info, du.select_device(info, device))
        trainer = Trainer(cfg, hooks)
        previous = signal.signal(signal.SIGTERM, lambda *_: trainer.request_stop())
        try:
            return trainer.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
    except TrainingInterruptedError as exc:
        if bar:
            bar.close()
        typer.echo(
            f"interrupted: saved iteration {exc.iteration} to {exc.checkpoint}; rerun with --resume", err=True
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (DatasetError, TrainingSetupError, InitError) as exc:
        if bar:
            bar.close()
        fail(str(exc))
    finally:
        if bar:
            bar.close()
        du.destroy_process_group()


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``eval`` to the root app."""

    @app.command("train")
    def train(
        recipe: str = typer.Option(..., "--recipe", "-r", help="Recipe name (see `vitbench recipes`)."),
        init: str = typer.Option("random", "--init", "-i", help="Initialization (see `vitbench inits`)."),
        data: Path = typer.Option(
            ..., "--data", help="COCO-format dataset folder (train/, val/, annotations/)."
        ),
        out: Path = typer.Option(
            ...,
            "--out",
            help="Run folder: recipe.json, metrics.jsonl, checkpoints/, ...",
            callback=check_folder_option,
        ),
        weights: str | None = typer.Option(
            None, "--weights", help="Pre-trained weights: path, http(s):// or s3://."
        ),
        weights_sha256: str | None = typer.Option(
            None, "--weights-sha256", help="Expected sha256 of --weights."
        ),
        resume: bool = typer.Option(
            False, "--resume", help="Continue from the newest complete checkpoint in --out."
        ),
        overrides: list[str] = typer.Option(
            [], "--set", help="Recipe override key=value (repeatable), e.g. --set solver.max_iters=100."
        ),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP, callback=check_device_option),
        do_register: bool = typer.Option(
            True, "--register/--no-register", help="Log the run and register the final model in the registry."
        ),
        model_name: str | None = typer.Option(
            None, "--model-name", help="Registered model name (default vitbench-<recipe>)."
        ),
        experiment: str = typer.Option("vitbench", "--experiment", help="MLflow experiment of the run."),
        home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
        grace_period: float = typer.Option(
            60.0, "--grace-period", help="Seconds allowed to save a checkpoint after SIGTERM before exiting."
        ),
        log_period: int = typer.Option(10, "--log-period", min=1, help="Log metrics every N iterations."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        as_json: bool = typer.Option(
            False,
            "--json",
            help=(
                "Print the final metrics as JSON on stdout and every metrics record as a JSON line on "
                "stderr (a pod's log then shows live progress to `vitbench bench status`)."
            ),
        ),
    ) -> None:
        """Train one Mask R-CNN run (recipe × init) and evaluate it on the val split."""
        result = run_training(
            recipe=recipe,
            init=init,
            data=data,
            out=out,
            weights=weights,
            weights_sha256=weights_sha256,
            resume=resume,
            overrides=overrides,
            device=device,
            register=do_register,
            model_name=model_name,
            experiment=experiment,
            home=home,
            grace_period=grace_period,
            progress=progress,
            log_period=log_period,
            echo_metrics=as_json,
        )
        if int(os.environ.get("RANK", "0")) != 0:
            return
        if as_json:
            print_json(
                {"iteration": result.iteration, "metrics": result.metrics, "wall_time_s": result.wall_time_s}
            )
        else:
            _print_metrics(result.metrics, f"{init} · {recipe} · {result.iteration} iterations")

    @app.command("eval")
    def eval_(
        checkpoint: Path = typer.Option(
            ..., "--checkpoint", help="A model_final.pth or periodic checkpoint."
        ),
        data: Path = typer.Option(..., "--data", help="COCO-format dataset folder."),
        split: str = typer.Option("val", "--split", help="Which split to evaluate."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP, callback=check_device_option),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    ) -> None:
        """COCO box and mask AP of a checkpoint; writes eval_<split>.json next to it."""
        import torch

        from vitbench.trainer.data import split_paths
        from vitbench.trainer.data.check import check_split
        from vitbench.trainer.data.coco import CocoDetection
        from vitbench.trainer.engine import distributed as du
        from vitbench.trainer.engine.checkpoint import CheckpointError, load_inference_model
        from vitbench.trainer.evaluation.coco_eval import evaluate

        problems = check_split(data, split)
        if problems:
            fail(
                f"{len(problems)} problem(s) in {data} ({split}):\n"
                + "\n".join(f"  {p}" for p in problems[:50])
            )
        dev = du.select_device(du.DistInfo(), device)
        try:
            model, _recipe, meta = load_inference_model(checkpoint, map_location=dev)
        except CheckpointError as exc:
            fail(str(exc))
        img_dir, ann = split_paths(data, split)
        ds = CocoDetection(img_dir, ann, None, train=False)
        if ds.class_names != list(meta["class_names"]):
            fail(
                f"the dataset's categories {ds.class_names} differ from the checkpoint's "
                f"{list(meta['class_names'])}"
            )
        with torch.no_grad():
            metrics = evaluate(model, ds, dev, batch_size=2)
        out_file = checkpoint.parent / f"eval_{split}.json"
        payload = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "metrics": metrics}
        tmp = out_file.with_name(f".{out_file.name}.tmp")
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        os.replace(tmp, out_file)
        if as_json:
            print_json(payload)
        else:
            _print_metrics(metrics, f"{checkpoint} on {data} ({split})")


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
