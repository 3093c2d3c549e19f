"""The demo: the study end to end on a CPU in a few minutes, then the rest of the product.

:func:`run_demo` synthesizes a small COCO-format dataset, trains the tiny preset from random init (plus
every init whose weights are given), evaluates box and mask AP on the synthetic val split, and then
(``pipeline``) walks the rest of the product on the random-init run with :func:`run_pipeline`: the
version the training registered is promoted to ``champion``, exported to ONNX with the parity check
(``model.onnx`` + ``manifest.json`` attached to the version), and one val image is answered by the real
service app in-process (``POST /detect``).

Progress goes to a :class:`DemoReporter` (the CLI's prints spinners, tables and summaries); failures are
:class:`DemoError` (bad request, before anything runs) and :class:`PipelineStepError` (names the step).
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch, mlflow and the service are imported when the demo runs, not by `--help`
    from vitbench.registry.client import ModelVersionInfo, RegistryClient
    from vitbench.registry.env import RegistryLocation
    from vitbench.registry.manifest import ParityReport
    from vitbench.trainer.runs import StudyEvent, StudyOutcome

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
DEMO_INITS = "random,supervised,mocov3,beit,mae"
PIPELINE_INIT = "random"
PIPELINE_STEPS = 4
CHAMPION = "champion"


class DemoError(ValueError):
    """The demo cannot run as asked (flags that do not work together, a folder it must not delete)."""


class PipelineStepError(RuntimeError):
    """Pipeline step ``number`` (``title``) failed for ``reason``."""

    def __init__(self, number: int, title: str, reason: str) -> None:
        super().__init__(f"demo pipeline step {number}/{PIPELINE_STEPS} ({title}) failed: {reason}")
        self.number, self.title, self.reason = number, title, reason


class DemoReporter:
    """Where the demo reports progress; every method is a no-op here (the CLI prints)."""

    def status(self, text: str) -> AbstractContextManager[None]:
        """Around a longer task (e.g. synthesizing the data)."""
        return contextlib.nullcontext()

    def data_ready(self, data: Path, counts: dict[str, int]) -> None:
        """The synthetic dataset is written: ``counts`` has ``train`` and ``val`` image counts."""

    def study_event(self, event: StudyEvent) -> None:
        """An init was skipped, kept or failed."""

    def study_done(self, study: Path, outcome: StudyOutcome) -> None:
        """Every init is trained (or skipped/failed); ``study`` holds the run folders."""

    def step(self, number: int, title: str) -> AbstractContextManager[None]:
        """Around pipeline step ``number`` of :data:`PIPELINE_STEPS`; exits normally when it succeeded."""
        return contextlib.nullcontext()


@dataclass(frozen=True)
class DemoRequest:
    """What to run: the demo folder ``out`` (``data/``, ``study/``), recipe, data size and seed, inits,
    weights, extra overrides (after :data:`DEMO_OVERRIDES`), registry home, pipeline on/off, threads
    (0: half the cores), progress bars on/off."""

    out: Path = Path(".vitbench/demo")
    recipe: str = "bench-tiny"
    images: int = 400
    seed: int = 0
    inits: tuple[str, ...] = tuple(DEMO_INITS.split(","))
    weights: dict[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    register: bool = True
    pipeline: bool = True
    model_name: str = DEMO_MODEL
    home: Path | None = None
    threads: int = 0
    progress: bool = True


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


@dataclass(frozen=True)
class DemoOutcome:
    """The data counts, the study's outcome, the pipeline's result (None without pipeline), wall time."""

    data: Path
    study: Path
    counts: dict[str, int]
    study_outcome: StudyOutcome
    pipeline: PipelineResult | None
    wall_s: float


def check_request(request: DemoRequest) -> None:
    """Raise :class:`DemoError` when the flags cannot work together (before anything is written)."""
    if request.pipeline and not request.register:
        raise DemoError(
            "the pipeline starts from the registered model: drop --no-register, or add --no-pipeline"
        )
    if request.pipeline and PIPELINE_INIT not in request.inits:
        raise DemoError(
            f"the pipeline uses the {PIPELINE_INIT!r} run: add it to --inits, or add --no-pipeline"
        )


def prepare_folder(out: Path) -> None:
    """Empty the demo folder of a previous demo run (never a folder the demo did not make)."""
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            raise DemoError(f"{out} exists and was not made by `vitbench demo`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("made by vitbench demo; removed by the next demo run\n")


def run_demo(request: DemoRequest, reporter: DemoReporter | None = None) -> DemoOutcome:
    """The whole demo (see the module docstring). Raises :class:`DemoError`, the study's user errors
    (``vitbench.trainer.runs.USER_ERRORS``) or :class:`PipelineStepError`."""
    import torch

    from vitbench.trainer.data.synth import SynthConfig, generate_dataset
    from vitbench.trainer.runs import Registration, StudyRequest, run_study

    rep = reporter or DemoReporter()
    check_request(request)
    torch.set_num_threads(request.threads or max(1, (os.cpu_count() or 2) // 2))
    prepare_folder(request.out)
    t0 = time.perf_counter()
    data = request.out / "data"
    with rep.status(f"synthesizing {request.images} images"):
        counts = generate_dataset(data, request.images, request.seed, SynthConfig(**DEMO_SYNTH))
    rep.data_ready(data, counts)
    study = request.out / "study"
    outcome = run_study(
        StudyRequest(
            inits=request.inits,
            recipe=request.recipe,
            data=data,
            out=study,
            weights=request.weights,
            overrides=(*DEMO_OVERRIDES, *request.overrides),
            device="cpu",
            registration=Registration(request.model_name, home=request.home) if request.register else None,
            progress=request.progress,
        ),
        on_event=rep.study_event,
    )
    rep.study_done(study, outcome)
    result = None
    if request.pipeline:
        result = run_pipeline(
            run_dir=study / PIPELINE_INIT,
            data=data,
            home=request.home,
            model_name=request.model_name,
            reporter=rep,
        )
    return DemoOutcome(data, study, counts, outcome, result, time.perf_counter() - t0)


@contextlib.contextmanager
def _step(reporter: DemoReporter, number: int, title: str) -> Iterator[None]:
    """Run a step inside the reporter's context; any failure becomes :class:`PipelineStepError`."""
    try:
        with reporter.step(number, title):
            yield
    except PipelineStepError:
        raise
    except Exception as exc:  # any failure of a step is reported with the step's name
        raise PipelineStepError(number, title, str(exc).strip() or type(exc).__name__) from exc


def _val_image(data: Path) -> tuple[Path, int, int]:
    """The first image of the val split and its (width, height)."""
    from vitbench.trainer.data import split_paths

    img_dir, ann = split_paths(data, "val")
    images = json.loads(ann.read_text(encoding="utf-8")).get("images") or []
    if not images:
        raise ValueError(f"{ann} lists no images")
    first = images[0]
    return img_dir / first["file_name"], int(first["width"]), int(first["height"])


def run_pipeline(
    *,
    run_dir: Path,
    data: Path,
    home: Path | None,
    model_name: str,
    reporter: DemoReporter | None = None,
    parity_images: int = 4,
) -> PipelineResult:
    """Registered version of ``run_dir``'s final checkpoint → ``champion`` → ONNX export with parity,
    attached to the version → one val image through the service app in-process.

    Raises :class:`PipelineStepError` naming the step that failed and why.
    """
    from vitbench.registry.env import registry_location
    from vitbench.registry.hashing import sha256_file
    from vitbench.trainer.export.registered import export_registered
    from vitbench.trainer.rundir import RunDir

    rep = reporter or DemoReporter()
    t0 = time.perf_counter()
    location = registry_location(home)
    run = RunDir(run_dir)
    final = run.final_model
    info: ModelVersionInfo | None = None
    client: RegistryClient | None = None
    with _step(rep, 1, f"find the registered version of {run.name}/{final.name}"):
        if not final.is_file():
            raise FileNotFoundError(f"{final} does not exist (the {run.name} run did not finish)")
        client = location.open()
        digest = sha256_file(final)
        mine = [v for v in client.list_versions(model_name) if v.tags.get("sha256") == digest]
        if not mine:
            raise LookupError(f"no version of {model_name!r} holds {final} (sha256 {digest[:12]}...)")
        info = max(mine, key=lambda v: int(v.version))
    assert info is not None and client is not None
    champion_ref = f"{info.name}@{CHAMPION}"
    with _step(rep, 2, f"promote {info.ref} to {CHAMPION}"):
        client.promote(info.ref, CHAMPION)
    report: ParityReport | None = None
    with _step(rep, 3, "export to ONNX, check parity, attach to the version"):
        report = export_registered(client, champion_ref, "onnx", parity_images=parity_images).parity
    assert report is not None
    image, width, height = data, 0, 0
    detections: list[dict[str, Any]] = []
    threshold = 0.0
    with _step(rep, 4, "POST /detect a val image to the service app"):
        image, width, height = _val_image(data)
        detections, threshold = _detect(champion_ref, location, image)
    return PipelineResult(
        version_ref=info.ref,
        champion_ref=champion_ref,
        parity=report,
        image=image,
        image_size=(width, height),
        detections=detections,
        score_threshold=threshold,
        home=location.home,
        wall_s=time.perf_counter() - t0,
    )


def _detect(ref: str, location: RegistryLocation, image: Path) -> tuple[list[dict[str, Any]], float]:
    """POST ``image`` to ``/detect`` of the real service app (in-process, ONNX Runtime on the CPU);
    returns the detections and the score threshold the service applied."""
    from fastapi.testclient import TestClient

    from vitbench.service.app import create_app
    from vitbench.service.settings import ServiceSettings

    settings = ServiceSettings(
        model=ref,
        model_dir=None,
        home=location.home,
        tracking_uri=location.tracking_uri,
        registry_uri=location.registry_uri,
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
        raise RuntimeError(f"POST /detect answered {resp.status_code}: {resp.text[:300]}")
    detections: list[dict[str, Any]] = resp.json()["detections"]
    return detections, settings.score_threshold
