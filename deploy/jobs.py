"""Kubernetes manifests for the study: one ``batch/v1`` Job per initialization.

:class:`StudySpec` holds what the user chose (recipe, inits, GPUs, nodes, storage, scheduling); each init
becomes a :class:`JobSpec`, and :func:`render_study` turns the study into plain manifest dicts (ready for
``yaml.safe_dump_all`` or the ``kubernetes`` client). Rendering is pure: no I/O, no env, no clock.

Behaviour the Jobs guarantee (the Helm chart's ``benchmark-jobs.yaml`` renders the same):

* ``restartPolicy: Never`` with a small ``backoffLimit``; ``podFailurePolicy`` ignores disruptions (a pod
  with condition ``DisruptionTarget`` = "True": preemption, eviction, node drain) so they do not use up
  retries, and fails the Job at once when a container exits with :data:`CONFIG_ERROR_EXIT_CODE` (the CLI's
  exit code for user/configuration errors; a retry could not fix it).
* The trainer always runs with ``--resume`` into ``/outputs/<study>/<init>`` (or an S3 URI), so a retried
  pod continues from its newest checkpoint.
* Multi-node (``nodes > 1``): an Indexed Job (completions = parallelism = nodes) plus a headless Service;
  each pod reads its node rank from the completion-index annotation and rendezvouses with pod 0 at
  ``<job>-0.<service>``. Under torchrun the worker's exit code is not propagated, so an init container runs
  ``vitbench data check`` first and a failed check fails the Job.

A pre-training run (:class:`PretrainJobSpec`, ``vitbench bench render|submit --pretrain METHOD``) is
rendered by the same functions: the container runs ``vitbench pretrain ... --resume`` instead of
``vitbench train``, the component label is ``pretraining`` and there is no COCO preflight. A study then
fine-tunes from the registered result with ``weights={"mae": "NAME@ALIAS"}`` (see
:func:`is_registry_reference`): the trainer downloads it in the pod, so no weights volume is needed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vitbench.trainer.inits.catalog import list_inits

#: Init names of the catalog (the one list: vitbench.trainer.inits.catalog, torch-free).
KNOWN_INITS: Final[tuple[str, ...]] = tuple(list_inits())
#: Exit code of ``vitbench`` for user/configuration errors; the Job fails at once on it.
CONFIG_ERROR_EXIT_CODE: Final[int] = 2
TRAINER_CONTAINER: Final[str] = "trainer"
PREFLIGHT_CONTAINER: Final[str] = "preflight"
GPU_RESOURCE: Final[str] = "nvidia.com/gpu"
LABEL_STUDY: Final[str] = "vitbench.io/study"
LABEL_INIT: Final[str] = "vitbench.io/init"
LABEL_RECIPE: Final[str] = "vitbench.io/recipe"
ANNOTATION_SPEC_HASH: Final[str] = "vitbench.io/spec-hash"
#: Pod label the chart's MLflow NetworkPolicy admits (training pods must reach the registry).
REGISTRY_CLIENT_LABEL: Final[str] = "vitbench.io/registry-client"
KUEUE_QUEUE_LABEL: Final[str] = "kueue.x-k8s.io/queue-name"
COMPLETION_INDEX_ANNOTATION: Final[str] = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABEL: Final[str] = "batch.kubernetes.io/job-name"
LABEL_COMPONENT: Final[str] = "app.kubernetes.io/component"
COMPONENT_FINETUNING: Final[str] = "benchmark"
COMPONENT_PRETRAINING: Final[str] = "pretraining"
#: Every Job of a study vitbench created (CLI or chart): its pre-trainings and fine-tunings.
STUDY_SELECTOR: Final[str] = (
    f"app.kubernetes.io/name=vitbench,{LABEL_COMPONENT} in ({COMPONENT_FINETUNING},{COMPONENT_PRETRAINING})"
)
# the chart's default (`make images` tags it; `make images push REGISTRY=...` + --image for a cluster)
DEFAULT_IMAGE: Final[str] = "vitbench/trainer:0.1.0"
DATA_MOUNT: Final[str] = "/data"
OUTPUTS_MOUNT: Final[str] = "/outputs"
WEIGHTS_MOUNT: Final[str] = "/weights"
#: ``vitbench pretrain --method`` values (each is also the init its release file loads as).
PRETRAIN_METHODS: Final[tuple[str, ...]] = ("mae", "supervised", "mocov3")
#: Pod hostnames are ``<job>-<index>`` and must fit a 63-character DNS label.
MAX_JOB_NAME: Final[int] = 52

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P)?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class Toleration(BaseModel):
    """A pod toleration (Kubernetes field names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"

    @field_validator("operator")
    @classmethod
    def _operator(cls, v: str) -> str:
        if v not in ("Exists", "Equal"):
            raise ValueError(f"toleration operator must be Exists or Equal, got {v!r}")
        return v

    def manifest(self) -> dict[str, Any]:
        """The toleration as a manifest dict (unset fields left out)."""
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        return out


GPU_TOLERATION: Final[Toleration] = Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")


class StudySpec(BaseModel):
    """Everything the user chose for one study; one Job is rendered per entry of ``inits``.

    Quantities (``cpu``, ``memory``, ``shm_size``) use Kubernetes notation ("8", "500m", "64Gi").
    ``gpus`` is per node (0 = CPU only); the run uses ``gpus * nodes`` GPUs in total.
    Outputs go to ``outputs_pvc`` mounted at ``/outputs`` unless ``outputs_s3`` (``s3://bucket/prefix``)
    is given, in which case the trainer writes there directly.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="study name: DNS label, prefix of every Job name")
    recipe: str
    inits: tuple[str, ...]
    gpus: int = Field(default=1, ge=0, le=16)
    nodes: int = Field(default=1, ge=1, le=64)
    namespace: str | None = None
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    cpu: str = "8"
    memory: str = "64Gi"
    shm_size: str = "16Gi"
    data_pvc: str = "vitbench-data"
    outputs_pvc: str | None = "vitbench-outputs"
    outputs_s3: str | None = None
    weights_pvc: str | None = None
    weights: Mapping[str, str] = Field(default_factory=dict)
    registry_configmap: str = "vitbench-registry"
    registry_secret: str | None = "vitbench-registry-credentials"
    overrides: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] | None = None
    queue_name: str | None = None
    backoff_limit: int = Field(default=3, ge=0, le=100, description="failures tolerated per node")
    ttl_seconds_after_finished: int = Field(default=7 * 24 * 3600, ge=0)
    active_deadline_seconds: int = Field(default=3 * 24 * 3600, ge=1)
    master_port: int = Field(default=29500, ge=1, le=65535)
    run_as_user: int = Field(default=10001, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 45:
            raise ValueError(
                f"study name {v!r} must be a DNS label: lowercase letters, digits and '-', starting with a "
                "letter, at most 45 characters"
            )
        return v

    @field_validator("inits")
    @classmethod
    def _inits(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("inits must name at least one initialization")
        unknown = [i for i in v if i not in KNOWN_INITS]
        if unknown:
            raise ValueError(
                f"unknown init(s) {', '.join(unknown)}; expected some of {', '.join(KNOWN_INITS)}"
            )
        if len(set(v)) != len(v):
            raise ValueError(f"inits list {', '.join(v)} names an init twice")
        return v

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError(f"recipe name {v!r} must be lowercase letters, digits and '-' (e.g. bench-b)")
        return v

    @field_validator("cpu", "memory", "shm_size")
    @classmethod
    def _quantity(cls, v: str) -> str:
        if not _QUANTITY.match(v):
            raise ValueError(f"{v!r} is not a Kubernetes quantity (expected e.g. 8, 500m, 64Gi)")
        return v

    @field_validator("namespace", "data_pvc", "outputs_pvc", "weights_pvc", "registry_configmap")
    @classmethod
    def _object_name(cls, v: str | None) -> str | None:
        if v is not None and (not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", v) or len(v) > 253):
            raise ValueError(f"{v!r} is not a valid Kubernetes object name (lowercase, digits, '-', '.')")
        return v

    @field_validator("outputs_s3")
    @classmethod
    def _s3(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", v):
            raise ValueError(f"outputs S3 URI {v!r} must look like s3://bucket/prefix")
        return v.rstrip("/") if v is not None else None

    @field_validator("image_pull_policy")
    @classmethod
    def _pull(cls, v: str) -> str:
        if v not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"image pull policy must be Always, IfNotPresent or Never, got {v!r}")
        return v

    @field_validator("queue_name")
    @classmethod
    def _queue(cls, v: str | None) -> str | None:
        if v is not None and (not _LABEL_VALUE.match(v) or not v or len(v) > 63):
            raise ValueError(f"Kueue queue name {v!r} is not a valid label value")
        return v

    @model_validator(mode="after")
    def _cross(self) -> StudySpec:
        if quantity_bytes(self.shm_size) >= quantity_bytes(self.memory):
            raise ValueError(
                f"shm_size {self.shm_size} must be smaller than memory {self.memory}: /dev/shm pages count "
                "against the container's memory limit"
            )
        if self.outputs_pvc is None and self.outputs_s3 is None:
            raise ValueError("outputs need a place: give an outputs PVC or an S3 URI")
        unknown = sorted(set(self.weights) - set(self.inits))
        if unknown:
            raise ValueError(f"weights given for init(s) not in the study: {', '.join(unknown)}")
        too_long = [i for i in self.inits if len(f"{self.name}-{i}") > MAX_JOB_NAME]
        if too_long:
            raise ValueError(
                f"Job name {self.name}-{too_long[0]} is longer than {MAX_JOB_NAME} characters; "
                "choose a shorter study name"
            )
        return self

    def jobs(self) -> list[JobSpec]:
        """One :class:`JobSpec` per init, in the order given."""
        return [JobSpec(study=self, init=i) for i in self.inits]


class JobSpec(BaseModel):
    """One init's training run in a study: the unit that becomes a Job (plus a Service when multi-node)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    study: StudySpec
    init: str

    @model_validator(mode="after")
    def _init_in_study(self) -> JobSpec:
        if self.init not in self.study.inits:
            raise ValueError(f"init {self.init!r} is not part of study {self.study.name!r}")
        return self

    @property
    def run_folder(self) -> str:
        """The run's folder in the study and its Job name's suffix: the init."""
        return self.init

    @property
    def name(self) -> str:
        """Deterministic Job name ``<study>-<run_folder>`` (also the headless Service's name)."""
        return job_name(self.study.name, self.run_folder)

    @property
    def out_dir(self) -> str:
        """Where the trainer writes this run: ``/outputs/<study>/<run_folder>`` or ``s3://.../<study>/...``."""
        root = self.study.outputs_s3 if self.study.outputs_s3 is not None else OUTPUTS_MOUNT
        return f"{root}/{self.study.name}/{self.run_folder}"

    @property
    def distributed(self) -> bool:
        """True when the run needs torchrun (several nodes or several GPUs)."""
        return self.study.nodes > 1 or self.study.gpus > 1

    @property
    def component(self) -> str:
        """``app.kubernetes.io/component`` of the Job (``benchmark``; ``pretraining`` for a pre-training)."""
        return COMPONENT_FINETUNING

    @property
    def preflight(self) -> bool:
        """Whether an init container runs ``vitbench data check`` (COCO data) before torchrun starts."""
        return self.distributed

    def run_args(self) -> list[str]:
        """The ``vitbench`` arguments (after the program name) the container runs."""
        return trainer_args(self)


class PretrainJobSpec(JobSpec):
    """A pre-training run (``vitbench pretrain``) rendered into the same Job skeleton as the fine-tuning
    runs: torchrun for several GPUs, Indexed Job + headless Service for several nodes, always ``--resume``.

    ``study`` carries the cluster settings; its ``recipe`` is the *pre-training* recipe (``tiny``, ``b``,
    ``mae-b``...) and ``inits == (method,)`` (the init its release file loads as). ``data`` is the image
    folder inside the data volume. The Job is ``<study>-pretrain-<method>``, its run folder
    ``<outputs>/<study>/pretrain-<method>``; its component label is ``pretraining`` (``bench status``
    lists it as ``pretrain <method>``), and it has no COCO preflight (the images need not be a COCO dataset).
    """

    data: str = DATA_MOUNT

    @model_validator(mode="after")
    def _pretrain(self) -> PretrainJobSpec:
        if self.init not in PRETRAIN_METHODS:
            raise ValueError(
                f"pre-training method {self.init!r} is unknown; expected one of {', '.join(PRETRAIN_METHODS)}"
            )
        if self.data != DATA_MOUNT and not self.data.startswith(f"{DATA_MOUNT}/"):
            raise ValueError(f"pre-training data {self.data!r} must be a folder under {DATA_MOUNT}")
        if self.study.weights or self.study.weights_pvc is not None:
            raise ValueError("a pre-training run takes no weights (leave out --weights and --weights-pvc)")
        if len(self.name) > MAX_JOB_NAME:
            raise ValueError(
                f"Job name {self.name} is longer than {MAX_JOB_NAME} characters; choose a shorter study name"
            )
        return self

    @property
    def run_folder(self) -> str:
        """``pretrain-<method>``: the Job is ``<study>-pretrain-<method>``."""
        return f"pretrain-{self.init}"

    @property
    def component(self) -> str:
        return COMPONENT_PRETRAINING

    @property
    def preflight(self) -> bool:
        return False

    def run_args(self) -> list[str]:
        """``pretrain --method M --recipe R --data DIR --out DIR --resume --json [--set k=v ...]``; the run
        registers its release file (the pod has the registry env)."""
        args = ["pretrain", "--method", self.init, "--recipe", self.study.recipe, "--data", self.data]
        args += ["--out", self.out_dir, "--resume", "--no-progress", "--json"]
        for override in self.study.overrides:
            args += ["--set", override]
        return args


_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "m": 10**-3}
_SUFFIX.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50})


def quantity_bytes(quantity: str) -> float:
    """A Kubernetes quantity ("16Gi", "500M", "8") as a number (bytes for memory quantities)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", quantity)
    if match is None or match.group(2) not in _SUFFIX:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def job_name(study: str, init: str) -> str:
    """The Job (and Service) name for ``init`` in ``study``."""
    return f"{study}-{init}"


def pretrain_job_name(study: str, method: str) -> str:
    """The Job (and Service) name of ``study``'s pre-training with ``method`` (``PretrainJobSpec.name``)."""
    return job_name(study, f"pretrain-{method}")


def is_registry_reference(weights: str) -> bool:
    """True when a ``--weights`` value names a registered version (``NAME@ALIAS``, ``NAME/N``,
    ``models:/...``): the trainer downloads it from the registry, so no weights volume is needed."""
    from vitbench.registry.weights import reads_as_ref

    return not weights.startswith(("/", ".")) and reads_as_ref(weights)  # a path in the pod is not one


def labels(job: JobSpec, managed_by: str = "vitbench-cli") -> dict[str, str]:
    """Standard ``app.kubernetes.io/*`` labels plus the study, init and recipe."""
    return {
        "app.kubernetes.io/name": "vitbench",
        LABEL_COMPONENT: job.component,
        "app.kubernetes.io/part-of": "vitbench",
        "app.kubernetes.io/instance": job.study.name,
        "app.kubernetes.io/managed-by": managed_by,
        LABEL_STUDY: job.study.name,
        LABEL_INIT: job.init,
        LABEL_RECIPE: job.study.recipe,
    }


def trainer_args(job: JobSpec) -> list[str]:
    """The ``vitbench train`` arguments (after the program name) for this run."""
    args = ["train", "--recipe", job.study.recipe, "--init", job.init, "--data", DATA_MOUNT]
    weights = job.study.weights.get(job.init)
    if weights is not None:
        args += ["--weights", weights]
    # --json ends the log with the final iteration and metrics, which `bench status` reads.
    args += ["--out", job.out_dir, "--resume", "--json"]
    for override in job.study.overrides:
        args += ["--set", override]
    return args


def container_command(job: JobSpec) -> list[str]:
    """The trainer container's full command.

    Single GPU or CPU: ``vitbench train ...``. One node, G GPUs: ``torchrun --standalone``. N nodes:
    ``torchrun --nnodes N --nproc-per-node G --node-rank $(NODE_RANK) --master-addr <job>-0.<svc>``, where
    ``NODE_RANK`` comes from the pod's completion-index annotation (the kubelet expands ``$(VAR)``).
    """
    s = job.study
    if not job.distributed:
        return ["vitbench", *job.run_args()]
    nproc = str(max(s.gpus, 1))
    if s.nodes == 1:
        launcher = ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", nproc]
    else:
        launcher = [
            "torchrun",
            "--nnodes",
            str(s.nodes),
            "--nproc-per-node",
            nproc,
            "--node-rank",
            "$(NODE_RANK)",
            "--master-addr",
            f"{job.name}-0.{job.name}",
            "--master-port",
            str(s.master_port),
        ]
    return [*launcher, "-m", "vitbench.cli.main", *job.run_args()]


def pod_failure_policy(preflight: bool = False) -> dict[str, Any]:
    """Ignore disruptions; fail the Job at once on the configuration-error exit code.

    With the ``preflight`` init container, any failure of the dataset check (exit 1: problems found,
    2: usage error) also fails the Job: a retry would find the same dataset. ``status: "True"`` is
    written out because the 1.25–1.34 schemas require it.
    """
    rules: list[dict[str, Any]] = [
        {
            "action": "FailJob",
            "onExitCodes": {"operator": "In", "values": [CONFIG_ERROR_EXIT_CODE]},
        },
    ]
    if preflight:
        rules.append(
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": PREFLIGHT_CONTAINER, "operator": "In", "values": [1, 2]},
            }
        )
    rules.append({"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]})
    return {"rules": rules}


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _env(job: JobSpec) -> list[dict[str, Any]]:
    s = job.study
    env: list[dict[str, Any]] = [
        {
            "name": "MLFLOW_TRACKING_URI",
            "valueFrom": {"configMapKeyRef": {"name": s.registry_configmap, "key": "MLFLOW_TRACKING_URI"}},
        },
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "TORCH_HOME", "value": "/tmp/cache/torch"},
        {"name": "VITBENCH_STUDY", "value": s.name},
        {"name": "VITBENCH_INIT", "value": job.init},
    ]
    if s.nodes > 1:
        env.append(
            {
                "name": "NODE_RANK",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
                },
            }
        )
    return env


def _volumes(job: JobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, trainer volume mounts)."""
    s = job.study
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": s.data_pvc, "readOnly": True}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm_size}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if s.outputs_s3 is None and s.outputs_pvc is not None:
        volumes.append({"name": "outputs", "persistentVolumeClaim": {"claimName": s.outputs_pvc}})
        mounts.append({"name": "outputs", "mountPath": OUTPUTS_MOUNT})
    if s.weights_pvc is not None:
        volumes.append(
            {"name": "weights", "persistentVolumeClaim": {"claimName": s.weights_pvc, "readOnly": True}}
        )
        mounts.append({"name": "weights", "mountPath": WEIGHTS_MOUNT, "readOnly": True})
    return volumes, mounts


def render_job(job: JobSpec, managed_by: str = "vitbench-cli") -> dict[str, Any]:
    """The ``batch/v1`` Job for one init (a plain dict, valid for Kubernetes 1.30–1.37 strict schemas)."""
    s = job.study
    meta_labels = labels(job, managed_by)
    pod_labels = dict(meta_labels) | {REGISTRY_CLIENT_LABEL: "true"}
    if s.queue_name is not None:
        meta_labels[KUEUE_QUEUE_LABEL] = s.queue_name
    volumes, mounts = _volumes(job)
    resources: dict[str, Any] = {
        "requests": {"cpu": s.cpu, "memory": s.memory},
        "limits": {"memory": s.memory},
    }
    if s.gpus > 0:
        resources["limits"][GPU_RESOURCE] = str(s.gpus)
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "command": container_command(job),
        "env": _env(job),
        "resources": resources,
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }
    if s.registry_secret is not None:
        # optional: a cluster whose registry needs no credentials runs without creating the Secret.
        container["envFrom"] = [{"secretRef": {"name": s.registry_secret, "optional": True}}]
    if s.nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": s.master_port, "protocol": "TCP"}]
    tolerations = s.tolerations if s.tolerations is not None else ((GPU_TOLERATION,) if s.gpus > 0 else ())
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": s.run_as_user,
            "runAsGroup": s.run_as_user,
            "fsGroup": s.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if job.preflight:
        # torchrun turns a worker's exit code into 1: check the configuration before it starts.
        pod_spec["initContainers"] = [
            {
                "name": PREFLIGHT_CONTAINER,
                "image": s.image,
                "imagePullPolicy": s.image_pull_policy,
                # Annotations and files only: decoding every COCO image would take longer than it saves.
                "command": ["vitbench", "data", "check", "--data", DATA_MOUNT, "--no-decode"],
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
                "securityContext": _security_context(),
                "volumeMounts": [dict(m) for m in mounts if m["name"] in ("data", "tmp")],
                "env": [{"name": "HOME", "value": "/tmp"}],
            }
        ]
    if s.service_account is not None:
        pod_spec["serviceAccountName"] = s.service_account
    pod_spec["automountServiceAccountToken"] = False
    if s.node_selector:
        pod_spec["nodeSelector"] = dict(s.node_selector)
    if tolerations:
        pod_spec["tolerations"] = [t.manifest() for t in tolerations]
    if s.nodes > 1:
        pod_spec["subdomain"] = job.name
    spec: dict[str, Any] = {
        # A crash on one node takes the others down with it (the collective fails), so one incident costs
        # up to `nodes` failed pods: the limit counts incidents, not pods.
        "backoffLimit": s.backoff_limit * s.nodes,
        "activeDeadlineSeconds": s.active_deadline_seconds,
        "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
        "podFailurePolicy": pod_failure_policy(preflight=job.preflight),
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if s.nodes > 1:
        spec.update({"completionMode": "Indexed", "completions": s.nodes, "parallelism": s.nodes})
    if s.queue_name is not None:
        spec["suspend"] = True
    metadata: dict[str, Any] = {"name": job.name, "labels": meta_labels}
    if s.namespace is not None:
        metadata["namespace"] = s.namespace
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
    metadata["annotations"] = {ANNOTATION_SPEC_HASH: spec_hash(spec)}
    return manifest


def render_service(job: JobSpec, managed_by: str = "vitbench-cli") -> dict[str, Any] | None:
    """The headless Service giving multi-node pods stable DNS names; ``None`` for single-node runs."""
    if job.study.nodes <= 1:
        return None
    metadata: dict[str, Any] = {"name": job.name, "labels": labels(job, managed_by)}
    if job.study.namespace is not None:
        metadata["namespace"] = job.study.namespace
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "clusterIP": "None",
            # Pods must resolve each other before they are Ready (the rendezvous happens at start-up).
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: job.name},
            "ports": [
                {"name": "rendezvous", "port": job.study.master_port, "targetPort": job.study.master_port}
            ],
        },
    }


def render_study(study: StudySpec, managed_by: str = "vitbench-cli") -> list[dict[str, Any]]:
    """All manifests of a study in apply order: for each init its Service (multi-node only), then its Job."""
    docs: list[dict[str, Any]] = []
    for job in study.jobs():
        service = render_service(job, managed_by)
        if service is not None:
            docs.append(service)
        docs.append(render_job(job, managed_by))
    return docs


def render_pretraining(job: PretrainJobSpec, managed_by: str = "vitbench-cli") -> list[dict[str, Any]]:
    """A pre-training run's manifests in apply order: its Service (multi-node only), then its Job."""
    service = render_service(job, managed_by)
    return [*([service] if service is not None else []), render_job(job, managed_by)]


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A short, stable digest of a Job spec; submit compares it to tell "unchanged" from "different"."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
