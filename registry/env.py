"""Which registry to talk to, from arguments and the environment: the one place that reads it.

Variables: ``MLFLOW_TRACKING_URI`` (a remote ``mlflow server`` or SQL store; unset = the embedded
SQLite registry), ``MLFLOW_REGISTRY_URI`` (when the model registry lives elsewhere), ``VITBENCH_HOME``
(the embedded registry's folder, default ``./.vitbench``) and ``VITBENCH_REGISTRY_TIMEOUT`` (seconds
per HTTP request, default 10). Explicit arguments win over the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client (pydantic, mlflow) is imported on use: `vitbench --help` stays fast
    from vitbench.registry.client import RegistryClient

DEFAULT_HOME = Path(".vitbench")
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RegistryLocation:
    """A resolved registry: ``tracking_uri`` None means the embedded registry under ``home``."""

    tracking_uri: str | None
    registry_uri: str | None
    home: Path
    timeout_s: float = DEFAULT_TIMEOUT_S

    def open(self) -> RegistryClient:
        """A client for this location (raises :class:`RegistryError` for a bad URI or home)."""
        from vitbench.registry.client import RegistryClient

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        if self.tracking_uri:
            return RegistryClient(self.tracking_uri, self.registry_uri, timeout_s=self.timeout_s)
        return RegistryClient.embedded(self.home)


def resolve_home(home: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``home``, else ``VITBENCH_HOME``, else ``./.vitbench``."""
    if home is not None:
        return Path(home)
    value = (os.environ if env is None else env).get("VITBENCH_HOME")
    return Path(value) if value else DEFAULT_HOME


def registry_location(
    home: Path | None = None,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    env: Mapping[str, str] | None = None,
) -> RegistryLocation:
    """Resolve the registry from the arguments, then ``env`` (default ``os.environ``; ``{}``: none).

    Raises :class:`RegistryError` when ``VITBENCH_REGISTRY_TIMEOUT`` is not a number of seconds.
    """
    env = os.environ if env is None else env
    raw_timeout = env.get("VITBENCH_REGISTRY_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        timeout = float(raw_timeout)
    except ValueError:
        from vitbench.registry.client import RegistryError

        raise RegistryError(f"VITBENCH_REGISTRY_TIMEOUT={raw_timeout!r} is not a number of seconds") from None
    uri = (tracking_uri or env.get("MLFLOW_TRACKING_URI", "")).strip() or None
    reg = (registry_uri or env.get("MLFLOW_REGISTRY_URI") or None) if uri else None
    return RegistryLocation(uri, reg, resolve_home(home, env), timeout)
