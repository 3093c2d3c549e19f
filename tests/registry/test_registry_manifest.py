"""ModelManifest: schema, atomic save, clear load errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitbench.registry.hashing import HashMismatchError, sha256_file, verify_file
from vitbench.registry.manifest import ImageParity, InputSpec, ManifestError, ModelManifest, ParityReport


def _manifest(**kw: object) -> ModelManifest:
    base: dict[str, object] = {
        "recipe": "vitdet-tiny",
        "input": InputSpec(size=128, pixel_mean=(1.0, 2.0, 3.0), pixel_std=(4.0, 5.0, 6.0)),
        "class_names": ("a", "b"),
        "opset": 17,
        "files": {"model.onnx": "0" * 64},
    }
    return ModelManifest(**(base | kw))  # type: ignore[arg-type]


def test_round_trip_and_layout(tmp_path: Path) -> None:
    report = ParityReport(
        runtime="ort",
        images=(ImageParity(image="x", n_eager=2, n_exported=2, n_matched=2, passed=True),),
        passed=True,
    )
    m = _manifest(parity=report)
    path = m.save(tmp_path / "sub" / "manifest.json")
    assert ModelManifest.load(path) == m
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["manifest.json"]  # no temp file left
    assert m.input.shape == (1, 3, 128, 128)
    assert [o.name for o in m.outputs] == ["boxes", "scores", "labels", "mask_logits"]
    assert m.output("mask_logits").shape == ("N", 28, 28)
    assert m.output("labels").dtype == "int64"


def test_schema_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a lower-case hex sha256"):
        _manifest(files={"model.onnx": "abc"})
    with pytest.raises(ValueError, match="plain names"):
        _manifest(files={"../model.onnx": "0" * 64})
    with pytest.raises(ValueError, match="pixel_std must be positive"):
        InputSpec(size=8, pixel_mean=(0, 0, 0), pixel_std=(1, 0, 1))
    with pytest.raises(ValueError, match="an image failed"):
        ParityReport(
            runtime="ort",
            images=(ImageParity(image="x", n_eager=1, n_exported=0, n_matched=0, passed=False),),
            passed=True,
        )
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="is not valid JSON"):
        ModelManifest.load(bad)
    bad.write_text('{"recipe": "x"}')
    with pytest.raises(ManifestError, match="does not match the schema"):
        ModelManifest.load(bad)
    with pytest.raises(ManifestError, match="cannot read manifest"):
        ModelManifest.load(tmp_path / "missing.json")


def test_hashing(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 test vector
    assert sha256_file(f) == digest
    assert verify_file(f, digest.upper()) == digest
    with pytest.raises(HashMismatchError, match=r"sha256 mismatch for f\.bin"):
        verify_file(f, "0" * 64)
