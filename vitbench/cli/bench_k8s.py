"""``vitbench bench submit|status|logs|cancel|render``: the study as Kubernetes Jobs.

This module is the only place that reads kubeconfig / in-cluster config; ``deploy.jobs`` renders and
``deploy.k8s`` talks to the API with the objects built here. ``kubernetes`` is imported inside commands.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast, get_type_hints

import typer

from vitbench.cli.common import fail, print_json

if TYPE_CHECKING:
    from pydantic import ValidationError

    from vitbench.deploy.jobs import PretrainJobSpec, StudySpec
    from vitbench.deploy.k8s import BatchApi, CoreApi, JobStatus

_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# -- options shared by render and submit ------------------------------------------------------------------
InitsOpt = Annotated[
    str,
    typer.Option(
        "--inits",
        "-i",
        help="Comma-separated initializations, one Job each (see `vitbench inits`), e.g. random,mae.",
    ),
]
RecipeOpt = Annotated[
    str,
    typer.Option(
        "--recipe",
        "-r",
        help="Recipe name (see `vitbench recipes`); with --pretrain the pre-training recipe "
        "(tiny, b, l, or a full name such as mae-b).",
    ),
]
PretrainOpt = Annotated[
    str | None,
    typer.Option(
        "--pretrain",
        help="Instead of fine-tuning Jobs, one pre-training Job: `vitbench pretrain --method METHOD` "
        "(mae, supervised, mocov3) writing <outputs>/<study>/pretrain-METHOD and registering its release.",
    ),
]
PretrainDataOpt = Annotated[
    str,
    typer.Option(
        "--pretrain-data",
        help="With --pretrain: the image folder inside the data PVC (e.g. unlabeled; '' = the PVC's root).",
    ),
]
GpusOpt = Annotated[int, typer.Option("--gpus", "-g", min=0, help="GPUs per node (0 = CPU only).")]
NodesOpt = Annotated[
    int,
    typer.Option("--nodes", "-n", min=1, help="Nodes per run; >1 gives an Indexed Job + headless Service."),
]
StudyOpt = Annotated[
    str | None, typer.Option("--study", help="Study name, prefix of every Job name (default: the recipe).")
]
ImageOpt = Annotated[
    str | None, typer.Option("--image", help="Trainer image (default: the released trainer).")
]
DataPvcOpt = Annotated[
    str, typer.Option("--data-pvc", help="PVC holding the COCO-format dataset (mounted ro).")
]
OutputsPvcOpt = Annotated[str, typer.Option("--outputs-pvc", help="PVC for runs: /outputs/<study>/<init>.")]
OutputsS3Opt = Annotated[
    str | None,
    typer.Option("--outputs-s3", help="Write runs to s3://bucket/prefix instead of the outputs PVC."),
]
WeightsPvcOpt = Annotated[
    str | None, typer.Option("--weights-pvc", help="PVC with pretrained checkpoints, mounted ro at /weights.")
]
WeightsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--weights",
        help="INIT=WEIGHTS of an init's pretrained weights (repeatable): /weights/FILE on --weights-pvc, a "
        "URI, or a registered version NAME@ALIAS / NAME/N (e.g. mae=mae-tiny@champion, fetched by the pod).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Recipe override key=value passed to every run (repeatable)."),
]
ShmOpt = Annotated[str, typer.Option("--shm-size", help="Size of /dev/shm (memory emptyDir), e.g. 16Gi.")]
CpuOpt = Annotated[str, typer.Option("--cpu", help="CPU request per pod, e.g. 8.")]
MemoryOpt = Annotated[
    str, typer.Option("--memory", help="Memory request and limit per pod (shm counts), e.g. 64Gi.")
]
QueueOpt = Annotated[
    str | None,
    typer.Option("--queue", help="Kueue LocalQueue: adds the queue-name label and creates Jobs suspended."),
]
NodeSelectorOpt = Annotated[
    list[str] | None, typer.Option("--node-selector", help="KEY=VALUE node label the pods need (repeatable).")
]
BackoffOpt = Annotated[
    int, typer.Option("--backoff-limit", min=0, help="Failures tolerated per node (disruptions excluded).")
]
DeadlineOpt = Annotated[
    float, typer.Option("--deadline-hours", min=0.01, help="Wall-clock cap per Job, hours.")
]
TtlOpt = Annotated[
    float, typer.Option("--ttl-hours", min=0, help="Delete finished Jobs after this many hours.")
]
RegistryCmOpt = Annotated[
    str,
    typer.Option("--registry-configmap", help="ConfigMap whose MLFLOW_TRACKING_URI key names the registry."),
]
RegistrySecretOpt = Annotated[
    str,
    typer.Option("--registry-secret", help="Secret with registry/S3 credentials, loaded as env ('' = none)."),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", help="Namespace (default: the kubeconfig context's, or in-cluster)."),
]
ContextOpt = Annotated[
    str | None, typer.Option("--context", help="kubeconfig context (default: the current one).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _plain_dumper() -> Any:
    import yaml

    class PlainDumper(yaml.SafeDumper):
        """SafeDumper that never writes anchors/aliases (kubectl users read the YAML)."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    return PlainDumper


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"{what} {item!r} must look like KEY=VALUE")
        out[key] = value
    return out


def _check_recipe(recipe: str) -> None:
    try:
        from vitbench.trainer.recipes import list_recipes
    except ImportError:  # the trainer is not installed: the cluster's image will check it
        return
    names = list_recipes()
    if recipe not in names:
        raise typer.BadParameter(
            f"unknown recipe {recipe!r}; expected one of {', '.join(names)}", param_hint="--recipe"
        )


@dataclass(frozen=True)
class StudyOptions:
    """The options of ``bench render`` and ``bench submit``, declared once (each field's annotation
    carries its flag and help; :func:`study_command` turns the fields into a command's parameters)."""

    recipe: RecipeOpt
    inits: InitsOpt = ""
    gpus: GpusOpt = 1
    nodes: NodesOpt = 1
    study: StudyOpt = None
    namespace: NamespaceOpt = None
    image: ImageOpt = None
    data_pvc: DataPvcOpt = "vitbench-data"
    outputs_pvc: OutputsPvcOpt = "vitbench-outputs"
    outputs_s3: OutputsS3Opt = None
    weights_pvc: WeightsPvcOpt = None
    weights: WeightsOpt = None
    overrides: SetOpt = None
    shm_size: ShmOpt = "16Gi"
    cpu: CpuOpt = "8"
    memory: MemoryOpt = "64Gi"
    queue: QueueOpt = None
    node_selector: NodeSelectorOpt = None
    backoff_limit: BackoffOpt = 3
    deadline_hours: DeadlineOpt = 72.0
    ttl_hours: TtlOpt = 168.0
    registry_configmap: RegistryCmOpt = "vitbench-registry"
    registry_secret: RegistrySecretOpt = "vitbench-registry-credentials"
    pretrain: PretrainOpt = None
    pretrain_data: PretrainDataOpt = ""


def study_command(fn: Callable[..., None]) -> Callable[..., None]:
    """A command whose parameters are :class:`StudyOptions`' fields followed by ``fn``'s own keyword
    parameters; ``fn(opts, **own)`` receives the study options as one object."""
    hints = get_type_hints(StudyOptions, include_extras=True)
    names = [f.name for f in dataclasses.fields(StudyOptions)]
    params = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=hints[f.name],
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
        )
        for f in dataclasses.fields(StudyOptions)
    ]
    own = [  # fn's parameters after `opts`, keyword-only like the options
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
    ]
    clash = {p.name for p in own} & set(names)
    if clash:
        raise TypeError(f"{fn.__name__} redeclares study options {sorted(clash)}")

    @functools.wraps(fn)
    def command(**kwargs: Any) -> None:
        opts = StudyOptions(**{k: kwargs.pop(k) for k in names})
        fn(opts, **kwargs)

    del command.__wrapped__  # typer reads the signature below, not fn's
    command.__signature__ = inspect.Signature(params + own)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params + own}
    return command


def _check_overrides(o: StudyOptions) -> None:
    for override in o.overrides or []:
        if "=" not in override:
            raise typer.BadParameter(f"override {override!r} must look like key=value", param_hint="--set")


def _study_spec(o: StudyOptions, inits: tuple[str, ...]) -> StudySpec:
    """The cluster side both builders share (pydantic validates it; raises ``ValidationError``)."""
    from vitbench.deploy.jobs import DEFAULT_IMAGE, StudySpec

    return StudySpec(
        name=o.study or o.recipe,
        recipe=o.recipe,
        inits=inits,
        gpus=o.gpus,
        nodes=o.nodes,
        namespace=o.namespace,
        image=o.image or DEFAULT_IMAGE,
        data_pvc=o.data_pvc,
        outputs_pvc=o.outputs_pvc,
        outputs_s3=o.outputs_s3,
        weights_pvc=o.weights_pvc,
        weights=_pairs(o.weights, "--weights"),
        overrides=tuple(o.overrides or ()),
        shm_size=o.shm_size,
        cpu=o.cpu,
        memory=o.memory,
        queue_name=o.queue,
        node_selector=_pairs(o.node_selector, "--node-selector"),
        backoff_limit=o.backoff_limit,
        active_deadline_seconds=max(1, round(o.deadline_hours * 3600)),
        ttl_seconds_after_finished=round(o.ttl_hours * 3600),
        registry_configmap=o.registry_configmap,
        registry_secret=o.registry_secret or None,
    )


def _invalid(exc: ValidationError, what: str) -> NoReturn:
    """Exit 2 naming each field pydantic refused."""
    errors = exc.errors()
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg'].removeprefix('Value error, ')}"
        for e in errors
    )
    fail(f"invalid {what}: {problems}")


def build_study(opts: StudyOptions) -> StudySpec:
    """A :class:`StudySpec` from the command-line options; bad values exit 2 with the field named."""
    from pydantic import ValidationError

    o = opts
    _check_recipe(o.recipe)
    init_list = tuple(i.strip() for i in o.inits.split(",") if i.strip())
    _check_overrides(o)
    try:
        spec = _study_spec(o, init_list)
    except ValidationError as exc:
        _invalid(exc, "study")
    _check_runs(spec)
    return spec


def _check_runs(spec: StudySpec) -> None:
    """Exit 2 listing what would stop a run once its pod started (weights, recipe overrides)."""
    from vitbench.deploy.study_checks import StudyError, check_study

    try:
        check_study(spec)
    except StudyError as exc:
        fail("the study's runs could not start:\n" + "\n".join(f"  {p}" for p in exc.problems))


def connect(context: str | None, namespace: str | None) -> tuple[BatchApi, CoreApi, str]:
    """API objects and the namespace to use: in-cluster config inside a pod, else kubeconfig.

    The namespace is ``--namespace``, else the pod's own (in-cluster) or the context's, else ``default``.
    """
    from kubernetes import client, config

    in_cluster = context is None and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if in_cluster:
            config.load_incluster_config()
            ns = namespace or (
                _IN_CLUSTER_NAMESPACE.read_text().strip() if _IN_CLUSTER_NAMESPACE.exists() else "default"
            )
        else:
            # Read KUBECONFIG now (the library reads it once, at import time); it may list several files.
            config_file = os.environ.get("KUBECONFIG") or None
            config.load_kube_config(config_file=config_file, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=config_file)
            if context is not None:
                active = next(c for c in contexts if c["name"] == context)
            ns = namespace or active.get("context", {}).get("namespace") or "default"
    except (config.ConfigException, FileNotFoundError, StopIteration) as exc:
        fail(
            f"no Kubernetes configuration: {str(exc).rstrip('.')}. Set KUBECONFIG or ~/.kube/config, "
            "pass --context, or run inside a pod; `vitbench bench render` works without a cluster"
        )
    return cast("BatchApi", client.BatchV1Api()), cast("CoreApi", client.CoreV1Api()), ns


def build_pretraining(opts: StudyOptions) -> PretrainJobSpec:
    """The pre-training Job of ``--pretrain METHOD`` (cluster options as for a study); exit 2 on bad
    values. ``--inits`` and ``--weights`` belong to fine-tuning studies and are refused here."""
    from pydantic import ValidationError

    from vitbench.deploy.jobs import DATA_MOUNT, PretrainJobSpec

    o = opts
    method = o.pretrain or ""
    if o.inits.strip():
        raise typer.BadParameter(
            "--pretrain renders one pre-training Job; fine-tune in a second study with "
            f"--weights {method}=NAME@ALIAS once it is registered",
            param_hint="--inits",
        )
    try:
        from vitbench.trainer.pretrain.recipes import get_pretrain_recipe
        from vitbench.trainer.recipes import RecipeError
    except ImportError:  # the trainer is not installed: the cluster's image will check it
        pass
    else:
        try:
            get_pretrain_recipe(method, o.recipe)
        except RecipeError as exc:
            raise typer.BadParameter(str(exc), param_hint="--recipe/--pretrain") from None
    _check_overrides(o)
    sub = o.pretrain_data.strip("/")
    if ".." in sub.split("/"):
        raise typer.BadParameter(
            f"{o.pretrain_data!r} must stay inside the data PVC", param_hint="--pretrain-data"
        )
    try:
        study = _study_spec(o, (method,))
        return PretrainJobSpec(study=study, init=method, data=f"{DATA_MOUNT}/{sub}" if sub else DATA_MOUNT)
    except ValidationError as exc:
        _invalid(exc, "pre-training Job")


def render_options(opts: StudyOptions) -> tuple[str, list[dict[str, Any]]]:
    """(study name, manifests) of ``render``/``submit``: the study's Jobs, or with ``--pretrain`` the
    pre-training Job."""
    from vitbench.deploy.jobs import render_pretraining, render_study

    if opts.pretrain is not None:
        job = build_pretraining(opts)
        return job.study.name, render_pretraining(job)
    spec = build_study(opts)
    return spec.name, render_study(spec)


@study_command
def render(opts: StudyOptions) -> None:
    """Print the study's manifests as multi-document YAML (`> study.yaml`, then `kubectl apply -f`)."""
    import yaml

    _, docs = render_options(opts)
    sys.stdout.write(yaml.dump_all(docs, Dumper=_plain_dumper(), sort_keys=False, explicit_start=True))


@study_command
def submit(opts: StudyOptions, context: ContextOpt = None, as_json: JsonOpt = False) -> None:
    """Create one Job per init (or the --pretrain Job) in the cluster; submitting again creates nothing."""
    from vitbench.deploy import k8s

    study_name, docs = render_options(opts)
    batch, core, ns = connect(context, opts.namespace)
    try:
        results = k8s.submit(docs, batch, core, ns)
    except k8s.K8sError as exc:
        fail(str(exc), code=1)
    conflicts = [r for r in results if r.action == "conflict"]
    if as_json:
        print_json([r.__dict__ for r in results])
    else:
        _print_submit(results, study_name, ns, pretraining=opts.pretrain is not None)
    if conflicts:
        fail(f"{len(conflicts)} Job(s) exist with a different spec and were left alone", code=1)


def _print_submit(results: list[Any], study: str, ns: str, pretraining: bool = False) -> None:
    from rich.console import Console

    console = Console()
    style = {"created": "green", "unchanged": "dim", "conflict": "bold red"}
    for r in results:
        console.print(f"  [{style[r.action]}]{r.action:<9}[/] {r.kind:<7} {ns}/{r.name}  [dim]{r.detail}[/]")
    created = sum(r.action == "created" for r in results)
    if created == 0:
        console.print(f"nothing new created: study [bold]{study}[/] is already submitted in namespace {ns}")
    elif pretraining:
        job = next(r.name for r in results if r.kind == "Job")
        console.print(f"created {created} object(s); follow with `kubectl logs -n {ns} -f job/{job}`")
    else:
        console.print(f"created {created} object(s); follow with `vitbench bench status --study {study}`")


def _cell(value: float | int | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


_DISRUPTION_WORDS = {
    "PreemptionByScheduler": "preempted",
    "EvictionByEvictionAPI": "evicted",
    "DeletionByTaintManager": "node tainted",
    "TerminationByKubelet": "node pressure",
}


def status_table(rows: list[JobStatus], ns: str) -> Any:
    """The ``bench status`` table: one row per Job (a rich Table).

    ``retried`` counts pods replaced after a disruption (with why); ``failed`` only real failures.
    """
    from rich import box
    from rich.table import Table

    studies = sorted({s.study for s in rows})
    title = f"study {studies[0]} in {ns}" if len(studies) == 1 else f"benchmark Jobs in {ns}"
    phase_style = {"Running": "cyan", "Succeeded": "green", "Failed": "bold red", "Queued": "yellow"}
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns = ["run", "phase", "pods", "retried", "failed", "iter", "APbox", "APmask", "note"]
    if len(studies) > 1:
        columns.insert(0, "study")
    for col in columns:
        justify: Any = "left" if col in ("study", "run", "phase", "note") else "right"
        table.add_column(col, justify=justify, no_wrap=col != "note")
    for s in rows:
        why = sorted(
            {_DISRUPTION_WORDS.get(p.reason or "", p.reason or "") for p in s.pods if p.disrupted} - {""}
        )
        cells = [
            s.run,
            f"[{phase_style.get(s.phase, 'white')}]{s.phase}[/]",
            f"{s.active}/{len(s.pods)}",
            str(s.retried) + (f" ({','.join(w for w in why if w)})" if any(why) else ""),
            f"[red]{s.failed}[/]" if s.failed else "0",
            _cell(s.iteration, ","),
            _cell(s.ap_box, ".1f"),
            _cell(s.ap_mask, ".1f"),
            s.message,
        ]
        if len(studies) > 1:
            cells.insert(0, s.study)
        table.add_row(*cells)
    return table


def status(
    study: Annotated[
        str | None, typer.Option("--study", help="Only this study (default: all studies).")
    ] = None,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch",
            "-w",
            min=1.0,
            help="Refresh every N seconds until every Job has finished (Ctrl-C stops).",
        ),
    ] = None,
    namespace: NamespaceOpt = None,
    context: ContextOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Table of the study Jobs (pre-trainings first): phase, pods, retries after disruption vs failures,
    iteration, AP."""
    from rich.console import Console

    from vitbench.deploy import k8s

    batch, core, ns = connect(context, namespace)

    def fetch() -> list[JobStatus]:
        try:
            return k8s.study_status(batch, core, ns, study)
        except k8s.K8sError as exc:
            fail(str(exc), code=1)

    rows = fetch()
    if as_json:
        print_json([r.as_json() for r in rows])
        return
    if not rows:
        Console(stderr=True).print(
            f"no benchmark Jobs in namespace {ns}" + (f" for study {study}" if study else "")
        )
        return
    if watch is None or all(r.phase in ("Succeeded", "Failed") for r in rows):
        Console().print(status_table(rows, ns))
        return
    import time

    from rich.live import Live

    with Live(status_table(rows, ns), refresh_per_second=1) as live:
        try:
            while any(r.phase not in ("Succeeded", "Failed") for r in rows):
                time.sleep(watch)
                rows = fetch()
                live.update(status_table(rows, ns))
        except KeyboardInterrupt:
            pass


def _resolve_study(batch: BatchApi, ns: str, study: str | None, init: str | None = None) -> str:
    from vitbench.deploy import k8s

    if study is not None:
        return study
    names = k8s.studies(batch, ns)
    if init is not None:
        names = [n for n in names if _has_init(batch, ns, n, init)]
    if len(names) == 1:
        return names[0]
    if not names:
        fail(f"no benchmark study in namespace {ns}" + (f" has init {init!r}" if init else ""))
    fail(f"several studies in namespace {ns} ({', '.join(names)}); choose one with --study")


def _has_init(batch: BatchApi, ns: str, study: str, init: str) -> bool:
    from vitbench.deploy import k8s
    from vitbench.deploy.jobs import LABEL_INIT

    return any(
        (j.metadata.labels or {}).get(LABEL_INIT) == init for j in k8s.list_study_jobs(batch, ns, study)
    )


def logs(
    init: Annotated[str, typer.Argument(help="Initialization whose run to show (e.g. mae).")],
    study: StudyOpt = None,
    index: Annotated[int, typer.Option("--index", min=0, help="Node rank of a multi-node run.")] = 0,
    tail: Annotated[int | None, typer.Option("--tail", min=1, help="Only the last N lines.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing as the pod writes.")] = False,
    pretrain: Annotated[
        bool, typer.Option("--pretrain", help="The pre-training Job of method INIT, not its fine-tuning.")
    ] = False,
    namespace: NamespaceOpt = None,
    context: ContextOpt = None,
) -> None:
    """Print the trainer log of one init's newest pod (rank 0 unless --index)."""
    from vitbench.deploy import k8s
    from vitbench.deploy.jobs import job_name, pretrain_job_name

    batch, core, ns = connect(context, namespace)
    try:
        the_study = _resolve_study(batch, ns, study, init)
        name = pretrain_job_name(the_study, init) if pretrain else job_name(the_study, init)
        if not follow:
            sys.stdout.write(k8s.logs(core, ns, name, index=index, tail_lines=tail))
            return
        for chunk in k8s.follow_logs(core, ns, name, index=index, tail_lines=tail):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except k8s.K8sError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        pass


def cancel(
    study: StudyOpt = None,
    inits: Annotated[
        str | None,
        typer.Option(
            "--inits",
            "-i",
            help="Comma-separated inits to cancel (default: all); an init's pre-training Job goes too.",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    namespace: NamespaceOpt = None,
    context: ContextOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a study's Jobs (their pods go too) and headless Services; checkpoints on the PVC stay."""
    from rich.console import Console

    from vitbench.deploy import k8s

    batch, core, ns = connect(context, namespace)
    try:
        name = _resolve_study(batch, ns, study)
        selected = [i.strip() for i in inits.split(",") if i.strip()] if inits else None
        what = f"{', '.join(selected)} of study {name}" if selected else f"every Job of study {name}"
        if not yes and not typer.confirm(f"Delete {what} in namespace {ns}?"):
            raise typer.Exit(1)
        deleted = k8s.cancel(batch, core, ns, name, selected)
    except k8s.K8sError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json({"namespace": ns, "study": name, "deleted": deleted})
        return
    console = Console()
    if not deleted:
        console.print(f"nothing to cancel: no matching Jobs of study {name} in {ns}")
    for job in deleted:
        console.print(f"  [red]deleted[/] Job {ns}/{job} (pods are removed in the background)")


def register(bench: typer.Typer) -> None:
    """Add submit, status, logs, cancel and render to the ``bench`` group."""
    bench.command("submit")(submit)
    bench.command("status")(status)
    bench.command("logs")(logs)
    bench.command("cancel")(cancel)
    bench.command("render")(render)
