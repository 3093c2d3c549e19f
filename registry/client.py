"""Torch-free model registry client on MLflow.

One :class:`RegistryClient` talks to either the embedded store (SQLite + a local artifact folder,
no server) or a remote ``mlflow server``. It logs training runs (params, metrics, artifacts),
registers model versions with their provenance tags, resolves references (``name@alias`` or
``name/version``), promotes aliases, and downloads artifacts with SHA-256 verification: a file
whose digest differs from the one recorded at registration is refused.

Every call against an HTTP registry runs under bounded MLflow HTTP settings (timeout and retries
set for the duration of the call only), so an unreachable URI fails in seconds with a clear message.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from vitbench.registry.hashing import HashMismatchError, sha256_file, verify_file
from vitbench.registry.manifest import MANIFEST_FILE, ONNX_FILE, ManifestError, ModelManifest

T = TypeVar("T")

#: Tags every version registered by vitbench carries (see :meth:`RegistryClient.register_version`).
VERSION_TAGS = ("init", "recipe", "dataset", "ap_box", "ap_mask", "sha256", "code_version")
#: Prefix of the version tags that record promotions (one tag per event, keyed by its UTC time).
PROMOTION_TAG_PREFIX = "vitbench.promotion."
CHECKPOINT_PATH = "checkpoint"
EXPORT_PATH = "export"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$")
_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,254}$")
_HTTP_ENV_LOCK = threading.RLock()


class RegistryError(Exception):
    """A registry operation failed for a reason the user can act on (the message says which)."""


class RegistryUnavailableError(RegistryError):
    """The registry URI did not answer within the client's timeout."""


class RegistryPermissionError(RegistryError):
    """The registry refused the request: no credentials (HTTP 401) or not allowed (HTTP 403)."""


class ModelNotFoundError(RegistryError):
    """The reference names a model, version or alias that does not exist."""


class IntegrityError(RegistryError):
    """A downloaded artifact does not match the SHA-256 recorded for it, or cannot be verified."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: ``name@alias`` or ``name/version`` (``models:/`` prefix accepted)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``text``; raise :class:`RegistryError` naming the expected forms."""
        raw = text.strip()
        body = raw.removeprefix("models:/")
        expected = "expected NAME@ALIAS (e.g. vitdet-tiny@champion) or NAME/VERSION (e.g. vitdet-tiny/3)"
        if "@" in body:
            name, _, alias = body.partition("@")
            if not _NAME_RE.match(name) or not _ALIAS_RE.match(alias):
                raise RegistryError(f"bad model reference {text!r}: {expected}")
            return cls(name=name, alias=alias)
        if "/" in body:
            name, _, version = body.rpartition("/")
            if not _NAME_RE.match(name) or not version.isdigit() or int(version) < 1:
                raise RegistryError(f"bad model reference {text!r}: {expected}")
            return cls(name=name, version=str(int(version)))
        raise RegistryError(f"bad model reference {text!r}: {expected}")

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version; ``version`` is always a string (``'3'``)."""

    name: str
    version: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    run_id: str | None
    source: str
    status: str
    created_ms: int
    description: str | None = None

    @property
    def ref(self) -> str:
        """``name/version``."""
        return f"{self.name}/{self.version}"

    @property
    def promotions(self) -> list[PromotionEvent]:
        """Alias events recorded on this version by :meth:`RegistryClient.promote`, oldest first."""
        events = []
        for key in sorted(k for k in self.tags if k.startswith(PROMOTION_TAG_PREFIX)):
            event = PromotionEvent.from_tag(self.tags[key])
            if event is not None:
                events.append(event)
        return events

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with the promotion history parsed from the tags)."""
        return {
            **asdict(self),
            "aliases": list(self.aliases),
            "ref": self.ref,
            "promotions": [e.to_dict() for e in self.promotions],
        }


@dataclass(frozen=True)
class PromotionEvent:
    """One alias event on a version: who (``by``), when (``at``, ISO-8601 UTC) and what.

    ``action`` is ``promoted`` (the alias now points here; ``previous`` is the version that held it,
    or None), ``replaced`` (the alias moved from here to version ``next``) or ``removed``.
    ``identity`` says where ``by`` comes from: ``mlflow`` (the registry user the client authenticated
    as) or ``os`` (the local user name, embedded registry or no credentials).
    """

    at: str
    action: str
    alias: str
    by: str
    identity: str
    previous: str | None = None
    next: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def to_tag(self) -> str:
        """The tag value (compact JSON)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_tag(cls, value: str) -> PromotionEvent | None:
        """Parse a tag value; None for one that is not a promotion record."""
        try:
            data = json.loads(value)
            required = [str(data[k]) for k in ("at", "action", "alias", "by", "identity")]
        except (ValueError, TypeError, KeyError):
            return None

        def opt(key: str) -> str | None:
            return None if data.get(key) is None else str(data[key])

        at, action, alias, by, identity = required
        return cls(at, action, alias, by, identity, previous=opt("previous"), next=opt("next"))


@dataclass(frozen=True)
class RegisteredModelInfo:
    """A registered model: its aliases (alias -> version) and its versions, newest first."""

    name: str
    description: str | None
    aliases: dict[str, str]
    versions: tuple[ModelVersionInfo, ...]

    @property
    def latest(self) -> ModelVersionInfo | None:
        """The highest version number, or None for a model without versions."""
        return self.versions[0] if self.versions else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "description": self.description,
            "aliases": dict(self.aliases),
            "versions": [v.to_dict() for v in self.versions],
        }


@dataclass(frozen=True)
class Lineage:
    """A version with the run that produced it: resolved recipe (params), metrics, artifacts."""

    version: ModelVersionInfo
    experiment: str | None
    run_name: str | None
    run_status: str | None
    start_ms: int | None
    end_ms: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "version": self.version.to_dict(),
            "run": {
                "id": self.version.run_id,
                "experiment": self.experiment,
                "name": self.run_name,
                "status": self.run_status,
                "start_ms": self.start_ms,
                "end_ms": self.end_ms,
                "params": dict(self.params),
                "metrics": dict(self.metrics),
                "artifacts": list(self.artifacts),
            },
        }


@dataclass(frozen=True)
class DownloadResult:
    """A verified download: ``path`` is the primary artifact, its digest matched ``sha256``."""

    path: Path
    sha256: str
    version: ModelVersionInfo


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to dotted keys with string values (lists as JSON-ish text)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{full}."))
        elif isinstance(value, list | tuple):
            out[full] = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            out[full] = str(value)
    return out


def _none_if_missing(fetch: Callable[[], T]) -> T | None:
    """``fetch()``, or None when MLflow answers that the model or version does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return fetch()
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


class RegistryClient:
    """MLflow-backed registry: log runs, register versions, resolve, promote, download verified artifacts.

    Args:
        tracking_uri: ``sqlite:///...``, ``postgresql+psycopg2://...`` or ``http(s)://host:port``.
        registry_uri: model-registry URI when it differs from the tracking URI.
        timeout_s: per-request HTTP timeout in seconds (rounded up to whole seconds for MLflow).
        max_retries: HTTP retries per request (connection errors and 429/5xx).
        artifact_root: artifact location for experiments this client creates (embedded mode);
            None lets the server decide (proxied artifacts).
        username, password: HTTP basic-auth credentials for an ``mlflow server --app-name basic-auth``;
            None (the default) uses MLflow's standard ``MLFLOW_TRACKING_USERNAME`` /
            ``MLFLOW_TRACKING_PASSWORD`` environment variables, as every MLflow client does.
    """

    def __init__(
        self,
        tracking_uri: str,
        registry_uri: str | None = None,
        timeout_s: float = 10.0,
        *,
        max_retries: int = 2,
        artifact_root: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not tracking_uri or not tracking_uri.strip():
            raise RegistryError(
                "empty tracking URI: expected sqlite:///PATH, postgresql+psycopg2://... or http(s)://"
            )
        if timeout_s <= 0:
            raise RegistryError(f"timeout_s must be positive, got {timeout_s}")
        if tracking_uri.startswith("file:") or tracking_uri.startswith("/"):
            raise RegistryError(
                f"tracking URI {tracking_uri!r} is MLflow's file store, which is in maintenance mode: "
                "use sqlite:///PATH/mlflow.db or an http(s):// mlflow server"
            )
        self.tracking_uri = tracking_uri.strip()
        self.registry_uri = (registry_uri or tracking_uri).strip()
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.artifact_root = artifact_root
        if (username is None) != (password is None):
            raise RegistryError("give both username and password, or neither (then MLFLOW_TRACKING_* apply)")
        self._credentials = (username, password) if username is not None and password is not None else None
        self.home: Path | None = None
        self._client: Any = None

    @classmethod
    def embedded(cls, home: Path) -> RegistryClient:
        """The no-server default: SQLite at ``home/mlflow.db``, artifacts under ``home/artifacts``.

        The home is relocatable: MLflow records absolute ``file://`` artifact locations, but this client
        reads and writes a run's artifacts under *this* home's ``artifacts/`` folder (see
        :func:`relocate_artifact_uri`), so a home that was copied, moved or mounted at another path
        still resolves, downloads and verifies its versions.
        """
        home = Path(home).expanduser().resolve()
        try:
            (home / "artifacts").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create the registry home {home}: {exc.strerror or exc}") from exc
        client = cls(f"sqlite:///{home / 'mlflow.db'}", artifact_root=(home / "artifacts").as_uri())
        client.home = home
        return client

    def __repr__(self) -> str:
        return f"RegistryClient({self.tracking_uri!r})"

    # ------------------------------------------------------------------ plumbing
    @property
    def is_http(self) -> bool:
        """True when the tracking or registry URI is an HTTP(S) server."""
        return any(u.startswith(("http://", "https://")) for u in (self.tracking_uri, self.registry_uri))

    @property
    def user(self) -> str:
        """Who this client acts as: the registry user (HTTP with credentials) or the local user."""
        return self._identity()[0]

    def _identity(self) -> tuple[str, str]:
        if self.is_http:
            name = self._credentials[0] if self._credentials else os.environ.get("MLFLOW_TRACKING_USERNAME")
            if name:
                return name, "mlflow"
        try:
            return getpass.getuser(), "os"
        except (KeyError, OSError):  # no passwd entry for the uid (some containers)
            return f"uid-{os.getuid()}", "os"

    @property
    def mlflow(self) -> Any:
        """The underlying ``mlflow.MlflowClient`` (created on first use)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """Apply this client's HTTP timeout/retries (and no progress bars) to MLflow for one call."""
        settings = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        if self.is_http:
            settings |= {
                "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(self.timeout_s))),
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
            }
            if self._credentials is not None:
                settings |= {
                    "MLFLOW_TRACKING_USERNAME": self._credentials[0],
                    "MLFLOW_TRACKING_PASSWORD": self._credentials[1],
                }
        with _HTTP_ENV_LOCK:
            saved = {k: os.environ.get(k) for k in settings}
            os.environ.update(settings)
            try:
                yield
            finally:
                for key, old in saved.items():
                    if old is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = old

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one MLflow call under bounded settings; translate failures to :class:`RegistryError`."""
        from mlflow.exceptions import MlflowException

        try:
            with self._bounded():
                return fn()
        except RegistryError:
            raise
        except MlflowException as exc:
            msg = str(exc.message if hasattr(exc, "message") else exc)
            denied = _denied_status(msg)
            if denied is not None:
                raise self._denied(what, denied) from exc
            if "API request to" in msg and ("failed with" in msg or "Max retries" in msg):
                raise RegistryUnavailableError(
                    f"registry {self.tracking_uri} did not answer ({what}; timeout {self.timeout_s:g} s, "
                    f"{self.max_retries} retries): {_short(msg)}"
                ) from exc
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise ModelNotFoundError(f"{what}: {_short(msg)}") from exc
            raise RegistryError(f"{what} failed: {_short(msg)}") from exc
        except OSError as exc:  # requests' HTTPError too (an artifact upload answered 401/403)
            status = _denied_status(str(exc))
            if status is not None:
                raise self._denied(what, status) from exc
            raise RegistryError(f"{what} failed: {exc}") from exc
        except Exception as exc:  # sqlalchemy / requests errors surface here
            name = type(exc).__name__
            if name in {"OperationalError", "ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout"}:
                raise RegistryUnavailableError(
                    f"registry {self.tracking_uri} is not usable ({what}): {_short(str(exc))}"
                ) from exc
            raise

    def _denied(self, what: str, status: int) -> RegistryPermissionError:
        if status == 401:
            return RegistryPermissionError(
                f"registry {self.tracking_uri} requires authentication ({what}): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (HTTP 401)"
            )
        return RegistryPermissionError(
            f"registry {self.tracking_uri} refused to {what} for user {self.user!r}: "
            "permission denied (HTTP 403); ask the registry's admin for the grant"
        )

    # ------------------------------------------------------------------ runs
    def _experiment_id(self, experiment: str) -> str:
        exp = self._call(
            f"look up experiment {experiment!r}", lambda: self.mlflow.get_experiment_by_name(experiment)
        )
        if exp is not None:
            return str(exp.experiment_id)
        location = f"{self.artifact_root.rstrip('/')}/{_safe(experiment)}" if self.artifact_root else None
        return str(
            self._call(
                f"create experiment {experiment!r}",
                lambda: self.mlflow.create_experiment(experiment, artifact_location=location),
            )
        )

    def prepare(self, experiments: Sequence[str] = (), models: Sequence[str] = ()) -> None:
        """Create the store (an embedded one is created and migrated on first use), ``experiments`` and
        registered ``models`` now: processes started next then only add runs and versions, and never
        race each other to create them (SQLite refuses a second concurrent schema migration)."""
        for experiment in experiments:
            self._experiment_id(experiment)
        for name in models:
            self._ensure_model(name)

    def start_run(
        self, experiment: str, run_name: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        """Create a run in ``experiment`` (created if missing); return its id."""
        exp_id = self._experiment_id(experiment)
        run = self._call(
            "create run",
            lambda: self.mlflow.create_run(
                exp_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()}
            ),
        )
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log (nested) params flattened to dotted keys, in batches of 100."""
        from mlflow.entities import Param

        flat = flatten_params(params)
        items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            batch = items[i : i + 100]
            self._call("log params", partial(self.mlflow.log_batch, run_id, params=batch))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at ``step`` (non-finite values are skipped: MLflow rejects them over REST)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if math.isfinite(float(v))]
        if items:
            self._call("log metrics", lambda: self.mlflow.log_batch(run_id, metrics=items))

    def _home_repo(self, run_id: str) -> Any | None:
        """For an embedded home: the run's artifact repository inside this home; else None (MLflow's)."""
        if self.home is None:
            return None
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        run = self._call(f"look up run {run_id}", lambda: self.mlflow.get_run(run_id))
        uri = relocate_artifact_uri(str(run.info.artifact_uri), self.home / "artifacts")
        return get_artifact_repository(uri)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a directory's contents to the run under ``artifact_path``."""
        path = Path(path)
        if not path.exists():
            raise RegistryError(f"cannot log artifact {path}: no such file or directory")
        repo = self._home_repo(run_id)
        if repo is not None:
            log = repo.log_artifacts if path.is_dir() else repo.log_artifact
            self._call("log artifacts", lambda: log(str(path), artifact_path))
            return
        if path.is_dir():
            self._call("log artifacts", lambda: self.mlflow.log_artifacts(run_id, str(path), artifact_path))
        else:
            self._call("log artifact", lambda: self.mlflow.log_artifact(run_id, str(path), artifact_path))

    def set_run_tag(self, run_id: str, key: str, value: str) -> None:
        """Tag a run."""
        self._call("tag run", lambda: self.mlflow.set_tag(run_id, key, str(value)))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run FINISHED, FAILED or KILLED."""
        self._call("end run", lambda: self.mlflow.set_terminated(run_id, status=status))

    # ------------------------------------------------------------------ registration
    def register_version(
        self,
        name: str,
        run_id: str,
        checkpoint: Path,
        tags: Mapping[str, Any],
        *,
        artifact_path: str = CHECKPOINT_PATH,
        description: str | None = None,
    ) -> ModelVersionInfo:
        """Upload ``checkpoint`` to the run and register it as a new version of ``name``.

        The version's source is ``runs:/<run_id>/<artifact_path>``; its tags are ``tags`` plus
        ``sha256`` (of the checkpoint file, computed here) and ``artifact`` (its file name).
        """
        if not _NAME_RE.match(name):
            raise RegistryError(f"bad model name {name!r}: use letters, digits, '.', '_' or '-'")
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise RegistryError(f"cannot register {checkpoint}: not a file")
        digest = sha256_file(checkpoint)
        all_tags = {k: str(v) for k, v in tags.items()} | {"sha256": digest, "artifact": checkpoint.name}
        self.log_artifact(run_id, checkpoint, artifact_path)
        self._ensure_model(name)
        mv = self._call(
            f"register a version of {name!r}",
            lambda: self.mlflow.create_model_version(
                name,
                source=f"runs:/{run_id}/{artifact_path}",
                run_id=run_id,
                tags=all_tags,
                description=description,
            ),
        )
        return _version_info(mv)

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        def create() -> None:
            try:
                self.mlflow.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

        self._call(f"create registered model {name!r}", create)

    def set_version_tag(
        self, ref: str | ModelRef | ModelVersionInfo, key: str, value: str
    ) -> ModelVersionInfo:
        """Set one tag on a version; return the refreshed version."""
        info = ref if isinstance(ref, ModelVersionInfo) else self.resolve(ref)
        self._call(
            f"tag {info.ref}",
            lambda: self.mlflow.set_model_version_tag(info.name, info.version, key, str(value)),
        )
        return self.resolve(ModelRef(info.name, version=info.version))

    # ------------------------------------------------------------------ queries
    def _model_names(self) -> list[str]:
        models = self._call("list models", lambda: self.mlflow.search_registered_models(max_results=1000))
        return sorted(m.name for m in models)

    def _get_model(self, name: str) -> Any:
        def get() -> Any:
            return _none_if_missing(lambda: self.mlflow.get_registered_model(name))

        model = self._call(f"look up model {name!r}", get)
        if model is None:
            names = self._model_names()
            known = (
                ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "(none registered)"
            )
            raise ModelNotFoundError(
                f"unknown model {name!r} in registry {self.tracking_uri}; known models: {known}"
            )
        return model

    def _versions(self, name: str, aliases: Mapping[str, str] | None = None) -> list[ModelVersionInfo]:
        """Versions newest first; aliases filled from ``aliases`` (alias -> version), since version
        searches do not return them on every store."""
        mvs = self._call(
            f"list versions of {name!r}",
            lambda: self.mlflow.search_model_versions(f"name='{name}'", max_results=10000),
        )
        infos = [_version_info(mv) for mv in mvs]
        if aliases is not None:
            by_version: dict[str, list[str]] = {}
            for alias, version in sorted(aliases.items()):
                by_version.setdefault(str(version), []).append(alias)
            infos = [replace(v, aliases=tuple(by_version.get(v.version, ()))) for v in infos]
        return sorted(infos, key=lambda v: -int(v.version))

    def resolve(self, ref: str | ModelRef) -> ModelVersionInfo:
        """The version ``ref`` names; :class:`ModelNotFoundError` says what exists instead."""
        r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        model = self._get_model(r.name)
        aliases = {str(k): str(v) for k, v in (model.aliases or {}).items()}
        version = r.version
        if r.alias is not None:
            if r.alias not in aliases:
                have = ", ".join(f"{a}->{v}" for a, v in sorted(aliases.items())) or "(none)"
                raise ModelNotFoundError(f"model {r.name!r} has no alias {r.alias!r}; its aliases: {have}")
            version = aliases[r.alias]
        assert version is not None
        mv = self._call(
            f"look up {r}", lambda: _none_if_missing(lambda: self.mlflow.get_model_version(r.name, version))
        )
        if mv is None:
            have = ", ".join(v.version for v in reversed(self._versions(r.name))) or "(none)"
            raise ModelNotFoundError(f"model {r.name!r} has no version {version}; its versions: {have}")
        return _version_info(mv)

    def list_models(self) -> list[RegisteredModelInfo]:
        """Every registered model with its aliases and versions (newest first), sorted by name."""
        models = self._call("list models", lambda: self.mlflow.search_registered_models(max_results=1000))
        out = []
        for m in sorted(models, key=lambda m: m.name):
            aliases = {str(k): str(v) for k, v in (m.aliases or {}).items()}
            versions = tuple(self._versions(m.name, aliases))
            out.append(RegisteredModelInfo(m.name, m.description, aliases, versions))
        return out

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        """Versions of ``name``, newest first (:class:`ModelNotFoundError` for an unknown model)."""
        model = self._get_model(name)
        return self._versions(name, {str(k): str(v) for k, v in (model.aliases or {}).items()})

    def show(self, ref: str | ModelRef) -> Lineage:
        """The version ``ref`` names with its run: params (resolved recipe), latest metrics, artifacts."""
        info = self.resolve(ref)
        if not info.run_id:
            return Lineage(info, None, None, None, None, None)
        run = self._call(f"look up run {info.run_id}", lambda: self.mlflow.get_run(info.run_id))
        exp = self._call("look up experiment", lambda: self.mlflow.get_experiment(run.info.experiment_id))
        arts = self._list_artifacts(info.run_id)
        paths: list[str] = []
        for a in arts:
            if a.is_dir:
                sub = self._list_artifacts(info.run_id, a.path)
                paths.extend(s.path + ("/" if s.is_dir else "") for s in sub)
            else:
                paths.append(a.path)
        return Lineage(
            version=info,
            experiment=exp.name if exp else None,
            run_name=run.info.run_name,
            run_status=run.info.status,
            start_ms=run.info.start_time,
            end_ms=run.info.end_time,
            params=dict(run.data.params),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
            artifacts=tuple(sorted(paths)),
        )

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` pairs of one metric, ordered by step."""
        hist = self._call(f"metric history {key!r}", lambda: self.mlflow.get_metric_history(run_id, key))
        return sorted((int(m.step), float(m.value)) for m in hist)

    # ------------------------------------------------------------------ aliases
    def promote(self, ref: str | ModelRef, alias: str = "champion") -> ModelVersionInfo:
        """Point ``alias`` at the version ``ref`` names (moving it from any other version).

        The move is recorded as tags on both versions (:class:`PromotionEvent`: who, UTC time, alias,
        previous holder); :attr:`ModelVersionInfo.promotions` reads them back.
        """
        if not _ALIAS_RE.match(alias) or re.fullmatch(r"[vV]\d+", alias) or alias == "latest":
            raise RegistryError(
                f"bad alias {alias!r}: use letters, digits, '_' or '-', not 'latest' or 'v<N>'"
            )
        info = self.resolve(ref)
        model = self._get_model(info.name)
        previous = {str(k): str(v) for k, v in (model.aliases or {}).items()}.get(alias)
        self._call(
            f"set alias {alias!r} on {info.ref}",
            lambda: self.mlflow.set_registered_model_alias(info.name, alias, info.version),
        )
        at, key = _event_time()
        by, identity = self._identity()
        self._record(
            info.name, info.version, key, PromotionEvent(at, "promoted", alias, by, identity, previous)
        )
        if previous is not None and previous != info.version:
            event = PromotionEvent(at, "replaced", alias, by, identity, next=info.version)
            self._record(info.name, previous, key, event)
        return self.resolve(ModelRef(info.name, version=info.version))

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete ``alias`` from model ``name`` (:class:`ModelNotFoundError` if it is not set)."""
        holder = self.resolve(ModelRef(name, alias=alias))
        self._call(f"delete alias {alias!r}", lambda: self.mlflow.delete_registered_model_alias(name, alias))
        at, key = _event_time()
        by, identity = self._identity()
        self._record(name, holder.version, key, PromotionEvent(at, "removed", alias, by, identity))

    def _record(self, name: str, version: str, key: str, event: PromotionEvent) -> None:
        """Write one promotion event as a version tag (the alias has already moved)."""
        try:
            self._call(
                f"record the {event.action} of {event.alias!r} on {name}/{version}",
                lambda: self.mlflow.set_model_version_tag(name, version, key, event.to_tag()),
            )
        except RegistryError as exc:
            raise RegistryError(
                f"alias {event.alias!r} was moved, but its history was not recorded: {exc}"
            ) from exc

    # ------------------------------------------------------------------ artifacts
    def _download_run_path(self, run_id: str, artifact_path: str, into: Path) -> Path:
        repo = self._home_repo(run_id)
        local = self._call(
            f"download runs:/{run_id}/{artifact_path}",
            lambda: (
                repo.download_artifacts(artifact_path, str(into))
                if repo is not None
                else self.mlflow.download_artifacts(run_id, artifact_path, str(into))
            ),
        )
        return Path(local)

    def _list_artifacts(self, run_id: str, path: str | None = None) -> list[Any]:
        repo = self._home_repo(run_id)
        if repo is not None:
            return list(self._call("list artifacts", lambda: repo.list_artifacts(path)))
        return list(self._call("list artifacts", lambda: self.mlflow.list_artifacts(run_id, path)))

    def _source_run_path(self, info: ModelVersionInfo) -> tuple[str, str]:
        if info.source.startswith("runs:/"):
            run_id, _, path = info.source.removeprefix("runs:/").partition("/")
            return run_id, path
        if info.run_id:
            return info.run_id, CHECKPOINT_PATH
        raise RegistryError(f"{info.ref} has source {info.source!r}, which is not a run artifact")

    def download(self, ref: str | ModelRef, dst: Path, force: bool = False) -> DownloadResult:
        """Download the version's checkpoint into directory ``dst`` after checking its SHA-256.

        Nothing is placed in ``dst`` unless the digest matches the version's ``sha256`` tag;
        a mismatch raises :class:`IntegrityError`. A different file already at the target name (another
        version) is refused unless ``force``; the same file is simply verified again.
        """
        info = self.resolve(ref)
        expected, artifact = info.tags.get("sha256"), info.tags.get("artifact")
        if not expected or not artifact:
            raise IntegrityError(f"{info.ref} has no sha256/artifact tag, so its download cannot be verified")
        run_id, path = self._source_run_path(info)
        dst = Path(dst)
        _check_download_target(dst, dst / artifact, expected, info.ref, force)
        with _writable(dst), tempfile.TemporaryDirectory(prefix=".download-", dir=dst) as tmp:
            local = self._download_run_path(run_id, path, Path(tmp))
            file = local / artifact if local.is_dir() else local
            if not file.is_file():
                raise IntegrityError(f"{info.ref}: artifact {artifact!r} is missing from {info.source}")
            try:
                verify_file(file, expected)
            except HashMismatchError as exc:
                raise IntegrityError(f"refusing {info.ref}: {exc}") from exc
            target = dst / artifact
            os.replace(file, target)
        return DownloadResult(path=target, sha256=expected, version=info)

    def attach_export(
        self,
        ref: str | ModelRef | ModelVersionInfo,
        files: Sequence[Path],
        manifest: ModelManifest,
        fmt: str = "onnx",
    ) -> ModelVersionInfo:
        """Upload exported ``files`` plus ``manifest.json`` to the version's run under ``export/<fmt>``.

        Every file must be listed in ``manifest.files`` with its SHA-256 (checked here). The version
        gets tags ``export.<fmt>.path`` and ``export.<fmt>.manifest_sha256``.
        """
        info = ref if isinstance(ref, ModelVersionInfo) else self.resolve(ref)
        if not info.run_id:
            raise RegistryError(f"{info.ref} has no run to attach an export to")
        for f in files:
            f = Path(f)
            if f.name not in manifest.files:
                raise RegistryError(
                    f"{f.name} is not listed in the manifest's files {sorted(manifest.files)}"
                )
            try:
                verify_file(f, manifest.files[f.name])
            except HashMismatchError as exc:
                raise IntegrityError(f"export file does not match its manifest: {exc}") from exc
        artifact_path = f"{EXPORT_PATH}/{fmt}"
        with tempfile.TemporaryDirectory(prefix="vitbench-export-") as tmp:
            staged = Path(tmp) / fmt
            staged.mkdir()
            for f in files:
                shutil.copy2(f, staged / Path(f).name)
            manifest_path = manifest.save(staged / MANIFEST_FILE)
            manifest_sha = sha256_file(manifest_path)
            self.log_artifact(info.run_id, staged, artifact_path)
        self.set_version_tag(info, f"export.{fmt}.path", artifact_path)
        return self.set_version_tag(info, f"export.{fmt}.manifest_sha256", manifest_sha)

    def fetch_exported(
        self, ref: str | ModelRef, dst: Path, fmt: str = "onnx"
    ) -> tuple[Path, ModelManifest, ModelVersionInfo]:
        """Download ``model.onnx`` and ``manifest.json`` of a version into ``dst``, verified.

        The manifest must match the version's ``export.<fmt>.manifest_sha256`` tag and every file
        the manifest lists must match its SHA-256; otherwise :class:`IntegrityError`, and nothing
        is left in ``dst``. Returns ``(path to model.onnx, manifest, version)``.
        """
        info = self.resolve(ref)
        path = info.tags.get(f"export.{fmt}.path")
        manifest_sha = info.tags.get(f"export.{fmt}.manifest_sha256")
        if not path or not manifest_sha:
            raise RegistryError(
                f"{info.ref} has no {fmt} export; "
                f"run `vitbench export --model {info.ref} --format {fmt}` first"
            )
        if not info.run_id:
            raise RegistryError(f"{info.ref} has no run holding its export")
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dst) as tmp:
            local = self._download_run_path(info.run_id, path, Path(tmp))
            manifest_file = local / MANIFEST_FILE
            if not manifest_file.is_file():
                raise IntegrityError(
                    f"{info.ref}: {MANIFEST_FILE} is missing from runs:/{info.run_id}/{path}"
                )
            try:
                verify_file(manifest_file, manifest_sha)
                manifest = ModelManifest.load(manifest_file)
                if ONNX_FILE not in manifest.files:
                    raise IntegrityError(f"{info.ref}: the manifest lists no {ONNX_FILE}")
                for name, digest in manifest.files.items():
                    if not (local / name).is_file():
                        raise IntegrityError(f"{info.ref}: exported file {name} is missing")
                    verify_file(local / name, digest)
            except HashMismatchError as exc:
                raise IntegrityError(f"refusing the {fmt} export of {info.ref}: {exc}") from exc
            except ManifestError as exc:
                raise IntegrityError(f"refusing the {fmt} export of {info.ref}: {exc}") from exc
            for name in [*manifest.files, MANIFEST_FILE]:
                os.replace(local / name, dst / name)
        return dst / ONNX_FILE, manifest, info


def relocate_artifact_uri(uri: str, artifacts_root: Path) -> str:
    """A run's artifact URI recorded in an embedded home, mapped into the home at ``artifacts_root``.

    The embedded client lays artifacts out as ``<root>/<experiment>/<run_id>/artifacts``; MLflow records
    that with the absolute ``<root>`` of wherever the home was when the run was created. The mapping keeps
    the last three parts and puts them under ``artifacts_root``, so the home works wherever it is now.
    URIs of any other form (S3, another layout) are returned unchanged.
    """
    if not uri.startswith("file:"):
        return uri
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parts = Path(url2pathname(urlparse(uri).path)).parts
    if len(parts) < 5 or parts[-1] != "artifacts" or parts[-4] != artifacts_root.name:
        return uri
    return (Path(artifacts_root) / parts[-3] / parts[-2] / "artifacts").as_uri()


def _version_info(mv: Any) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=str(mv.name),
        version=str(mv.version),
        aliases=tuple(str(a) for a in (mv.aliases or ())),
        tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
        run_id=str(mv.run_id) if mv.run_id else None,
        source=str(mv.source),
        status=str(mv.status),
        created_ms=int(mv.creation_timestamp or 0),
        description=mv.description or None,
    )


def _event_time() -> tuple[str, str]:
    """ISO-8601 UTC time (microseconds) and the sortable tag key derived from it."""
    now = dt.datetime.now(dt.UTC)
    return now.isoformat(timespec="microseconds").replace("+00:00", "Z"), (
        PROMOTION_TAG_PREFIX + now.strftime("%Y%m%dT%H%M%S%fZ")
    )


def _denied_status(msg: str) -> int | None:
    """401 or 403 when an MLflow error message reports that HTTP status, else None."""
    for status in (401, 403):
        marks = (f"error code {status} ", f"status code {status}", f"HTTP {status}", f"{status} Client Error")
        if any(mark in msg for mark in marks):
            return status
    return None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text)


def _short(msg: str, limit: int = 400) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _check_download_target(dst: Path, target: Path, expected: str, ref: str, force: bool) -> None:
    """Refuse a ``dst`` that is a file, and a different file at ``target`` unless ``force``."""
    if dst.exists() and not dst.is_dir():
        raise RegistryError(f"-o {dst} is a file; expected a folder to download {ref} into")
    if target.is_dir():
        raise RegistryError(f"{target} is a directory; cannot download {ref}'s checkpoint over it")
    if target.is_file() and not force and sha256_file(target) != expected.lower():
        raise RegistryError(
            f"{target} already exists and is not {ref} (its sha256 differs); "
            "pass --force to replace it or choose another -o folder"
        )


@contextmanager
def _writable(dst: Path) -> Iterator[None]:
    """Create ``dst`` and turn the OS's refusal to write there into a :class:`RegistryError`."""
    try:
        dst.mkdir(parents=True, exist_ok=True)
        yield
    except OSError as exc:
        raise RegistryError(f"cannot write to {dst}: {exc.strerror or exc}") from exc
