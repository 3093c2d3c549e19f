"""The real app (TestClient with lifespan) on the fake detector: the documented JSON, errors, health."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_detector import CLASS_NAMES, canvas_boxes
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils
from service_helpers import image_bytes, settings_for, wait_ready

from vitbench.service.app import create_app
from vitbench.service.model_source import LocalModelSource, ModelArtifact

# 200x100 image, S = 64: resized to 64x32, so canvas pixels scale by 200/64 = 3.125 on both axes.
RATIO = 200 / 64


def _post(client: TestClient, data: bytes, media: str = "image/jpeg", **params: object) -> object:
    return client.post("/detect", params=params, files={"image": ("x", data, media)})


def test_detect_answers_documented_json(client: TestClient) -> None:
    resp = client.post(
        "/detect",
        params={"score_threshold": 0.3, "classes": "circle,square"},
        files={"image": ("photo.jpg", image_bytes(200, 100), "image/jpeg")},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"image", "detections", "model", "timings_ms"}
    assert body["image"] == {"width": 200, "height": 100}
    assert body["model"] == {"name": "fake-detector", "version": "3"}
    assert set(body["timings_ms"]) == {"decode", "preprocess", "queue", "inference", "postprocess", "total"}
    assert all(v >= 0 for v in body["timings_ms"].values())
    # the same stages in the W3C Server-Timing header, e.g. "decode;dur=1.234, preprocess;dur=0.5, ..."
    header = [part.strip().split(";dur=") for part in resp.headers["server-timing"].split(",")]
    assert {name: float(ms) for name, ms in header} == body["timings_ms"]
    dets = body["detections"]
    assert [d["score"] for d in dets] == [0.95, 0.7, 0.4]  # highest first; label 3 filtered out
    assert [(d["label"], d["label_name"]) for d in dets] == [(1, "circle"), (2, "square"), (1, "circle")]
    expected_boxes = canvas_boxes(64)[:3] * RATIO
    np.testing.assert_allclose([d["box"] for d in dets], expected_boxes, atol=0.01)
    for det in dets:
        mask = det["mask"]
        assert mask["format"] == "rle" and mask["size"] == [100, 200]
        decoded = mask_utils.decode({"size": mask["size"], "counts": mask["counts"].encode()})
        assert decoded.shape == (100, 200)
    # The 'square' mask is all foreground: its pasted extent is the box, to within the paste rounding.
    square = dets[1]["mask"]
    x, y, w, h = mask_utils.toBbox({"size": square["size"], "counts": square["counts"].encode()})
    np.testing.assert_allclose([x, y, x + w, y + h], dets[1]["box"], atol=2.0)
    # The 'circle' (a centred disk) covers about pi*0.4^2 of its box.
    circle = dets[0]
    area = mask_utils.area({"size": circle["mask"]["size"], "counts": circle["mask"]["counts"].encode()})
    bw, bh = circle["box"][2] - circle["box"][0], circle["box"][3] - circle["box"][1]
    assert 0.4 < area / (bw * bh) < 0.6


def test_raw_body_gives_the_same_answer_as_multipart(client: TestClient) -> None:
    data = image_bytes(200, 100, "PNG")
    raw = client.post("/detect", content=data, headers={"content-type": "image/png"}).json()
    multi = client.post("/detect", files={"image": ("a.png", data, "image/png")}).json()
    assert raw["detections"] == multi["detections"]
    assert raw["image"] == multi["image"] == {"width": 200, "height": 100}


def test_image_content_reaches_the_model(client: TestClient) -> None:
    """The fake's 4th score is sigmoid(mean normalized input): bright images pass 0.5, dark ones do not."""
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    black = Image.new("RGB", (64, 64), (0, 0, 0))
    found = {}
    for name, image in (("white", white), ("black", black)):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        resp = client.post(
            "/detect",
            params={"classes": "triangle"},
            content=buf.getvalue(),
            headers={"content-type": "image/png"},
        )
        found[name] = resp.json()["detections"]
    assert [d["label_name"] for d in found["white"]] == ["triangle"]
    assert found["black"] == []


@pytest.mark.parametrize(
    ("fmt", "media", "mode", "save"),
    [
        ("JPEG", "image/jpeg", "RGB", {}),
        ("PNG", "image/png", "RGBA", {}),
        ("PNG", "image/png", "P", {}),
        ("PNG", "image/png", "L", {}),
        ("WEBP", "image/webp", "RGB", {"lossless": True}),
        ("BMP", "image/bmp", "RGB", {}),
        ("TIFF", "image/tiff", "CMYK", {}),
        ("JPEG", "image/jpeg", "CMYK", {}),
    ],
)
def test_supported_formats_and_modes(client: TestClient, fmt: str, media: str, mode: str, save: dict) -> None:
    resp = client.post(
        "/detect",
        params={"score_threshold": 0.3},
        files={"image": ("x", image_bytes(200, 100, fmt, mode, **save), media)},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["image"] == {"width": 200, "height": 100}
    assert len(resp.json()["detections"]) >= 3


def test_exif_orientation_is_applied(client: TestClient) -> None:
    image = Image.open(io.BytesIO(image_bytes(200, 100)))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes())
    resp = client.post("/detect", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
    assert resp.json()["image"] == {"width": 100, "height": 200}
    assert all(d["box"][2] <= 100 and d["box"][3] <= 200 for d in resp.json()["detections"])


def test_mask_formats_agree(client: TestClient) -> None:
    data = image_bytes(200, 100)
    answers = {
        fmt: client.post(
            "/detect", params={"mask_format": fmt}, content=data, headers={"content-type": "image/jpeg"}
        )
        for fmt in ("rle", "png", "polygon", "none")
    }
    assert all(r.status_code == 200 for r in answers.values())
    rle = [
        mask_utils.decode({"size": d["mask"]["size"], "counts": d["mask"]["counts"].encode()}).astype(bool)
        for d in answers["rle"].json()["detections"]
    ]
    png = [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(d["mask"]["data"]))).convert("L")) > 127
        for d in answers["png"].json()["detections"]
    ]
    assert len(rle) == len(png) >= 2
    for a, b in zip(rle, png, strict=True):
        assert np.array_equal(a, b)
    for mask, det in zip(rle, answers["polygon"].json()["detections"], strict=True):
        polys = det["mask"]["polygons"]
        assert polys and all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
        drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 100, 200))).astype(bool)
        assert (drawn & mask).sum() / (drawn | mask).sum() > 0.85
    assert all(d["mask"] is None for d in answers["none"].json()["detections"])


def test_filters(client: TestClient) -> None:
    data = image_bytes(200, 100)

    def labels(**params: object) -> list[int]:
        resp = client.post("/detect", params=params, content=data, headers={"content-type": "image/jpeg"})
        assert resp.status_code == 200, resp.text
        return [d["label"] for d in resp.json()["detections"]]

    assert labels(score_threshold=0.3, classes="1") == [1, 1]
    assert labels(score_threshold=0.3, classes=["square", "circle"]) == [1, 2, 1]
    assert labels(score_threshold=0.3, classes="circle", max_detections=1) == [1]
    assert labels(score_threshold=0.96) == []
    assert labels(score_threshold=0.3, max_detections=2, mask_format="none")[:2] == [1, 2]


BAD_REQUESTS: list[tuple[str, dict, int]] = [
    (
        "not an image",
        {"content": b"hello world, not an image", "headers": {"content-type": "image/png"}},
        415,
    ),
    (
        "gif",
        {"content": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "headers": {"content-type": "image/gif"}},
        415,
    ),
    ("text content type", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
    ("json content type", {"json": {"image": "abc"}}, 415),
    ("no content type", {"content": b"\xff\xd8\xff"}, 415),
    (
        "truncated jpeg",
        {"content": image_bytes(200, 100)[:400], "headers": {"content-type": "image/jpeg"}},
        422,
    ),
    (
        "truncated png",
        {"content": image_bytes(200, 100, "PNG")[:200], "headers": {"content-type": "image/png"}},
        422,
    ),
    (
        "corrupt png",
        {"content": b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "headers": {"content-type": "image/png"}},
        422,
    ),
    ("empty body", {"content": b"", "headers": {"content-type": "image/jpeg"}}, 422),
    ("multipart without image", {"files": {"photo": ("a.jpg", image_bytes(), "image/jpeg")}}, 422),
    (
        "multipart text field",
        {"data": {"image": "not a file"}, "files": {"x": ("a", b"1", "text/plain")}},
        422,
    ),
    (
        "malformed multipart",
        {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
        422,
    ),
    ("multipart not an image", {"files": {"image": ("a.txt", b"plain text", "text/plain")}}, 415),
]
BAD_QUERIES: list[dict[str, object]] = [
    {"score_threshold": 1.5},
    {"score_threshold": "high"},
    {"max_detections": 0},
    {"max_detections": 5000},
    {"mask_format": "bitmap"},
    {"classes": "dog"},
    {"classes": "99"},
    {"unknown_param": 1},
]


@pytest.mark.parametrize(("name", "request_kwargs", "status"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_bodies_get_4xx_json(client: TestClient, name: str, request_kwargs: dict, status: int) -> None:
    resp = client.post("/detect", **request_kwargs)
    assert resp.status_code == status, resp.text
    assert isinstance(resp.json()["detail"], str) and resp.json()["detail"]


@pytest.mark.parametrize("params", BAD_QUERIES)
def test_bad_query_params_get_422(client: TestClient, params: dict[str, object]) -> None:
    resp = client.post(
        "/detect", params=params, content=image_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert resp.status_code == 422, resp.text


def test_service_keeps_serving_after_bad_requests(client: TestClient) -> None:
    for _, kwargs, _ in BAD_REQUESTS:
        client.post("/detect", **kwargs)
    resp = client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200
    assert client.get("/readyz").status_code == 200


def test_body_over_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=4096)
    big = image_bytes(400, 400, "PNG", compress_level=0)
    assert len(big) > 4096
    resp = client.post("/detect", content=big, headers={"content-type": "image/png"})
    assert resp.status_code == 413 and "4096" in resp.json()["detail"]
    streamed = client.post(
        "/detect",
        content=iter([big[i : i + 1000] for i in range(0, len(big), 1000)]),
        headers={"content-type": "image/png"},
    )
    assert streamed.status_code == 413
    assert (
        client.post(
            "/detect", content=image_bytes(64, 32), headers={"content-type": "image/jpeg"}
        ).status_code
        == 200
    )


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR is rewritten to claim ``width``x``height`` (CRC fixed)."""
    import struct
    import zlib

    data = bytearray(image_bytes(8, 8, "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_decompression_bomb_refused_without_decoding(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_pixels=10_000)
    huge = client.post(
        "/detect", content=_png_claiming_size(100_000, 100_000), headers={"content-type": "image/png"}
    )
    assert huge.status_code == 413 and "pixels" in huge.json()["detail"]
    over = client.post("/detect", content=image_bytes(200, 100), headers={"content-type": "image/jpeg"})
    assert over.status_code == 413 and "20000" in over.json()["detail"]
    assert (
        client.post(
            "/detect", content=image_bytes(50, 50), headers={"content-type": "image/jpeg"}
        ).status_code
        == 200
    )


class _BlockingSource:
    """A model source that waits for ``release`` before handing over the folder."""

    def __init__(self, directory: Path) -> None:
        self.inner = LocalModelSource(directory)
        self.release = threading.Event()

    def describe(self) -> str:
        return "blocking " + self.inner.describe()

    def fetch(self) -> ModelArtifact:
        assert self.release.wait(20)
        return self.inner.fetch()


def test_readyz_is_503_until_warmed_up(make_client: Callable[..., TestClient], fake_model_dir: Path) -> None:
    source = _BlockingSource(fake_model_dir)
    client = make_client(create_app(settings_for(fake_model_dir), source=source), ready=False)
    for path in ("/readyz", "/v2/health/ready"):
        resp = client.get(path)
        assert resp.status_code == 503 and resp.json()["status"] == "loading"
        assert resp.headers["retry-after"] == "1"
    assert client.get("/healthz").status_code == 200 and client.get("/v2/health/live").json() == {
        "status": "alive"
    }
    early = client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"})
    assert early.status_code == 503 and "retry-after" in early.headers
    source.release.set()
    wait_ready(client)
    assert client.get("/readyz").json() == {"status": "ready"}
    assert (
        client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"}).status_code
        == 200
    )


def test_draining_turns_readiness_off_but_keeps_serving(client: TestClient) -> None:
    client.app.state.service.begin_drain()  # what SIGTERM does in `vitbench serve`
    assert client.get("/readyz").status_code == 503 and client.get("/readyz").json()["status"] == "draining"
    assert client.get("/healthz").status_code == 200
    assert (
        client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"}).status_code
        == 200
    )


def test_failed_load_is_reported(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(ready=False, model_dir=tmp_path)  # empty folder: no model.onnx
    for _ in range(200):
        if client.get("/readyz").json()["status"] == "failed":
            break
        threading.Event().wait(0.02)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "model.onnx" in ready.json()["detail"]
    assert client.get("/healthz").status_code == 503
    assert (
        client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"}).status_code
        == 503
    )


def test_models_route_describes_the_manifest(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    (model,) = body["models"]
    assert model["name"] == "fake-detector" and model["version"] == "3"
    assert model["classes"] == list(CLASS_NAMES) and model["input_size"] == 64
    assert model["providers"] == ["CPUExecutionProvider"] and model["ready"] is True


def test_api_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_key="s3cret")
    data = image_bytes()
    headers = {"content-type": "image/jpeg"}
    assert client.post("/detect", content=data, headers=headers).status_code == 401
    assert client.post("/detect", content=data, headers={**headers, "X-API-Key": "wrong"}).status_code == 401
    assert client.get("/v1/models").status_code == 401
    assert client.post("/detect", content=data, headers={**headers, "X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/readyz").status_code == 200 and client.get("/metrics").status_code == 200


def test_metrics_count_requests_stages_and_model(client: TestClient) -> None:
    client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"})
    client.post("/detect", content=b"nope", headers={"content-type": "image/jpeg"})
    text = client.get("/metrics").text
    assert 'vitbench_http_requests_total{method="POST",route="/detect",status="200"} 1.0' in text
    assert 'vitbench_http_requests_total{method="POST",route="/detect",status="415"} 1.0' in text
    for stage in ("decode", "preprocess", "queue", "inference", "postprocess"):
        assert f'vitbench_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text
    assert 'vitbench_rejected_total{reason="unsupported"} 1.0' in text
    assert "vitbench_batch_size_count 1.0" in text  # one request (the warm-up bypasses the queue)
    assert 'vitbench_model_info{input_size="64",name="fake-detector"' in text
    assert "vitbench_ready 1.0" in text and "vitbench_queue_depth 0.0" in text


def test_request_id_and_page(client: TestClient) -> None:
    resp = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and "detect?" in page.text


def test_apps_are_independent(make_client: Callable[..., TestClient]) -> None:
    """Two apps in one process keep separate settings, state and metrics (no import-time singletons)."""
    a = make_client(score_threshold=0.9)
    b = make_client(score_threshold=0.3)
    data = image_bytes()
    n_a = len(a.post("/detect", content=data, headers={"content-type": "image/jpeg"}).json()["detections"])
    n_b = len(b.post("/detect", content=data, headers={"content-type": "image/jpeg"}).json()["detections"])
    assert n_a == 1 and n_b >= 3
    assert "vitbench_batch_size_count 1.0" in a.get("/metrics").text


ALIKE_QUERIES: list[dict[str, object]] = [
    *BAD_QUERIES,
    {},
    {"classes": ["circle", "2"], "mask_format": "none"},
    {"score_threshold": "0.3", "max_detections": "2", "mask_format": "polygon"},
]


@pytest.mark.parametrize("params", ALIKE_QUERIES)
def test_raw_bodies_and_multipart_forms_are_answered_alike(
    client: TestClient, params: dict[str, object]
) -> None:
    """Raw image bodies take the plain-ASGI route, forms FastAPI's: same status and body (timings aside)."""
    data = image_bytes()
    raw = client.post("/detect", params=params, content=data, headers={"content-type": "image/jpeg"})
    form = client.post("/detect", params=params, files={"image": ("x", data, "image/jpeg")})
    assert raw.status_code == form.status_code, (raw.text, form.text)
    assert raw.headers["content-type"] == form.headers["content-type"] == "application/json"
    raw_body, form_body = raw.json(), form.json()
    if raw.status_code == 200:
        assert set(raw_body.pop("timings_ms")) == set(form_body.pop("timings_ms"))
        assert "server-timing" in raw.headers and "x-request-id" in raw.headers
    assert raw_body == form_body


def test_an_unexpected_error_on_the_raw_route_is_a_json_500(client: TestClient) -> None:
    state = client.app.state.service  # type: ignore[attr-defined]

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    state.pipeline.detect_alone = broken
    resp = client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 500
    assert resp.json() == {"detail": "internal error; see the service log"}
    assert state.in_flight == 0  # the request's slot is given back
