"""``vitbench demo``: the study end to end on a CPU in a few minutes.

Synthesizes a small COCO-format dataset, trains the tiny preset from random init (plus every init
whose weights are given with ``--weights INIT=URI`` or ``VITBENCH_WEIGHTS_<INIT>``), evaluates box
and mask AP on the synthetic val split, and prints the study's table and the plot's path. Then (unless
``--no-pipeline``) it walks the rest of the product on the random-init run: the model version the
training registered is promoted to ``champion``, exported to ONNX with the parity check (model.onnx +
manifest.json attached to the version), and one synthetic val image is answered by the real service app
in-process (``POST /detect``), ending with the commands that serve and query the model.
"""

from __future__ import annotations

import mimetypes
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vitbench.cli.common import HOME_HELP, fail, open_registry, resolve_home

if TYPE_CHECKING:
    from rich.console import Console

    from vitbench.registry.manifest import ParityReport

DEMO_MARKER = ".vitbench-demo"

# Demo schedule for the 128-px tiny preset on 2 CPU cores (see docs/benchmarks.md, "Training"): a higher
# lr and lighter RoI heads (2 convs each, 32 RoIs per image) so that random init learns in 1000 steps.
DEMO_OVERRIDES: tuple[str, ...] = (
    "solver.max_iters=1000",
    "solver.lr=8e-4",
    "solver.warmup_iters=25",
    "solver.batch_size=4",
    "solver.checkpoint_period=250",
    "solver.eval_period=250",
    "heads.roi_batch_size_per_image=32",
    "heads.box_convs=2",
    "heads.mask_convs=2",
    "data.num_workers=1",
)
# The demo's data: 3 shape categories, up to 3 larger objects per 96-128 px image (textures, occlusion
# and crowd regions as in the default generator).
DEMO_SYNTH = {"num_categories": 3, "max_objects": 3, "min_object_size": 28, "max_object_size": 64}
DEMO_MODEL = "vitbench-demo"
PIPELINE_INIT = "random"
PIPELINE_STEPS = 4
CHAMPION = "champion"
FINAL_CHECKPOINT = "model_final.pth"


class PipelineError(Exception):
    """A pipeline step could not be done; the message says why."""


@dataclass(frozen=True)
class PipelineResult:
    """What the pipeline part of the demo did, for the summary (and the tests)."""

    version_ref: str
    champion_ref: str
    parity: ParityReport
    image: Path
    image_size: tuple[int, int]
    detections: list[dict[str, Any]]
    score_threshold: float
    home: Path
    wall_s: float


@contextmanager
def _step(console: Console, number: int, title: str) -> Iterator[None]:
    """Show ``title`` as a spinner; a failure becomes ``error: pipeline step N/4 (title) failed: ...``."""
    t0 = time.perf_counter()
    try:
        with console.status(f"pipeline {number}/{PIPELINE_STEPS}: {title} ..."):
            yield
    except typer.Exit as exc:  # a helper already printed why (e.g. the registry cannot be opened)
        console.print(f"[bold red]error:[/] demo pipeline step {number}/{PIPELINE_STEPS} ({title}) failed")
        raise typer.Exit(exc.exit_code or 1) from None
    except Exception as exc:  # any failure of a step is reported with the step's name, no traceback
        reason = str(exc).strip() or type(exc).__name__
        fail(f"demo pipeline step {number}/{PIPELINE_STEPS} ({title}) failed: {reason}", code=1)
    console.print(
        f"[green]✓[/] pipeline {number}/{PIPELINE_STEPS}: {title} ({time.perf_counter() - t0:.1f} s)"
    )


def _val_image(data: Path) -> tuple[Path, int, int]:
    """The first image of the val split and its (width, height)."""
    import json

    from vitbench.trainer.data import split_paths

    img_dir, ann = split_paths(data, "val")
    images = json.loads(ann.read_text(encoding="utf-8")).get("images") or []
    if not images:
        raise PipelineError(f"{ann} lists no images")
    first = images[0]
    return img_dir / first["file_name"], int(first["width"]), int(first["height"])


def run_pipeline(
    *,
    run_dir: Path,
    data: Path,
    home: Path | None,
    model_name: str,
    console: Console,
    parity_images: int = 4,
) -> PipelineResult:
    """Registered version of ``run_dir``'s final checkpoint → ``champion`` → ONNX export with parity,
    attached to the version → one val image through the service app in-process.

    Exits with code 1 (``typer.Exit``) after printing which step failed and why.
    """
    from vitbench.registry.client import ModelVersionInfo
    from vitbench.registry.hashing import sha256_file

    t0 = time.perf_counter()
    home = resolve_home(home)
    final = run_dir / FINAL_CHECKPOINT
    info: ModelVersionInfo | None = None
    with _step(console, 1, f"find the registered version of {run_dir.name}/{FINAL_CHECKPOINT}"):
        if not final.is_file():
            raise PipelineError(f"{final} does not exist (the {run_dir.name} run did not finish)")
        client = open_registry(home)
        digest = sha256_file(final)
        mine = [v for v in client.list_versions(model_name) if v.tags.get("sha256") == digest]
        if not mine:
            raise PipelineError(f"no version of {model_name!r} holds {final} (sha256 {digest[:12]}...)")
        info = max(mine, key=lambda v: int(v.version))
    assert info is not None
    champion_ref = f"{info.name}@{CHAMPION}"
    with _step(console, 2, f"promote {info.ref} to {CHAMPION}"):
        client.promote(info.ref, CHAMPION)
    report: ParityReport | None = None
    with _step(console, 3, "export to ONNX, check parity, attach to the version"):
        report = _export(client, champion_ref, parity_images)
    assert report is not None
    image, width, height = data, 0, 0
    detections: list[dict[str, Any]] = []
    threshold = 0.0
    with _step(console, 4, "POST /detect a val image to the service app"):
        image, width, height = _val_image(data)
        detections, threshold = _detect(champion_ref, home, image)
    return PipelineResult(
        version_ref=info.ref,
        champion_ref=champion_ref,
        parity=report,
        image=image,
        image_size=(width, height),
        detections=detections,
        score_threshold=threshold,
        home=home,
        wall_s=time.perf_counter() - t0,
    )


def _export(client: Any, ref: str, parity_images: int) -> ParityReport:
    """What ``vitbench export --model REF --format onnx`` does, in a temporary folder."""
    from vitbench.trainer.export.pipeline import export_checkpoint

    with tempfile.TemporaryDirectory(prefix="vitbench-demo-export-") as tmp:
        work = Path(tmp)
        download = client.download(ref, work / "checkpoint")
        info = download.version
        outcome = export_checkpoint(
            download.path,
            work / "export",
            "onnx",
            parity_count=parity_images,
            model_name=info.name,
            model_version=info.version,
        )
        if not outcome.parity.passed:
            bad = [im.image for im in outcome.parity.images if not im.passed]
            raise PipelineError(
                f"parity check failed on {', '.join(bad)} ({outcome.parity.runtime}); nothing was attached"
            )
        client.attach_export(info, list(outcome.files), outcome.manifest, "onnx")
        return outcome.parity


def _detect(ref: str, home: Path, image: Path) -> tuple[list[dict[str, Any]], float]:
    """POST ``image`` to ``/detect`` of the real service app (in-process, ONNX Runtime on the CPU);
    returns the detections and the score threshold the service applied."""
    from fastapi.testclient import TestClient

    from vitbench.service.app import create_app
    from vitbench.service.settings import ServiceSettings

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None
    settings = ServiceSettings(
        model=ref,
        model_dir=None,
        home=home,
        tracking_uri=tracking_uri,
        registry_uri=(os.environ.get("MLFLOW_REGISTRY_URI") or None) if tracking_uri else None,
        providers=["CPUExecutionProvider"],
        max_batch_size=1,
        api_key=None,
        log_json=False,
        log_level="WARNING",
    )
    content_type = mimetypes.guess_type(image.name)[0] or "image/jpeg"
    with TestClient(create_app(settings, background_load=False)) as http:
        resp = http.post("/detect", content=image.read_bytes(), headers={"content-type": content_type})
    if resp.status_code != 200:
        raise PipelineError(f"POST /detect answered {resp.status_code}: {resp.text[:300]}")
    detections: list[dict[str, Any]] = resp.json()["detections"]
    return detections, settings.score_threshold


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


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path(".vitbench/demo"), "--out", help="Demo folder (data/ and study/)."),
        recipe: str = typer.Option("bench-tiny", "--recipe", help="Recipe to train (a CPU preset)."),
        images: int = typer.Option(400, "--images", min=10, help="Synthetic images in total (80% train)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data."),
        inits: str = typer.Option(
            "random,supervised,mocov3,beit,mae",
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
        import torch
        from rich.console import Console

        from vitbench.cli.bench_local import parse_weights, print_report, run_study
        from vitbench.trainer.data.synth import SynthConfig, generate_dataset

        torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))

        console = Console(stderr=True, highlight=False)
        names = [s.strip() for s in inits.split(",") if s.strip()]
        if pipeline and not do_register:
            fail("the pipeline starts from the registered model: drop --no-register, or add --no-pipeline")
        if pipeline and PIPELINE_INIT not in names:
            fail(f"the pipeline uses the {PIPELINE_INIT!r} run: add it to --inits, or add --no-pipeline")
        if out.exists():
            if not (out / DEMO_MARKER).exists():
                fail(f"{out} exists and was not made by `vitbench demo`; choose another --out")
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / DEMO_MARKER).write_text("made by vitbench demo; removed by the next demo run\n")
        t0 = time.perf_counter()
        data = out / "data"
        with console.status(f"synthesizing {images} images"):
            counts = generate_dataset(data, images, seed, SynthConfig(**DEMO_SYNTH))
        console.print(f"data: {counts['train']} train / {counts['val']} val images in {data}")
        study = out / "study"
        _, failed = run_study(
            inits=names,
            recipe=recipe,
            data=data,
            out=study,
            weights=parse_weights(weights),
            overrides=[*DEMO_OVERRIDES, *overrides],
            register=do_register,
            model_name=model_name,
            home=home,
            device="cpu",
        )
        print_report(study)
        if pipeline:
            result = run_pipeline(
                run_dir=study / PIPELINE_INIT, data=data, home=home, model_name=model_name, console=console
            )
            print_pipeline_summary(result, Console(highlight=False))
        console.print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")
        if failed:
            raise typer.Exit(1)
