"""``vitbench bench run`` (train every init in turn, locally or under torchrun) and ``bench report``.

Weights for inits that need them come from ``--weights INIT=URI`` or the environment variable
``VITBENCH_WEIGHTS_<INIT>`` (e.g. ``VITBENCH_WEIGHTS_MAE=/ckpt/mae_pretrain_vit_base.pth``); an init
without weights, or one that does not apply to the recipe's backbone, is skipped with a message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
)

WEIGHTS_ENV_PREFIX = "VITBENCH_WEIGHTS_"


@dataclass(frozen=True)
class PlannedRun:
    """An init of the study: run it with ``weights`` or skip it for ``skip_reason``."""

    init: str
    weights: str | None
    skip_reason: str | None = None


def parse_weights(items: Sequence[str]) -> dict[str, str]:
    """``["mae=/p/mae.pth", ...]`` → ``{"mae": "/p/mae.pth"}``; raises BadParameter naming a bad item."""
    out: dict[str, str] = {}
    for item in items:
        init, sep, uri = item.partition("=")
        if not sep or not init.strip() or not uri.strip():
            raise typer.BadParameter(
                f"--weights {item!r}: expected INIT=URI, e.g. mae=/ckpt/mae_pretrain_vit_base.pth"
            )
        out[init.strip()] = uri.strip()
    return out


def plan_runs(
    inits: Sequence[str], recipe: Any, weights: Mapping[str, str], env: Mapping[str, str]
) -> list[PlannedRun]:
    """Decide per init whether it can run: known init, applies to the recipe's backbone, weights at hand."""
    from vitbench.trainer.inits import InitError, get_init

    plan: list[PlannedRun] = []
    for init in inits:
        try:
            spec = get_init(init)
        except InitError as exc:
            raise typer.BadParameter(str(exc)) from None
        uri = weights.get(init) or env.get(WEIGHTS_ENV_PREFIX + init.upper()) or None
        if recipe.backbone.kind not in spec.applies_to:
            reason = f"does not apply to recipe {recipe.name!r} (backbone {recipe.backbone.kind!r})"
            plan.append(PlannedRun(init, None, reason))
        elif spec.needs_weights and not uri:
            where = f" (published file: {spec.url})" if spec.url else ""
            reason = (
                f"needs weights{where}: pass --weights {init}=PATH or set {WEIGHTS_ENV_PREFIX}{init.upper()}"
            )
            plan.append(PlannedRun(init, None, reason))
        else:
            plan.append(PlannedRun(init, uri if spec.needs_weights else None))
    return plan


def run_study(
    *,
    inits: Sequence[str],
    recipe: str,
    data: Path,
    out: Path,
    weights: Mapping[str, str],
    overrides: Sequence[str] = (),
    resume: bool = False,
    device: str = "auto",
    register: bool = False,
    model_name: str | None = None,
    home: Path | None = None,
    progress: bool = True,
) -> tuple[list[PlannedRun], list[str]]:
    """Train each runnable init into ``out/<init>``; finished runs (``eval.json``) are kept, not redone.

    Returns the plan and the inits whose run failed with a user-facing error (e.g. weights that do not
    fit the recipe); those are reported and the study goes on with the next init.
    """
    from rich.console import Console

    from vitbench.cli.train_cmd import build_recipe
    from vitbench.trainer.recipes import RecipeError, get_recipe

    err = Console(stderr=True, highlight=False)
    try:
        base = get_recipe(recipe)
    except RecipeError as exc:
        raise typer.BadParameter(str(exc)) from None
    plan = plan_runs(inits, base, weights, os.environ)
    failed: list[str] = []
    is_main = int(os.environ.get("RANK", "0")) == 0
    for p in plan:
        if p.skip_reason:
            if is_main:
                err.print(f"[yellow]skipping {p.init}[/]: {p.skip_reason}")
            continue
        run_dir = out / p.init
        if (run_dir / "eval.json").exists():
            if is_main:
                err.print(f"[green]{p.init}[/]: already finished in {run_dir}, keeping it")
            continue
        build_recipe(recipe, p.init, list(overrides))  # fail fast on bad overrides before training
        try:
            _train_one(
                p, recipe, data, run_dir, overrides, resume, device, register, model_name, home, progress
            )
        except typer.Exit as exc:
            if exc.exit_code != 2:  # an interruption (143) stops the whole study
                raise
            failed.append(p.init)  # the reason was printed; go on with the next init
    if failed:
        err.print(f"[red]failed[/]: {', '.join(failed)} (see the errors above)")
    return plan, failed


def _train_one(
    p: PlannedRun,
    recipe: str,
    data: Path,
    run_dir: Path,
    overrides: Sequence[str],
    resume: bool,
    device: str,
    register: bool,
    model_name: str | None,
    home: Path | None,
    progress: bool,
) -> None:
    from vitbench.cli.train_cmd import run_training

    run_training(
        recipe=recipe,
        init=p.init,
        data=data,
        out=run_dir,
        weights=p.weights,
        resume=resume or run_dir.joinpath("checkpoints").is_dir(),
        overrides=list(overrides),
        device=device,
        register=register,
        model_name=model_name,
        home=home,
        progress=progress,
        description=f"{p.init:>10} · {recipe}",
    )


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


def register(bench: typer.Typer) -> None:
    """Add ``run`` and ``report`` to the ``bench`` group."""

    @bench.command("run")
    def run(
        inits: str = typer.Option(
            "random", "--inits", help="Comma-separated inits, e.g. random,supervised,mae."
        ),
        recipe: str = typer.Option(..., "--recipe", "-r", help="Recipe name, e.g. bench-b or bench-tiny."),
        data: Path = typer.Option(..., "--data", help="COCO-format dataset folder."),
        out: Path = typer.Option(
            ...,
            "--out",
            help="Study folder; each init trains into OUT/<init>/.",
            callback=check_folder_option,
        ),
        weights: list[str] = typer.Option(
            [], "--weights", help=f"INIT=URI weights (repeatable); or env {WEIGHTS_ENV_PREFIX}<INIT>."
        ),
        overrides: list[str] = typer.Option([], "--set", help="Recipe override key=value (repeatable)."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue unfinished runs from their checkpoints."
        ),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP, callback=check_device_option),
        do_register: bool = typer.Option(
            True, "--register/--no-register", help="Log each run and register its final model."
        ),
        model_name: str | None = typer.Option(None, "--model-name", help="Registered model name."),
        home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        as_json: bool = typer.Option(False, "--json", help="Print the final table as JSON."),
    ) -> None:
        """Train each initialization in turn (skipping those without weights), then print the table."""
        names = [s.strip() for s in inits.split(",") if s.strip()]
        if not names:
            raise typer.BadParameter("--inits is empty; expected e.g. random,mae")
        plan, failed = run_study(
            inits=names,
            recipe=recipe,
            data=data,
            out=out,
            weights=parse_weights(weights),
            overrides=overrides,
            resume=resume,
            device=device,
            register=do_register,
            model_name=model_name,
            home=home,
            progress=progress,
        )
        if int(os.environ.get("RANK", "0")) != 0:
            return
        if all(p.skip_reason for p in plan):
            fail("every init was skipped; nothing was trained")
        if failed and not any((out / p.init / "eval.json").exists() for p in plan):
            raise typer.Exit(1)
        print_report(out, as_json)
        if failed:
            raise typer.Exit(1)

    @bench.command("report")
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
        home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
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
                runs = runs_from_registry(open_registry(home), models or None, recipe)
        print_report(out, as_json, runs)
