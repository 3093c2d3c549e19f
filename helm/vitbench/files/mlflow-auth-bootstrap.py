"""Create MLflow basic-auth users and grant their permissions through the auth REST API (idempotent).

Run by the chart's post-install/post-upgrade hook Job (and by the integration tests against a real
``mlflow server --app-name basic-auth``). Standard library only, so it runs in the MLflow image.

Inputs (environment):
  MLFLOW_TRACKING_URI        the server, e.g. http://vitbench-mlflow.ml.svc.cluster.local:5000
  MLFLOW_TRACKING_USERNAME   an admin user (the one the server bootstrapped from its admin Secret)
  MLFLOW_TRACKING_PASSWORD   its password
  VITBENCH_AUTH_PLAN         JSON: {"users": [{"username_env": str, "password_env": str,
                                               "grants": [[resource_type, resource_id, permission], ...]}]}
                             (each user's name and password are read from the variables the plan names;
                             "username" may give the name directly instead of "username_env")
  VITBENCH_AUTH_WAIT_S       seconds to wait for /health (default 600)

For every user in the plan: create it, or reset its password to the one in ``password_env`` when it
exists (so rotating a Secret and upgrading the release rotates the password); then make each listed
grant exist with exactly the listed permission (revoke + grant when it differs). Grants the plan does
not list are left alone (MLflow gives a resource's creator MANAGE on it; those stay).
Exit status: 0 done, 1 an API call failed (the message names it), 2 bad input.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status, self.body = status, body
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:300]}")


class Api:
    def __init__(self, uri: str, username: str, password: str) -> None:
        self.uri = uri.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.uri + path
        data = None
        if body is not None and method == "GET":
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read().decode() or "{}"
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(raw) if raw.strip().startswith("{") else {}


def wait_healthy(uri: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {uri}/health did not answer within {wait_s:g} s")
        time.sleep(3)


def ensure_user(api: Api, username: str, password: str) -> str:
    try:
        api.call("GET", "/api/2.0/mlflow/users/get", {"username": username})
    except ApiError as exc:
        if exc.status != 404:
            raise
        api.call("POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})
        return "created"
    api.call("PATCH", "/api/2.0/mlflow/users/update-password", {"username": username, "password": password})
    return "password set"


def ensure_grant(api: Api, username: str, resource_type: str, resource_id: str, permission: str) -> str:
    rows = api.call("GET", "/api/3.0/mlflow/users/permissions/list", {"username": username})
    current = [
        r["permission"]
        for r in rows.get("permissions", [])
        if r.get("resource_type") == resource_type
        and r.get("resource_pattern") == resource_id
        and str(r.get("role_name", "")).startswith("__user_")
    ]
    if current == [permission]:
        return "unchanged"
    target = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    if current:
        api.call("POST", "/api/3.0/mlflow/users/permissions/revoke", target)
    api.call("POST", "/api/3.0/mlflow/users/permissions/grant", {**target, "permission": permission})
    return "granted" if not current else f"changed from {current[0]}"


def main() -> int:
    try:
        uri = os.environ["MLFLOW_TRACKING_URI"]
        admin, admin_password = os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        plan = json.loads(os.environ["VITBENCH_AUTH_PLAN"])
        users = [
            (
                u["username"] if "username" in u else os.environ[u["username_env"]],
                os.environ[u["password_env"]],
                [tuple(g) for g in u.get("grants", [])],
            )
            for u in plan["users"]
        ]
    except (KeyError, ValueError, TypeError) as exc:
        print(f"error: bad input ({type(exc).__name__}: {exc}); see this script's docstring", file=sys.stderr)
        return 2
    for name, password, _ in users:
        if not name or not password:
            print(f"error: empty user name or password for user {name!r}", file=sys.stderr)
            return 2
    wait_healthy(uri, float(os.environ.get("VITBENCH_AUTH_WAIT_S", "600")))
    api = Api(uri, admin, admin_password)
    try:
        for name, password, grants in users:
            print(f"user {name}: {ensure_user(api, name, password)}")
            for resource_type, resource_id, permission in grants:
                outcome = ensure_grant(api, name, resource_type, resource_id, permission)
                print(f"  {permission} on {resource_type} {resource_id}: {outcome}")
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
