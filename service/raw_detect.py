"""``POST /detect`` with a raw image body, answered in plain ASGI beside FastAPI.

Programs post the image bytes themselves (``Content-Type: image/jpeg``). For them FastAPI's routing,
dependency injection and request objects are pure overhead: answering here takes the event loop's CPU
per request from 1.07 to 0.76 ms on the 2-core benchmark machine (docs/benchmarks.md, issue 12's sixth
pass). This route answers such requests before they reach FastAPI, through the same
:class:`~service.detect.DetectEndpoint` as the FastAPI route: same checks in the same order, same
answers, errors, API key, metrics and access log (it sits inside the access and body-limit middleware).
Multipart forms, other methods and other paths go on to FastAPI, whose ``/detect`` stays the one the
OpenAPI document describes.
"""

from __future__ import annotations

import logging
from typing import Any, get_args, get_origin
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitbench.service.detect import DetectEndpoint, ServiceError, is_raw_image, validation_details
from vitbench.service.middleware import send_json_error
from vitbench.service.schemas import DetectQuery

logger = logging.getLogger(__name__)


def _is_list(annotation: Any) -> bool:
    """``list[...]`` or an optional one (``list[...] | None``)."""
    return get_origin(annotation) is list or any(get_origin(arg) is list for arg in get_args(annotation))


_LIST_PARAMS = frozenset(name for name, f in DetectQuery.model_fields.items() if _is_list(f.annotation))


class _DisconnectedError(Exception):
    """The client went away before its body arrived."""


def parse_query(query_string: bytes) -> DetectQuery:
    """``DetectQuery`` from a raw query string as FastAPI reads it: repeated list parameters collect,
    a repeated scalar keeps its last value, unknown names fail (pydantic ``ValidationError``)."""
    values: dict[str, Any] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in _LIST_PARAMS:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return DetectQuery.model_validate(values)


class RawDetectRoute:
    """ASGI middleware: ``POST /detect`` with an ``image/*`` or ``application/octet-stream`` body is
    answered here; everything else goes to ``app``. ``route`` (FastAPI's ``/detect`` route) is put in
    the scope as the router would, so the access log and metrics label the request the same."""

    def __init__(self, app: ASGIApp, endpoint: DetectEndpoint, route: Any, path: str = "/detect") -> None:
        self.app = app
        self.endpoint = endpoint
        self.route = route
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # raw lower-case names; a repeated header keeps its last value
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        if not is_raw_image(media):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            key = headers.get(b"x-api-key")
            self.endpoint.check_api_key(key.decode("latin-1") if key is not None else None)
            query = parse_query(scope.get("query_string", b""))
            body, timing = await self.endpoint.answer(query, lambda: _read_body(receive))
        except _DisconnectedError:
            return
        except ServiceError as exc:
            await send_json_error(send, exc.status, exc.detail, exc.headers)
            return
        except ValidationError as exc:
            await send_json_error(send, 422, validation_details(exc.errors(), ("query",)))
            return
        except Exception:
            logger.exception("unhandled error on POST %s", self.path)
            await send_json_error(send, 500, "internal error; see the service log")
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"server-timing", timing.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _DisconnectedError
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
