"""``vitbench demo``: the study end to end on a CPU in a few minutes (the flow is
:mod:`vitbench.flows.demo`; this module parses the flags and prints progress and the summary)."""

from __future__ import annotations

import mimetypes
import shlex
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from vitbench.cli.common import HOME_HELP, fail, user_errors
from vitbench.flows.demo import DEMO_INITS, DEMO_MODEL, PIPELINE_STEPS, DemoReporter

if TYPE_CHECKING:
    from rich.console import Console

    from vitbench.flows.demo import PipelineResult
    from vitbench.registry.manifest import ParityReport
    from vitbench.trainer.runs import StudyEvent, StudyOutcome


def _parity_line(report: ParityReport) -> str:
    ok = sum(im.passed for im in report.images)
    ious = [im.min_box_iou for im in report.images if im.min_box_iou is not None]
    diffs = [im.max_score_diff for im in report.images if im.max_score_diff is not None]
    detail = []
    if ious:
        detail.append(f"min box IoU {min(ious):.5f}")
    if diffs:
        detail.append(f"max |Δscore| {max(diffs):.1e}")
    verdict = "passed" if report.passed else "FAILED"
    extra = f", {', '.join(detail)}" if detail else ""
    return f"{verdict} on {ok}/{len(report.images)} images ({report.runtime}{extra})"


def print_pipeline_summary(result: PipelineResult, console: Console) -> None:
    """Model reference, parity, detections and the commands that serve and query the model."""
    console.print(f"\n[bold]Pipeline[/] ({result.wall_s:.0f} s)")
    console.print(
        f"  model:      {result.version_ref} = {result.champion_ref} (registry home {result.home})",
        soft_wrap=True,
    )
    console.print(f"  parity:     {_parity_line(result.parity)}", soft_wrap=True)
    w, h = result.image_size
    console.print(
        f"  POST /detect {result.image} ({w}×{h}): {len(result.detections)} detection(s) "
        f"with score ≥ {result.score_threshold}",
        soft_wrap=True,
    )
    if result.detections:
        top = max(result.detections, key=lambda d: float(d["score"]))
        box = ", ".join(f"{v:.1f}" for v in top["box"])
        console.print(
            f"  top:        {top['label_name']} {float(top['score']):.3f} box [{box}] (x1, y1, x2, y2)"
        )
    home = shlex.quote(str(result.home))
    content_type = mimetypes.guess_type(result.image.name)[0] or "image/jpeg"
    console.print("serve it:", style="bold")
    console.print(f"  vitbench serve --model {result.champion_ref} --home {home}", soft_wrap=True)
    console.print("then, from another shell:", style="bold")
    console.print(
        f"  curl -s -X POST -H 'content-type: {content_type}' "
        f"--data-binary @{shlex.quote(str(result.image))} http://127.0.0.1:8000/detect",
        soft_wrap=True,
    )


class RichReporter(DemoReporter):
    """Prints spinners, the data counts, the study's events and table, and each pipeline step's result."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def status(self, text: str) -> AbstractContextManager[None]:
        return cast(AbstractContextManager[None], self.console.status(text))

    def data_ready(self, data: Path, counts: dict[str, int]) -> None:
        self.console.print(f"data: {counts['train']} train / {counts['val']} val images in {data}")

    def study_event(self, event: StudyEvent) -> None:
        from vitbench.cli.bench_local import print_study_event

        print_study_event(event)

    def study_done(self, study: Path, outcome: StudyOutcome) -> None:
        from vitbench.cli.bench_local import print_report

        print_report(study)

    @contextmanager
    def step(self, number: int, title: str) -> Iterator[None]:
        t0 = time.perf_counter()
        with self.console.status(f"pipeline {number}/{PIPELINE_STEPS}: {title} ..."):
            yield
        self.console.print(
            f"[green]✓[/] pipeline {number}/{PIPELINE_STEPS}: {title} ({time.perf_counter() - t0:.1f} s)"
        )


def demo(
    out: Path = typer.Option(Path(".vitbench/demo"), "--out", help="Demo folder (data/ and study/)."),
    recipe: str = typer.Option("bench-tiny", "--recipe", help="Recipe to train (a CPU preset)."),
    images: int = typer.Option(400, "--images", min=10, help="Synthetic images in total (80% train)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data."),
    inits: str = typer.Option(
        DEMO_INITS,
        "--inits",
        help="Inits to try; those without weights are skipped (random needs none).",
    ),
    weights: list[str] = typer.Option([], "--weights", help="INIT=URI weights (repeatable)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Extra recipe overrides key=value, applied after the demo's schedule."
    ),
    do_register: bool = typer.Option(
        True,
        "--register/--no-register",
        help="Log the runs and register their final models (the pipeline needs it).",
    ),
    pipeline: bool = typer.Option(
        True,
        "--pipeline/--no-pipeline",
        help="After the study: promote the random run's model to champion, export it to ONNX "
        "(parity check), and answer a val image with the service in-process.",
    ),
    model_name: str = typer.Option(DEMO_MODEL, "--model-name", help="Registered model name of the runs."),
    home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
    threads: int = typer.Option(
        0,
        "--threads",
        min=0,
        help="torch CPU threads (0: half the cores, the rest feed the data loader).",
    ),
) -> None:
    """Synthesize data, train the tiny preset per init, evaluate, print the table and the plot path."""
    from rich.console import Console

    from vitbench.cli.bench_local import parse_weights_option
    from vitbench.flows.demo import DemoError, DemoRequest, PipelineStepError, run_demo

    console = Console(stderr=True, highlight=False)
    request = DemoRequest(
        out=out,
        recipe=recipe,
        images=images,
        seed=seed,
        inits=tuple(s.strip() for s in inits.split(",") if s.strip()),
        weights=parse_weights_option(weights),
        overrides=tuple(overrides),
        register=do_register,
        pipeline=pipeline,
        model_name=model_name,
        home=home,
        threads=threads,
    )
    try:
        with user_errors():
            outcome = run_demo(request, RichReporter(console))
    except DemoError as exc:
        fail(str(exc))
    except PipelineStepError as exc:
        fail(str(exc), code=1)
    if outcome.pipeline is not None:
        print_pipeline_summary(outcome.pipeline, Console(highlight=False))
    console.print(f"demo finished in {outcome.wall_s / 60:.1f} min")
    if outcome.study_outcome.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""

    app.command("demo")(demo)
