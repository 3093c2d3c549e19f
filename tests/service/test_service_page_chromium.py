"""The HTML page driven in headless Chromium over the DevTools protocol: upload an image, see boxes."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import image_bytes, running_server, settings_for

from vitbench.service.app import create_app

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
    "--remote-debugging-port=0",
]


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._next = 0

    def call(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next += 1
        self._ws.send(json.dumps({"id": self._next, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self._next:
                if "error" in message:
                    raise AssertionError(f"{method} failed: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/install-system-deps.sh installs it)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        from websockets.sync.client import connect

        with connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=30) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_page_uploads_an_image_and_draws_boxes_and_masks(
    chromium: DevTools, fake_model_dir: Path, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes(400, 200, "PNG"))
    app = create_app(settings_for(fake_model_dir))
    with running_server(app) as base:
        chromium.call("Page.enable")
        chromium.call("Page.navigate", url=f"{base}/")
        chromium.wait_for("document.readyState === 'complete' && document.getElementById('file') !== null")
        chromium.wait_for("document.getElementById('model').textContent.includes('fake-detector')")
        chromium.evaluate("document.getElementById('threshold').value = '0.9'")  # only the 0.95 'circle'
        root = chromium.call("DOM.getDocument")["root"]["nodeId"]
        node = chromium.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        chromium.call("DOM.setFileInputFiles", files=[str(photo)], nodeId=node)
        state = chromium.wait_for(
            "['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state"
        )
        status = chromium.evaluate("document.getElementById('status').textContent")
        assert state == "done", status
        assert status.startswith("1 detection(s) by fake-detector v3"), status
        assert chromium.evaluate("document.querySelector('#results tbody tr').textContent").startswith(
            "1circle"
        )
        rect = chromium.evaluate("JSON.stringify(document.getElementById('canvas').getBoundingClientRect())")
        shot = chromium.call("Page.captureScreenshot", format="png")
    canvas = json.loads(rect)
    assert (round(canvas["width"]), round(canvas["height"])) == (402, 202)  # natural size + 1px border
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")).astype(int)
    x0, y0 = round(canvas["left"]) + 1, round(canvas["top"]) + 1  # inside the 1px border
    view = image[y0 : y0 + 200, x0 : x0 + 400]
    magenta = (view[..., 0] > 200) & (view[..., 1] < 90) & (view[..., 2] > 200)
    # First detection ('circle', magenta): canvas box [8, 16, 32, 32] of 64 → [50, 100, 200, 200] in 400x200.
    assert magenta.sum() > 1000  # the 4-px outline and the label in the first palette colour
    ys, xs = np.nonzero(magenta)
    assert abs(xs.min() - 50) <= 3 and abs(xs.max() - 200) <= 3 and abs(ys.max() - 200) <= 3
    assert magenta[100:200, 60:190].sum() < 0.05 * 100 * 130  # the inside is not painted over
    # The mask tints the inside of the disk: a magenta-leaning pixel at the box centre (125, 150).
    r, g, b = view[150, 125]
    assert r > g + 40 and b > g + 40
