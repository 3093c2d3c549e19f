"""``vitbench demo``: the study at toy scale on a CPU in minutes (the flow is
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
from vitbench.flows.demo import DEMO_INITS, DEMO_MODEL, DEMO_PRETRAIN, PIPELINE_STEPS, DemoReporter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from vitbench.flows.demo import PipelineResult, PretrainSummary
    from vitbench.flows.parallel import JobStatus
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
    """Prints spinners, the data counts, one progress bar per job, the study's events and table, and
    each pipeline step's result."""

    def __init__(self, console: Console, bars: bool = True) -> None:
        from rich.progress import Progress

        self.console = console
        self.bars = bars
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.states: dict[str, str] = {}

    def status(self, text: str) -> AbstractContextManager[None]:
        return cast(AbstractContextManager[None], self.console.status(text))

    def data_ready(self, data: Path, counts: dict[str, int]) -> None:
        line = f"data: {counts['train']} train / {counts['val']} val labeled images"
        if counts.get("unlabeled"):
            line += f", {counts['unlabeled']} unlabeled images and {counts.get('crops', 0)} object crops"
        self.console.print(f"{line} in {data}", soft_wrap=True)

    def job_update(self, job: JobStatus) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if not self.bars:
            if job.state != "waiting" and self.states.get(job.name) != job.state:
                extra = f" ({job.wall_s / 60:.1f} min)" if job.state == "done" else ""
                self.console.print(f"{job.name}: {job.state}{extra}")
            self.states[job.name] = job.state
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description:<22}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[state]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.progress.start()
        if job.name not in self.tasks:
            self.tasks[job.name] = self.progress.add_task(
                job.name, total=job.total or None, state=job.state, start=False
            )
        task = self.tasks[job.name]
        if job.state == "running":
            self.progress.start_task(task)
        state = {"failed": "[red]failed[/]", "skipped": "[yellow]skipped[/]", "done": "[green]done[/]"}
        self.progress.update(task, completed=job.done, state=state.get(job.state, job.state))

    def jobs_done(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def pretrain_done(self, summary: PretrainSummary) -> None:
        speed = f", {summary.images_per_s:.0f} img/s" if summary.images_per_s else ""
        where = summary.registered or str(summary.release)
        line = f"[green]✓[/] pre-trained {summary.method}: {summary.iteration} steps in "
        self.console.print(f"{line}{summary.wall_time_s / 60:.1f} min{speed} → {where}", soft_wrap=True)

    def study_event(self, event: StudyEvent) -> None:
        from vitbench.cli.bench_local import print_study_event

        print_study_event(event)

    def study_done(self, study: Path, outcome: StudyOutcome) -> None:
        from vitbench.cli.bench_local import print_report

        print_report(study)

    def winner(self, init: str, box_ap: float) -> None:
        self.console.print(f"winner: [bold]{init}[/] (box AP {box_ap:.1f}); the pipeline runs on its model")

    @contextmanager
    def step(self, number: int, title: str) -> Iterator[None]:
        t0 = time.perf_counter()
        with self.console.status(f"pipeline {number}/{PIPELINE_STEPS}: {title} ..."):
            yield
        self.console.print(
            f"[green]✓[/] pipeline {number}/{PIPELINE_STEPS}: {title} ({time.perf_counter() - t0:.1f} s)"
        )


def _names(value: str) -> tuple[str, ...]:
    """``"a, b"`` → ``("a", "b")``; ``none`` or empty → ``()``."""
    items = tuple(s.strip() for s in value.split(",") if s.strip())
    return () if items == ("none",) else items


def demo(
    out: Path = typer.Option(
        Path(".vitbench/demo"), "--out", help="Demo folder (data/, pretrain/, study/, logs/)."
    ),
    recipe: str = typer.Option("bench-tiny", "--recipe", help="Detector recipe to fine-tune (a CPU preset)."),
    images: int = typer.Option(240, "--images", min=10, help="Labeled synthetic images (train + val)."),
    val_fraction: float = typer.Option(
        1 / 3,
        "--val-fraction",
        min=0.05,
        max=0.9,
        show_default="1/3",
        help="Share of the labeled images in val.",
    ),
    unlabeled: int = typer.Option(
        3000, "--unlabeled", min=0, help="Unlabeled images for pre-training (their object crops too)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data."),
    pretrain: str = typer.Option(
        DEMO_PRETRAIN,
        "--pretrain",
        help="Pre-training methods to run on the unlabeled images, comma-separated (mae, supervised, "
        "mocov3; mocov3 costs ≈ 3.5× mae), or none. Each one's init is fine-tuned next.",
    ),
    inits: str = typer.Option(
        DEMO_INITS,
        "--inits",
        help="Other inits to fine-tune (random needs no weights; an init given --weights is added).",
    ),
    weights: list[str] = typer.Option([], "--weights", help="INIT=URI weights (repeatable)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Fine-tuning overrides key=value, applied after the demo's schedule."
    ),
    pretrain_overrides: list[str] = typer.Option(
        [], "--pretrain-set", help="Pre-training overrides key=value, applied after the demo's."
    ),
    do_register: bool = typer.Option(
        True,
        "--register/--no-register",
        help="Log the runs and register their models (the pipeline needs it).",
    ),
    pipeline: bool = typer.Option(
        True,
        "--pipeline/--no-pipeline",
        help="After the study: promote the winner's model to champion, export it to ONNX "
        "(parity check), and answer a val image with the service in-process.",
    ),
    model_name: str = typer.Option(
        DEMO_MODEL,
        "--model-name",
        help="Registered model name of the detectors (pre-trainings: NAME-<method>).",
    ),
    home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
    jobs: int = typer.Option(
        0, "--jobs", min=0, help="Runs trained at once, one process each (0: one more than the cores)."
    ),
    threads: int = typer.Option(
        0, "--threads", min=0, help="torch CPU threads per run (0: the cores shared among the runs)."
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bars (off: one line a change)."
    ),
) -> None:
    """The study at toy scale: synthesize a label-scarce dataset and unlabeled images, pre-train the
    tiny ViT (mae, supervised), fine-tune random and each pre-trained init with the same schedule, print
    the table and the AP-vs-epoch plot, then register, promote, export and serve the winner."""
    from rich.console import Console

    from vitbench.cli.bench_local import parse_weights_option
    from vitbench.flows.demo import DemoError, DemoRequest, PipelineStepError, run_demo

    console = Console(stderr=True, highlight=False)
    request = DemoRequest(
        out=out,
        recipe=recipe,
        images=images,
        val_fraction=val_fraction,
        unlabeled=unlabeled,
        seed=seed,
        pretrain=_names(pretrain),
        inits=_names(inits),
        weights=parse_weights_option(weights),
        overrides=tuple(overrides),
        pretrain_overrides=tuple(pretrain_overrides),
        register=do_register,
        pipeline=pipeline,
        model_name=model_name,
        home=home,
        jobs=jobs,
        threads=threads,
        progress=progress,
    )
    try:
        with user_errors():
            outcome = run_demo(request, RichReporter(console, bars=progress))
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
