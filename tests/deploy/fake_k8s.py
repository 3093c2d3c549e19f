"""An in-memory stand-in for the few ``BatchV1Api``/``CoreV1Api`` methods that ``deploy.k8s`` calls.

It behaves like the API server where the client relies on it: objects are deserialized into real
``kubernetes.client`` models, creating an existing name raises ``ApiException(409)``, reading or deleting a
missing one raises ``ApiException(404)``, label selectors (``k=v`` joined by commas) filter lists.
Tests drive the cluster side (pods, Job status) with :meth:`FakeCluster.add_pod` / :meth:`set_job_status`.
"""

from __future__ import annotations

import inspect
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client import ApiClient, V1Job, V1JobList, V1Pod, V1PodList, V1Service
from kubernetes.client.exceptions import ApiException

#: The namespace a fake ``bench`` connection falls back to when no ``--namespace`` is given.
NS = "research"

_API = ApiClient()
# kubernetes >= 37 deserializes the response text (with a content type); older clients take a response object.
_TEXT_DESERIALIZE = "content_type" in inspect.signature(ApiClient.deserialize).parameters


@dataclass
class _Response:
    data: str


def _model(body: dict[str, Any], cls: str) -> Any:
    """Turn a manifest dict into a ``kubernetes.client`` model, as the real client does with responses."""
    text = json.dumps(_API.sanitize_for_serialization(body))
    if _TEXT_DESERIALIZE:
        return _API.deserialize(text, cls, "application/json")
    return _API.deserialize(_Response(text), cls)  # type: ignore[call-arg]


def _matches(labels: dict[str, str] | None, selector: str | None) -> bool:
    """Kubernetes label-selector semantics: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
    ``k`` and ``!k``, joined by commas (outside the parentheses)."""
    if not selector:
        return True
    labels = labels or {}
    for term in re.split(r",(?![^()]*\))", selector):
        term = term.strip()
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            ok = (labels.get(key) in values) if op == "in" else (labels.get(key) not in values)
        elif "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in term:
            key, value = re.split(r"==?", term, maxsplit=1)
            ok = labels.get(key.strip()) == value.strip()
        elif term.startswith("!"):
            ok = term[1:] not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


def _get(store: dict[tuple[str, str], Any], namespace: str, name: str) -> Any:
    """The object ``name`` in ``namespace``; ``ApiException(404)`` when there is none."""
    try:
        return store[(namespace, name)]
    except KeyError:
        raise ApiException(status=404, reason="NotFound") from None


def _listed(store: dict[tuple[str, str], Any], namespace: str, selector: str | None) -> list[Any]:
    """The objects of ``namespace`` whose labels match ``selector``."""
    return [
        o
        for (ns, _), o in store.items()
        if ns == namespace and o.metadata is not None and _matches(o.metadata.labels, selector)
    ]


class FakeCluster:
    """State shared by :class:`FakeBatchApi` and :class:`FakeCoreApi`; records every mutating call."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], V1Job] = {}
        self.services: dict[tuple[str, str], V1Service] = {}
        self.pods: dict[tuple[str, str], V1Pod] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[str, str, str]] = []
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def add_pod(
        self,
        namespace: str,
        job: str,
        name: str,
        phase: str,
        *,
        index: int | None = None,
        disruption_reason: str | None = None,
        exit_code: int | None = None,
        log: str = "",
        annotations: dict[str, str] | None = None,
    ) -> None:
        """Add a pod of ``job`` like the Job controller would (labels, index annotation, conditions)."""
        ann = dict(annotations or {})
        if index is not None:
            ann["batch.kubernetes.io/job-completion-index"] = str(index)
        status: dict[str, Any] = {"phase": phase}
        if disruption_reason is not None:
            status["conditions"] = [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": disruption_reason,
                    "message": "Kubernetes Scheduler: PodPreempted",
                }
            ]
        if exit_code is not None:
            status["containerStatuses"] = [
                {
                    "name": "trainer",
                    "image": "img",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": exit_code, "reason": "Error"}},
                }
            ]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"batch.kubernetes.io/job-name": job, "job-name": job},
                "annotations": ann,
                "creationTimestamp": self._tick().isoformat(),
            },
            "spec": {"containers": [{"name": "trainer", "image": "img"}]},
            "status": status,
        }
        self.pods[(namespace, name)] = _model(body, "V1Pod")
        self.logs[(namespace, name)] = log

    def set_job_status(self, namespace: str, name: str, **status: Any) -> None:
        """Replace a Job's status with manifest-style fields (``active``, ``failed``, ``conditions``...)."""
        job = self.jobs[(namespace, name)]
        body = _API.sanitize_for_serialization(job)
        body["status"] = status
        self.jobs[(namespace, name)] = _model(body, "V1Job")


class _FakeApi:
    """An API group backed by a :class:`FakeCluster`."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def _admit(self, store: dict[tuple[str, str], Any], namespace: str, body: Any, kind: str) -> str:
        """The name of a new object of ``kind``, recorded as created; ``ApiException(409)`` if it exists."""
        name = str(body["metadata"]["name"])
        if (namespace, name) in store:
            raise ApiException(status=409, reason="AlreadyExists")
        self.cluster.calls.append(("create", kind, name))
        return name


class FakeBatchApi(_FakeApi):
    """``BatchV1Api`` subset backed by a :class:`FakeCluster`."""

    def create_namespaced_job(self, namespace: str, body: Any, **kwargs: Any) -> V1Job:
        name = self._admit(self.cluster.jobs, namespace, body, "Job")
        metadata = {**body["metadata"], "uid": str(uuid.uuid4())}
        job = _model({**body, "metadata": metadata, "status": {}}, "V1Job")
        job.metadata.creation_timestamp = self.cluster._tick()
        self.cluster.jobs[(namespace, name)] = job
        return job

    def read_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> V1Job:
        return _get(self.cluster.jobs, namespace, name)

    def list_namespaced_job(
        self, namespace: str, label_selector: str | None = None, **kwargs: Any
    ) -> V1JobList:
        return V1JobList(items=_listed(self.cluster.jobs, namespace, label_selector))

    def delete_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> None:
        uid = _get(self.cluster.jobs, namespace, name).metadata.uid
        self.cluster.calls.append(("delete", "Job", f"{name}:{kwargs.get('propagation_policy')}"))
        del self.cluster.jobs[(namespace, name)]
        # The garbage collector removes what the Job owns: Services with an ownerReference to it...
        for key, svc in list(self.cluster.services.items()):
            owners = (svc.metadata.owner_references if svc.metadata is not None else None) or []
            if key[0] == namespace and any(o.uid == uid for o in owners):
                del self.cluster.services[key]
        # ...and, unless propagation is Orphan, its pods.
        if kwargs.get("propagation_policy") in ("Background", "Foreground"):
            for key, pod in list(self.cluster.pods.items()):
                labels = (pod.metadata.labels if pod.metadata is not None else None) or {}
                if key[0] == namespace and labels.get("batch.kubernetes.io/job-name") == name:
                    del self.cluster.pods[key]


class FakeCoreApi(_FakeApi):
    """``CoreV1Api`` subset backed by a :class:`FakeCluster`."""

    def create_namespaced_service(self, namespace: str, body: Any, **kwargs: Any) -> V1Service:
        name = self._admit(self.cluster.services, namespace, body, "Service")
        svc = _model(body, "V1Service")
        self.cluster.services[(namespace, name)] = svc
        return svc

    def read_namespaced_service(self, name: str, namespace: str, **kwargs: Any) -> V1Service:
        return _get(self.cluster.services, namespace, name)

    def delete_namespaced_service(self, name: str, namespace: str, **kwargs: Any) -> None:
        _get(self.cluster.services, namespace, name)
        self.cluster.calls.append(("delete", "Service", name))
        del self.cluster.services[(namespace, name)]

    def list_namespaced_pod(
        self, namespace: str, label_selector: str | None = None, **kwargs: Any
    ) -> V1PodList:
        return V1PodList(items=_listed(self.cluster.pods, namespace, label_selector))

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> Any:
        _get(self.cluster.pods, namespace, name)
        text = self.cluster.logs.get((namespace, name), "")
        tail = kwargs.get("tail_lines")
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:])
        if kwargs.get("_preload_content") is False:  # the raw urllib3 response the client hands back
            return FakeStreamResponse(text.encode())
        return text


class FakeStreamResponse:
    """What ``read_namespaced_pod_log(..., _preload_content=False)`` returns: a streamable HTTP response."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.released = False

    def stream(self, amt: int = 4096) -> Iterator[bytes]:
        for i in range(0, len(self.body), amt):
            yield self.body[i : i + amt]

    def release_conn(self) -> None:
        self.released = True
