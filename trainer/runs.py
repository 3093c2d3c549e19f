"""Use cases of training: one run (:func:`train_run`), the study (:func:`run_study`) and a checkpoint's
COCO AP (:func:`evaluate_checkpoint`). ``vitbench train``, ``bench run``, ``eval``, the demo and a
Kubernetes Job execute these; the command line only parses, calls and prints.

Errors a user can fix are the domain's exceptions, collected in :data:`USER_ERRORS` (a bad recipe or
override, an unknown init or unusable weights, bad data, a run folder that already holds a run, a
checkpoint that does not fit); a stop request (SIGTERM) ends a run with
:class:`~vitbench.trainer.engine.loop.TrainingInterruptedError` after saving a checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from vitbench.fileio import atomic_write_json
from vitbench.registry.client import RegistryClient
from vitbench.registry.env import registry_location
from vitbench.registry.weights import ResolvedWeights, lineage_tags, resolve_weights
from vitbench.trainer import distributed as du
from vitbench.trainer.data.check import DatasetError
from vitbench.trainer.distributed import DeviceError
from vitbench.trainer.engine.checkpoint import CheckpointError
from vitbench.trainer.engine.hooks import Hook, JsonlMetricsHook, RichProgressHook
from vitbench.trainer.engine.loop import TrainConfig, Trainer, TrainingInterruptedError, TrainResult
from vitbench.trainer.engine.task import TrainingSetupError
from vitbench.trainer.identity import RunIdentity, dataset_digest, differences, load_identity
from vitbench.trainer.inits import apply_init_overrides
from vitbench.trainer.inits.errors import InitError
from vitbench.trainer.recipes import Recipe, RecipeError, apply_overrides, get_recipe
from vitbench.trainer.rundir import RunDir
from vitbench.trainer.study import PlannedRun, plan_runs


class EvaluationError(ValueError):
    """A checkpoint cannot be evaluated on a dataset (bad split, unreadable file, other categories)."""


class StudyMismatchError(ValueError):
    """A finished run in the study folder is not the run this study asks for (names each difference)."""


USER_ERRORS: tuple[type[Exception], ...] = (
    RecipeError,
    DeviceError,
    InitError,
    DatasetError,
    TrainingSetupError,
    CheckpointError,
    EvaluationError,
    StudyMismatchError,
)


def build_recipe(recipe: str, init: str, overrides: Sequence[str] = ()) -> Recipe:
    """A run's final recipe: built-in ``recipe`` → the init's tuned overrides → ``key=value`` overrides."""
    return apply_overrides(apply_init_overrides(get_recipe(recipe), init), list(overrides))


@dataclass(frozen=True)
class Registration:
    """Log the run to the registry and register its final model as a version of ``model_name``.

    ``model_name`` None: ``vitbench-<recipe>``. The registry is ``client``, else the one the
    environment names (:func:`vitbench.registry.env.registry_location` with ``home``).
    """

    model_name: str | None = None
    experiment: str = "vitbench"
    home: Path | None = None
    client: RegistryClient | None = None


@dataclass(frozen=True)
class RunRequest:
    """One training run: ``recipe`` × ``init`` on the COCO-format dataset ``data``, written to ``out``.

    ``overrides`` are ``key=value`` recipe overrides applied after the init's; ``registration`` None
    trains without the registry; ``grace_period`` seconds to save after SIGTERM; ``log_period`` steps
    between metrics lines; ``echo_records`` also writes every metrics line to stderr (the train record
    stream of :mod:`vitbench.trainer.records`).
    """

    recipe: str
    data: Path
    out: Path
    init: str = "random"
    weights: str | None = None
    weights_sha256: str | None = None
    resume: bool = False
    overrides: tuple[str, ...] = ()
    device: str = "auto"
    registration: Registration | None = None
    grace_period: float = 60.0
    log_period: int = 10
    progress: bool = True
    description: str | None = None
    echo_records: bool = False


def resolve_request_weights(r: RunRequest) -> ResolvedWeights | None:
    """``r.weights`` as a local path / URI; a registry reference (``NAME@ALIAS``, ``NAME/N``) is downloaded
    into ``$TMPDIR/vitbench-weights`` (writable in a pod) and sha256-verified against its version's tag."""
    reg = r.registration

    def client() -> RegistryClient:
        if reg is not None and reg.client is not None:
            return reg.client
        return registry_location(reg.home if reg is not None else None).open()

    cache = Path(tempfile.gettempdir()) / "vitbench-weights"
    return resolve_weights(r.weights, r.weights_sha256, client, cache)


def train_run(
    request: RunRequest,
    *,
    recipe: Recipe | None = None,
    env: Mapping[str, str] | None = None,
    handle_sigterm: bool = True,
) -> TrainResult:
    """Train one run (single process or one rank under torchrun) and return its result.

    ``recipe`` skips :func:`build_recipe` when the caller already built it. Reads torchrun's variables
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...) from ``env`` (default ``os.environ``). With
    ``handle_sigterm`` a SIGTERM saves a checkpoint and raises ``TrainingInterruptedError``.
    Raises one of :data:`USER_ERRORS` for a user mistake, ``RegistryError`` for registry trouble.
    """
    r = request
    init, resolved = r.init, resolve_request_weights(r)
    weights, weights_sha256 = (resolved.location, resolved.sha256) if resolved else (None, None)
    if resolved is not None and resolved.version is not None:
        tagged_init = resolved.version.tags.get("init")
        if tagged_init and init == "random":
            init = tagged_init  # the registered version says which init loads it
        elif tagged_init and tagged_init != init:
            raise InitError(
                f"{resolved.version.ref} holds {tagged_init!r} weights, not {init!r}; "
                f"use --init {tagged_init}"
            )
    final_recipe = recipe if recipe is not None else build_recipe(r.recipe, init, r.overrides)
    info = du.DistInfo.from_env(os.environ if env is None else env)
    cfg = TrainConfig(
        recipe=final_recipe,
        init=init,
        data_root=r.data,
        out_dir=r.out,
        weights=weights,
        weights_sha256=weights_sha256,
        resume=r.resume,
        device=r.device,
        dist=info,
        stop_grace_s=r.grace_period,
        log_period=r.log_period,
    )
    hooks: list[Hook] = [JsonlMetricsHook(echo=sys.stderr if r.echo_records else None)]
    bar: RichProgressHook | None = None
    if r.progress and info.is_main:
        bar = RichProgressHook(r.description or f"{init} · {final_recipe.name}")
        hooks.append(bar)
    if r.registration is not None and info.is_main:
        from vitbench.trainer.engine.registry_hook import RegistryHook

        reg = r.registration
        hooks.append(
            RegistryHook(
                client=reg.client or registry_location(reg.home).open(),
                model_name=reg.model_name or f"vitbench-{r.recipe}",
                experiment=reg.experiment,
                tags={
                    "init": init,
                    "recipe": final_recipe.name,
                    "dataset": str(r.data),
                    **lineage_tags(resolved),
                },
            )
        )
    try:
        du.init_process_group(info, du.select_device(info, r.device))
        trainer = Trainer(cfg, hooks)
        if not handle_sigterm:
            return _registered(trainer.run(), hooks)
        with _stop_on_signals(trainer):
            return _registered(trainer.run(), hooks)
    finally:
        if bar:
            bar.close()
        du.destroy_process_group()


#: Signals that stop a run after saving a checkpoint (Kubernetes sends SIGTERM, a terminal SIGINT).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """The first SIGTERM/SIGINT asks ``trainer`` to save and stop (``TrainingInterruptedError`` then
    carries the signal); a second one exits at once with ``128 + signal``."""
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if received:
            os.write(2, b"\nsecond interrupt: exiting now without saving\n")
            os._exit(128 + signum)
        received.append(signum)
        trainer.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    except TrainingInterruptedError as exc:
        exc.signal = received[0] if received else signal.SIGTERM
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _registered(result: TrainResult, hooks: Sequence[Hook]) -> TrainResult:
    """``result`` with the model version a registry hook registered (``name/version``), if any."""
    for hook in hooks:
        version = getattr(hook, "version", None)
        if version is not None and hasattr(version, "ref"):
            return replace(result, registered=str(version.ref))
    return result


# --- the study -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRequest:
    """Train each of ``inits`` into ``out/<init>/`` with the same recipe, data and overrides.

    ``weights`` maps an init to its weights (else ``VITBENCH_WEIGHTS_<INIT>``); an init without the
    weights it needs, or one that does not apply to the recipe's backbone, is skipped.
    """

    inits: tuple[str, ...]
    recipe: str
    data: Path
    out: Path
    weights: Mapping[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    resume: bool = False
    device: str = "auto"
    registration: Registration | None = None
    progress: bool = True


@dataclass(frozen=True)
class StudyEvent:
    """What happened to one init: ``skipped`` (``detail`` says why), ``kept`` (finished earlier, in
    ``detail``'s folder) or ``failed`` (``detail`` is the error)."""

    kind: Literal["skipped", "kept", "failed"]
    init: str
    detail: str


@dataclass(frozen=True)
class StudyOutcome:
    """The plan, the runs trained now (init → result) and the inits that failed (init → error)."""

    plan: list[PlannedRun]
    trained: dict[str, TrainResult]
    failed: dict[str, str]

    @property
    def nothing_to_run(self) -> bool:
        return all(p.skip_reason for p in self.plan)


def run_study(
    request: StudyRequest,
    *,
    env: Mapping[str, str] | None = None,
    on_event: Callable[[StudyEvent], None] | None = None,
) -> StudyOutcome:
    """Train every runnable init in turn; a finished run (``eval.json``) is kept, not redone.

    A user-facing error of one init (e.g. weights that do not fit) is reported as a ``failed`` event and
    the study goes on; an interruption (SIGTERM) stops the whole study. Events other than ``failed`` are
    only reported on the main process. Raises ``RecipeError``/``InitError`` before training when the
    recipe, an override or an init name is wrong.
    """
    env = os.environ if env is None else env
    emit = on_event or (lambda _e: None)
    q = request
    plan = plan_runs(q.inits, get_recipe(q.recipe), q.weights, env)
    is_main = du.DistInfo.from_env(env).is_main
    check_finished_runs(q, plan)
    trained: dict[str, TrainResult] = {}
    failed: dict[str, str] = {}
    for p in plan:
        if p.skip_reason:
            if is_main:
                emit(StudyEvent("skipped", p.init, p.skip_reason))
            continue
        run_dir = RunDir(q.out / p.init)
        if run_dir.is_finished():
            if is_main:
                emit(StudyEvent("kept", p.init, str(run_dir.root)))
            continue
        recipe = build_recipe(q.recipe, p.init, q.overrides)  # fails fast on bad overrides
        run = RunRequest(
            recipe=q.recipe,
            init=p.init,
            data=q.data,
            out=run_dir.root,
            weights=p.weights,
            resume=q.resume or run_dir.has_started(),
            overrides=q.overrides,
            device=q.device,
            registration=q.registration,
            progress=q.progress,
            description=f"{p.init:>10} · {q.recipe}",
        )
        try:
            trained[p.init] = train_run(run, recipe=recipe, env=env)
        except USER_ERRORS as exc:
            failed[p.init] = str(exc)
            emit(StudyEvent("failed", p.init, str(exc)))
    return StudyOutcome(plan, trained, failed)


def requested_identity(q: StudyRequest, run: PlannedRun) -> RunIdentity:
    """The identity ``run`` of study ``q`` would have (weights are read once to hash them)."""
    from vitbench.trainer.inits.loading import local_copy, sha256_of

    digest = None
    if run.weights:
        with local_copy(run.weights) as path:
            digest = sha256_of(path)
    return RunIdentity(
        recipe=build_recipe(q.recipe, run.init, q.overrides).model_dump(mode="json"),
        init=run.init,
        weights=run.weights,
        weights_sha256=digest,
        dataset=str(Path(q.data).resolve()),
        dataset_sha256=dataset_digest(q.data),
        code="",
    )


def check_finished_runs(q: StudyRequest, plan: Sequence[PlannedRun]) -> None:
    """Keep a finished run only when it is the run asked for; else refuse before training anything.

    Raises :class:`StudyMismatchError` naming, per init, each difference between the finished run's
    identity (``identity.json``; for a run from before identities its ``recipe.json`` and ``init``)
    and this request's.
    """
    problems = []
    for p in plan:
        run_dir = RunDir(q.out / p.init)
        if p.skip_reason or not run_dir.is_finished():
            continue
        wanted = requested_identity(q, p)
        recorded = load_identity(run_dir.identity)
        if recorded is None:  # a run from before identities: its recipe and init are what we know
            recipe = (
                json.loads(run_dir.recipe.read_text(encoding="utf-8")) if run_dir.recipe.is_file() else {}
            )
            init = json.loads(run_dir.eval.read_text(encoding="utf-8")).get("init", wanted.init)
            recorded = replace(wanted, recipe=recipe, init=init)
        diffs = differences(recorded, wanted)
        if diffs:
            problems.append(f"{run_dir.root}: " + "; ".join(str(d) for d in diffs))
    if problems:
        raise StudyMismatchError(
            "the study folder holds finished runs that differ from this request, so they cannot be kept:\n"
            + "\n".join(f"  {p}" for p in problems)
            + "\nchoose another --out for this study, or remove those run folders to train them anew"
        )


# --- evaluation of a checkpoint ----------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointEval:
    """COCO metrics of ``checkpoint`` on ``data``'s ``split``; ``file``: the ``eval_<split>.json`` written."""

    checkpoint: Path
    data: Path
    split: str
    metrics: dict[str, float]
    file: Path

    def payload(self) -> dict[str, Any]:
        """What ``eval_<split>.json`` holds."""
        return {
            "checkpoint": str(self.checkpoint),
            "data": str(self.data),
            "split": self.split,
            "metrics": self.metrics,
        }


def evaluate_checkpoint(
    checkpoint: Path, data: Path, split: str = "val", device: str = "auto"
) -> CheckpointEval:
    """COCO box and mask AP of a checkpoint on a split; writes ``eval_<split>.json`` next to it.

    Raises :class:`EvaluationError` (bad split, other categories) or ``CheckpointError``.
    """
    import torch

    from vitbench.trainer.data import split_paths
    from vitbench.trainer.data.check import check_split
    from vitbench.trainer.data.coco import CocoDetection
    from vitbench.trainer.engine.checkpoint import load_inference_model
    from vitbench.trainer.evaluation.coco_eval import evaluate

    problems = check_split(data, split)
    if problems:
        raise EvaluationError(
            f"{len(problems)} problem(s) in {data} ({split}):\n" + "\n".join(f"  {p}" for p in problems[:50])
        )
    dev = du.select_device(du.DistInfo(), device)
    model, _recipe, meta = load_inference_model(checkpoint, map_location=dev)
    img_dir, ann = split_paths(data, split)
    ds = CocoDetection(img_dir, ann, None, train=False)
    if ds.class_names != list(meta["class_names"]):
        raise EvaluationError(
            f"the dataset's categories {ds.class_names} differ from the checkpoint's "
            f"{list(meta['class_names'])}"
        )
    with torch.no_grad():
        metrics = evaluate(model, ds, dev, batch_size=2)
    out = CheckpointEval(checkpoint, data, split, metrics, checkpoint.parent / f"eval_{split}.json")
    atomic_write_json(out.file, out.payload())
    return out
