"""CLI command: ``vitbench serve --model REF`` runs the inference service under uvicorn.

Settings come from ``VITBENCH_*`` environment variables (see ``service.settings.ServiceSettings``);
flags given here override them. ``MLFLOW_TRACKING_URI`` is honoured like in the other commands.
On SIGTERM the service first answers ``/readyz`` with 503 for ``VITBENCH_DRAIN_SECONDS`` (so load
balancers stop sending), keeps serving, then lets uvicorn finish open requests and stop.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from vitbench.cli.common import fail
from vitbench.cli.options import HomeOpt

if TYPE_CHECKING:
    import uvicorn


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command("serve")(serve)


def serve(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help=(
            "Registered model to serve: NAME@ALIAS or NAME/VERSION (env VITBENCH_MODEL). With "
            "VITBENCH_PIN_MODEL=NAME/VERSION and VITBENCH_PIN_SHA256 set, anything but that version with "
            "that export-manifest digest is refused."
        ),
    ),
    model_dir: Path | None = typer.Option(
        None,
        "--model-dir",
        help="Serve an exported folder (model.onnx + manifest.json) instead of the registry.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 in containers)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    home: HomeOpt = None,
    providers: str | None = typer.Option(
        None,
        "--providers",
        help="ONNX Runtime providers, comma-separated, best first (default TensorRT,CUDA,CPU).",
    ),
    max_batch_size: int | None = typer.Option(
        None,
        "--max-batch-size",
        min=1,
        help="Most queued images run back to back in one batch (1 = no batching).",
    ),
    max_queue_delay_ms: float | None = typer.Option(
        None, "--max-queue-delay-ms", min=0.0, help="Longest wait to fill a batch, milliseconds."
    ),
    inference_streams: int | None = typer.Option(
        None,
        "--inference-streams",
        min=1,
        help="Batches run at once (default 2: on a CPU the second fills the cores; 1 = one at a time). "
        "On a CPU, queued batches run on a second session with cores / streams threads each "
        "(VITBENCH_STREAM_INTRA_OP_THREADS; 0 = off); a lone request keeps every thread.",
    ),
    queue_size: int | None = typer.Option(None, "--queue-size", min=1, help="Waiting requests before 503."),
    log_level: str | None = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Serve POST /detect for a registered, exported model (FastAPI + ONNX Runtime).

    Exits 3 when it cannot listen on --host:--port (checked before the model loads), 1 when the model
    cannot be loaded."""
    import uvicorn
    from pydantic import ValidationError

    from vitbench.registry.client import ModelRef, RegistryError
    from vitbench.registry.env import registry_location
    from vitbench.service.app import create_app
    from vitbench.service.logs import configure_logging
    from vitbench.service.settings import ServiceSettings

    overrides: dict[str, Any] = {
        "model": model,
        "model_dir": model_dir,
        "home": home,
        "providers": providers,
        "max_batch_size": max_batch_size,
        "max_queue_delay_ms": max_queue_delay_ms,
        "inference_streams": inference_streams,
        "queue_size": queue_size,
        "log_level": log_level,
    }
    try:
        env_settings = ServiceSettings()
        values = {**env_settings.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        if model is not None:
            values["model_dir"] = None
        if model_dir is not None:
            values["model"] = None
        location = registry_location(home)  # MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, as the other commands
        if values.get("tracking_uri") is None and location.tracking_uri:
            values["tracking_uri"] = location.tracking_uri
            values["registry_uri"] = values.get("registry_uri") or location.registry_uri
        settings = ServiceSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid service settings: {problems}")
    except RegistryError as exc:
        fail(str(exc))
    if settings.model is None and settings.model_dir is None:
        fail(
            "no model to serve: pass --model NAME@ALIAS (or NAME/VERSION) or --model-dir DIR, "
            "or set VITBENCH_MODEL"
        )
    if settings.model is not None:
        try:
            ModelRef.parse(settings.model)
        except RegistryError as exc:
            raise typer.BadParameter(str(exc), param_hint="--model") from None
    if settings.model_dir is not None and not settings.model_dir.is_dir():
        raise typer.BadParameter(f"{settings.model_dir} is not a folder", param_hint="--model-dir")

    sock = _listen_socket(host, port)  # before the model loads: a busy port fails first, and last
    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.request_timeout_s)),
    )
    server = _draining_server(config, settings.drain_seconds, app.state.service.begin_drain)
    failures: list[str] = []

    def on_failure(message: str) -> None:
        failures.append(message)
        server.should_exit = True

    app.state.service.failure_callbacks.append(on_failure)
    server.run(sockets=[sock])
    if failures:
        fail(f"the model could not be loaded: {failures[0]}", code=1)


def _listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (handed to uvicorn); exit 3 naming the reason when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (
            "another server is listening there; stop it or pick another --port"
            if (exc.errno == errno.EADDRINUSE)
            else "check --host"
        )
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc} ({hint})", code=3)
    sock.set_inheritable(True)
    return sock


def _draining_server(
    config: uvicorn.Config, drain_s: float, begin_drain: Callable[[], None]
) -> uvicorn.Server:
    """A uvicorn server whose first SIGTERM/SIGINT flips readiness off and stops ``drain_s`` seconds later.

    A second signal stops at once (uvicorn's own behaviour).
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        draining = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if drain_s <= 0 or self.draining:
                super().handle_exit(sig, frame)
                return
            self.draining = True
            begin_drain()
            timer = threading.Timer(drain_s, super().handle_exit, args=(sig, None))
            timer.daemon = True
            timer.start()

    return DrainingServer(config)
