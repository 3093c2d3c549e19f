"""Weights load from ``s3://`` through fsspec/s3fs (an S3 stand-in: moto's server) with sha256 checks."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pytest
import torch
from inits_formats import mae_file

from vitbench.trainer.inits import InitError, load_initialization
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import get_recipe

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield url
    finally:
        server.stop()


def test_load_from_s3(s3_endpoint: str) -> None:
    import boto3

    buf = io.BytesIO()
    torch.save(mae_file(96, 4, seed=9), buf)
    data = buf.getvalue()
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="weights")
    s3.put_object(Bucket="weights", Key="mae/mae_pretrain_vit_base.pth", Body=data)

    recipe = get_recipe("bench-tiny")
    model = build_detector(recipe, num_classes=2)
    uri = "s3://weights/mae/mae_pretrain_vit_base.pth"
    report = load_initialization(model, recipe, "mae", uri, sha256=hashlib.sha256(data).hexdigest())
    assert report.ok and report.source == uri and len(report.loaded) == 51
    with pytest.raises(InitError, match="sha256 mismatch"):
        load_initialization(model, recipe, "mae", uri, sha256="f" * 64)
    with pytest.raises(InitError, match=r"cannot read s3://weights/missing\.pth"):
        load_initialization(model, recipe, "mae", "s3://weights/missing.pth")
