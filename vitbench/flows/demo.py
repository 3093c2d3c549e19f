"""The demo: the study's question at toy scale on a CPU in minutes, then the rest of the product.

:func:`run_demo` synthesizes a label-scarce setting — a small labeled COCO-format split plus a larger set
of unlabeled images (and their object crops, an ``ImageFolder`` tree for supervised pre-training) —,
pre-trains the tiny ViT with each requested method (``mae`` and ``supervised`` by default), fine-tunes
``random`` and every pre-trained init with the same schedule and seed, evaluates box and mask AP on
the val split, and then (``pipeline``) walks the rest of the product on the winner (the run with the
highest final box AP) with :func:`run_pipeline`: its registered version is promoted to ``champion``,
exported to ONNX with the parity check (``model.onnx`` + ``manifest.json`` attached to the version),
and one val image is answered by the real service app in-process (``POST /detect``).

Pre-training and fine-tuning runs are processes of :mod:`vitbench.flows.parallel` (one more than the
cores by default, one torch thread each: at this model size one thread per process beats two threads in
one), a fine-tune starting as soon as its pre-training is done. Pre-trainings are registered as
``<model>-<method>`` and fine-tuned from the registry reference, so each detector's version names the
pre-training version it came from.

Progress goes to a :class:`DemoReporter` (the CLI prints bars, tables and summaries); failures are
:class:`DemoError` (bad request, before anything runs) and :class:`PipelineStepError` (names the step).
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch, mlflow and the service are imported when the demo runs, not by `--help`
    from vitbench.flows.parallel import Job, JobStatus
    from vitbench.registry.client import ModelVersionInfo, RegistryClient
    from vitbench.registry.env import RegistryLocation
    from vitbench.registry.manifest import ParityReport
    from vitbench.trainer.pretrain.recipes import PretrainRecipe
    from vitbench.trainer.recipes import Recipe
    from vitbench.trainer.runs import StudyEvent, StudyOutcome

DEMO_MARKER = ".vitbench-demo"

# Fine-tuning schedule for the 128-px tiny preset on a CPU (see docs/benchmarks.md): a higher lr and
# lighter RoI heads (2 convs each, 32 RoIs per image) so that random init learns in 600 steps (15
# epochs of the 160 labeled images). The same for every init, seed included.
DEMO_OVERRIDES: tuple[str, ...] = (
    "solver.max_iters=600",
    "solver.lr=8e-4",
    "solver.warmup_iters=25",
    "solver.batch_size=4",
    "solver.checkpoint_period=150",
    "solver.eval_period=150",
    "heads.roi_batch_size_per_image=32",
    "heads.box_convs=2",
    "heads.mask_convs=2",
    "data.num_workers=1",
)
# Pre-training lengths that fit the demo's time on 2 cores (the tiny recipes' full schedules are 70
# and 40 epochs): MAE on the unlabeled images, supervised on their object crops, MoCo v3 (opt-in;
# ≈ 3.5× MAE's cost per image) on the unlabeled images.
DEMO_PRETRAIN_OVERRIDES: dict[str, tuple[str, ...]] = {
    "mae": ("solver.epochs=40",),
    "supervised": ("solver.epochs=20",),
    "mocov3": ("solver.epochs=10",),
}
PRETRAIN_METHODS = tuple(DEMO_PRETRAIN_OVERRIDES)
#: The init whose loader reads each method's release file (the same name here).
PRETRAIN_INIT = {"mae": "mae", "supervised": "supervised", "mocov3": "mocov3"}
# The demo's data: 3 shape categories, up to 3 larger objects per 96-128 px image (textures, occlusion
# and crowd regions as in the default generator). 240 labeled images (160 train / 80 val) and 3000
# unlabeled ones from a disjoint split of the same generator.
DEMO_SYNTH = {"num_categories": 3, "max_objects": 3, "min_object_size": 28, "max_object_size": 64}
DEMO_MODEL = "vitbench-demo"
DEMO_INITS = "random"
DEMO_PRETRAIN = "mae,supervised"
PIPELINE_STEPS = 4
CHAMPION = "champion"


class DemoError(ValueError):
    """The demo cannot run as asked (flags that do not work together, a folder it must not delete)."""


class PipelineStepError(RuntimeError):
    """Pipeline step ``number`` (``title``) failed for ``reason``."""

    def __init__(self, number: int, title: str, reason: str) -> None:
        super().__init__(f"demo pipeline step {number}/{PIPELINE_STEPS} ({title}) failed: {reason}")
        self.number, self.title, self.reason = number, title, reason


@dataclass(frozen=True)
class PretrainSummary:
    """A finished demo pre-training: method, steps, wall time (s), release file, registry version."""

    method: str
    iteration: int
    wall_time_s: float
    images_per_s: float | None
    release: Path
    registered: str | None


class DemoReporter:
    """Where the demo reports progress; every method is a no-op here (the CLI prints)."""

    def status(self, text: str) -> AbstractContextManager[None]:
        """Around a longer task (e.g. synthesizing the data)."""
        return contextlib.nullcontext()

    def data_ready(self, data: Path, counts: dict[str, int]) -> None:
        """The data is written: ``counts`` has ``train``, ``val`` (and ``unlabeled``, ``crops``) counts."""

    def job_update(self, job: JobStatus) -> None:
        """A pre-training or fine-tuning job changed state or made progress (``job.done`` of ``total``)."""

    def jobs_done(self) -> None:
        """Every job has finished, failed or been skipped (a progress display can close)."""

    def pretrain_done(self, summary: PretrainSummary) -> None:
        """A pre-training finished; its init is fine-tuned next."""

    def study_event(self, event: StudyEvent) -> None:
        """An init was skipped, kept or failed."""

    def study_done(self, study: Path, outcome: StudyOutcome) -> None:
        """Every init is trained (or skipped/failed); ``study`` holds the run folders."""

    def winner(self, init: str, box_ap: float) -> None:
        """The pipeline runs on ``init``'s model (highest final box AP, in percent)."""

    def step(self, number: int, title: str) -> AbstractContextManager[None]:
        """Around pipeline step ``number`` of :data:`PIPELINE_STEPS`; exits normally when it succeeded."""
        return contextlib.nullcontext()


@dataclass(frozen=True)
class DemoRequest:
    """What to run: the demo folder ``out`` (``data/``, ``pretrain/``, ``study/``, ``logs/``), the
    detector recipe, labeled images (train + val, ``val_fraction`` in val) and unlabeled images, seed,
    pre-training methods, other inits with their weights, extra fine-tuning / pre-training overrides
    (after the demo's), registry home, pipeline on/off, runs at once (0: one more than the cores, at
    most one per run) and torch threads per run (0: the cores shared out), progress bars on/off."""

    out: Path = Path(".vitbench/demo")
    recipe: str = "bench-tiny"
    images: int = 240
    val_fraction: float = 1 / 3
    unlabeled: int = 3000
    seed: int = 0
    pretrain: tuple[str, ...] = tuple(DEMO_PRETRAIN.split(","))
    inits: tuple[str, ...] = tuple(DEMO_INITS.split(","))
    weights: dict[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    pretrain_overrides: tuple[str, ...] = ()
    register: bool = True
    pipeline: bool = True
    model_name: str = DEMO_MODEL
    home: Path | None = None
    jobs: int = 0
    threads: int = 0
    progress: bool = True

    @property
    def finetune_overrides(self) -> tuple[str, ...]:
        """Every fine-tuning's overrides: the demo's schedule, then the request's."""
        return (*DEMO_OVERRIDES, *self.overrides)

    def pretrain_overrides_for(self, method: str) -> tuple[str, ...]:
        """``method``'s pre-training overrides: the demo's length, then the request's."""
        return (*DEMO_PRETRAIN_OVERRIDES[method], *self.pretrain_overrides)

    @property
    def finetune_inits(self) -> tuple[str, ...]:
        """Every init fine-tuned: ``inits``, then those with ``weights``, then the pre-trained ones."""
        ordered = [*self.inits, *self.weights, *(PRETRAIN_INIT[m] for m in self.pretrain)]
        return tuple(dict.fromkeys(ordered))


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
    """Data counts, pre-trainings, the study's outcome, the winning init, the pipeline's result (None
    without pipeline) and the wall time (s)."""

    data: Path
    study: Path
    counts: dict[str, int]
    pretrained: dict[str, PretrainSummary]
    study_outcome: StudyOutcome
    winner: str | None
    pipeline: PipelineResult | None
    wall_s: float


def check_request(request: DemoRequest) -> None:
    """Raise :class:`DemoError` when the flags cannot work together (before anything is written)."""
    unknown = [m for m in request.pretrain if m not in PRETRAIN_METHODS]
    if unknown:
        raise DemoError(
            f"unknown pre-training method {unknown[0]!r}; expected one of {', '.join(PRETRAIN_METHODS)}"
        )
    both = sorted(set(request.weights) & {PRETRAIN_INIT[m] for m in request.pretrain})
    if both:
        raise DemoError(
            f"{both[0]!r} is both pre-trained by the demo and given --weights: drop one of the two"
        )
    if not request.finetune_inits:
        raise DemoError("nothing to fine-tune: name an init with --inits or a method with --pretrain")
    if request.pipeline and not request.register:
        raise DemoError(
            "the pipeline starts from the registered model: drop --no-register, or add --no-pipeline"
        )
    if request.pretrain and request.unlabeled < 1:
        raise DemoError("pre-training needs unlabeled images: set --unlabeled N (N ≥ 1) or --pretrain none")


@dataclass(frozen=True)
class DemoRecipes:
    """Every run's resolved recipe: fine-tunings by init, pre-trainings by method."""

    finetune: dict[str, Recipe]
    pretrain: dict[str, PretrainRecipe]


def resolve_recipes(request: DemoRequest) -> DemoRecipes:
    """Build every run's recipe once, before the data is synthesized, so that an unknown init or a bad
    override fails first (raises the recipes' ``RecipeError`` / ``InitError``)."""
    from vitbench.trainer.pretrain.recipes import get_pretrain_recipe
    from vitbench.trainer.recipes import apply_overrides
    from vitbench.trainer.runs import build_recipe

    q = request
    return DemoRecipes(
        finetune={i: build_recipe(q.recipe, i, q.finetune_overrides) for i in q.finetune_inits},
        pretrain={
            m: apply_overrides(get_pretrain_recipe(m, "tiny"), list(q.pretrain_overrides_for(m)))
            for m in q.pretrain
        },
    )


def prepare_folder(out: Path) -> None:
    """Empty the demo folder of a previous demo run (never a folder the demo did not make)."""
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            raise DemoError(f"{out} exists and was not made by `vitbench demo`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("made by vitbench demo; removed by the next demo run\n")


# --- the jobs (top-level functions: they run in spawned worker processes) ----------------------------


def pretrain_job(
    method: str, data: Path, out: Path, overrides: tuple[str, ...], model_name: str | None, home: Path | None
) -> PretrainSummary:
    """Pre-train the tiny ViT with ``method`` into ``out``; register it as ``model_name`` if given."""
    from vitbench.trainer.pretrain.flow import PretrainRun, run_pretraining
    from vitbench.trainer.runs import Registration

    outcome = run_pretraining(
        PretrainRun(
            method=method,
            recipe="tiny",
            data=data,
            out=out,
            overrides=overrides,
            device="cpu",
            registration=Registration(model_name, home=home) if model_name else None,
        )
    )
    release = next(p for init, p in outcome.files if init == PRETRAIN_INIT[method])
    return PretrainSummary(
        method, outcome.iteration, outcome.wall_time_s, outcome.images_per_s, release, outcome.registered
    )


def finetune_job(
    init: str,
    weights: str | None,
    recipe: str,
    data: Path,
    study: Path,
    overrides: tuple[str, ...],
    model_name: str | None,
    home: Path | None,
) -> tuple[StudyOutcome, list[StudyEvent]]:
    """Fine-tune ``init`` (from ``weights``) into ``study/<init>`` as a one-init study; returns the
    outcome and the events it reported."""
    from vitbench.trainer.runs import Registration, StudyRequest, run_study

    events: list[StudyEvent] = []
    outcome = run_study(
        StudyRequest(
            inits=(init,),
            recipe=recipe,
            data=data,
            out=study,
            weights={init: weights} if weights else {},
            overrides=overrides,
            device="cpu",
            registration=Registration(model_name, home=home) if model_name else None,
            progress=False,
        ),
        env={},
        on_event=events.append,
    )
    return outcome, events


# --- the flow ---------------------------------------------------------------------------------------


def _pretrain_total(pre: PretrainRecipe, data: Path) -> int:
    """Steps the pre-training ``pre`` will run on ``data`` (for its progress bar)."""
    from vitbench.trainer.pretrain.task import dataset_for

    return pre.iterations(len(dataset_for(pre, data)))[1]  # type: ignore[arg-type]


def plan_jobs(
    request: DemoRequest, recipes: DemoRecipes, data: Path, study: Path
) -> tuple[list[Job], list[StudyEvent]]:
    """The pre-training and fine-tuning jobs (longest chains first) and the inits skipped up front."""
    from vitbench.flows.parallel import Job
    from vitbench.trainer.rundir import RunDir
    from vitbench.trainer.runs import StudyEvent
    from vitbench.trainer.study import plan_runs

    q = request
    logs = q.out / "logs"
    overrides = q.finetune_overrides
    home = q.home
    jobs: list[Job] = []
    for method in q.pretrain:
        pre_over = q.pretrain_overrides_for(method)
        src = data / ("crops" if method == "supervised" else "unlabeled")
        name = f"{q.model_name}-{method}" if q.register else None
        fixed = (method, src, q.out / "pretrain" / method, pre_over, name, home)
        jobs.append(
            Job(
                name=f"pretrain {method}",
                fn=pretrain_job,
                make_args=lambda _results, a=fixed: a,  # type: ignore[misc]
                log=logs / f"pretrain-{method}.log",
                metrics=RunDir(q.out / "pretrain" / method).metrics,
                total=_pretrain_total(recipes.pretrain[method], src),
            )
        )
    pretrained = {PRETRAIN_INIT[m]: m for m in q.pretrain}
    user_inits = [i for i in q.finetune_inits if i not in pretrained]
    base = next(iter(recipes.finetune.values()))  # the inits share the backbone plan_runs looks at
    plan = {p.init: p for p in plan_runs(user_inits, base, q.weights, {})}
    skipped = [StudyEvent("skipped", i, plan[i].skip_reason or "") for i in user_inits if plan[i].skip_reason]
    for init in q.finetune_inits:
        if init in plan and plan[init].skip_reason:
            continue
        total = recipes.finetune[init].solver.max_iters
        source = pretrained.get(init)

        def args(
            results: Mapping[str, Any], init: str = init, source: str | None = source
        ) -> tuple[Any, ...]:
            weights = plan[init].weights if source is None else _weights_of(results[f"pretrain {source}"])
            return (
                init,
                weights,
                q.recipe,
                data,
                study,
                overrides,
                q.model_name if q.register else None,
                home,
            )

        jobs.append(
            Job(
                name=f"fine-tune {init}",
                fn=finetune_job,
                make_args=args,
                log=logs / f"finetune-{init}.log",
                after=(f"pretrain {source}",) if source else (),
                metrics=RunDir(study / init).metrics,
                total=total,
            )
        )
    return jobs, skipped


def _weights_of(summary: PretrainSummary) -> str:
    """Fine-tune from the registered version when there is one (lineage), else from the file."""
    return summary.registered or str(summary.release)


def pick_winner(study: Path, inits: list[str]) -> tuple[str, float] | None:
    """The init whose finished run has the highest final box AP (in percent), or None if none finished;
    a tie goes to the init listed first."""
    from vitbench.trainer.study import read_run

    best: tuple[str, float] | None = None
    for init in inits:
        run = read_run(study / init)
        ap = run.metrics.get("bbox/AP", float("nan")) if run is not None else float("nan")
        if ap == ap and (best is None or ap > best[1]):  # NaN: not finished or no box AP
            best = (init, ap)
    return best


def run_demo(request: DemoRequest, reporter: DemoReporter | None = None) -> DemoOutcome:
    """The whole demo (see the module docstring). Raises :class:`DemoError`, the study's user errors
    (``vitbench.trainer.runs.USER_ERRORS``) or :class:`PipelineStepError`."""
    from vitbench.flows.parallel import run_jobs
    from vitbench.trainer.data.synth import SynthConfig, write_dataset
    from vitbench.trainer.runs import StudyEvent, StudyOutcome

    rep = reporter or DemoReporter()
    check_request(request)
    q = request
    recipes = resolve_recipes(q)
    prepare_folder(q.out)
    t0 = time.perf_counter()
    data, study = q.out / "data", q.out / "study"
    unlabeled = q.unlabeled if q.pretrain else 0
    what = f"{q.images} labeled" + (f" and {unlabeled} unlabeled" if unlabeled else "")
    with rep.status(f"synthesizing {what} images"):
        counts = write_dataset(
            data,
            q.images,
            q.seed,
            SynthConfig(**DEMO_SYNTH),
            q.val_fraction,
            unlabeled=unlabeled,  # type: ignore[arg-type]
        )
    rep.data_ready(data, counts)
    jobs, skipped = plan_jobs(q, recipes, data, study)
    if q.register:  # the store, experiment and models exist before the jobs write to them at once
        from vitbench.registry.env import registry_location
        from vitbench.trainer.runs import Registration

        models = [q.model_name, *(f"{q.model_name}-{m}" for m in q.pretrain)]
        registry_location(q.home).open().prepare([Registration().experiment], models)
    for event in skipped:
        rep.study_event(event)
    cores = os.cpu_count() or 2
    # One run more than cores: a fine-tuning waits for its pre-training, and with exactly one run per
    # core the last fine-tuning would run alone on one core while the other idles.
    workers = q.jobs or max(1, min(cores + 1, len(jobs)))
    threads = q.threads or max(1, cores // workers)

    def on_update(st: JobStatus) -> None:
        rep.job_update(st)
        if st.state == "done" and st.name.startswith("pretrain "):
            rep.pretrain_done(st.result)

    status = run_jobs(jobs, workers=workers, threads=threads, on_update=on_update)
    rep.jobs_done()
    pretrained = {
        st.result.method: st.result
        for st in status.values()
        if st.name.startswith("pretrain ") and st.state == "done"
    }
    plan, trained, failed = [], {}, {}
    for job in jobs:
        st = status[job.name]
        if not job.name.startswith("fine-tune "):
            if st.state == "failed":
                rep.study_event(StudyEvent("failed", job.name, f"{st.error} (log: {job.log})"))
            continue
        init = job.name.removeprefix("fine-tune ")
        if st.state == "done":
            outcome, events = st.result
            for event in events:
                rep.study_event(event)
            plan.extend(outcome.plan)
            trained.update(outcome.trained)
            failed.update(outcome.failed)
        else:
            failed[init] = st.error if st.state == "skipped" else f"{st.error} (log: {job.log})"
            rep.study_event(StudyEvent("failed", init, failed[init]))
    outcome = StudyOutcome(plan, trained, failed)
    rep.study_done(study, outcome)
    best = pick_winner(study, [p.init for p in plan])
    result = None
    if best is not None:
        rep.winner(*best)
    if q.pipeline and best is not None:
        result = run_pipeline(
            run_dir=study / best[0], data=data, home=q.home, model_name=q.model_name, reporter=rep
        )
    return DemoOutcome(
        data, study, counts, pretrained, outcome, best[0] if best else None, result, time.perf_counter() - t0
    )


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
