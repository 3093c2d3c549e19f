"""A pinned service (``VITBENCH_PIN_MODEL`` + ``VITBENCH_PIN_SHA256``) loads its version and nothing else.

Against the embedded registry: the pin wins over the alias, and over a writer who replaces a version's
export and rewrites its ``export.onnx.manifest_sha256`` tag to match (which the tag-based check accepts).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from vitbench.registry.client import RegistryClient
from vitbench.registry.manifest import MANIFEST_FILE, InputSpec, ModelManifest
from vitbench.service.app import source_from_settings
from vitbench.service.model_source import ModelSourceError, Pin, RegistryModelSource
from vitbench.service.settings import ServiceSettings


def _manifest(onnx: Path, name: str, version: str) -> ModelManifest:
    return ModelManifest(
        model_name=name,
        model_version=version,
        recipe="bench-tiny",
        input=InputSpec(size=64, pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375)),
        opset=17,
        class_names=("circle", "square"),
        files={"model.onnx": hashlib.sha256(onnx.read_bytes()).hexdigest()},
    )


def _register_export(client: RegistryClient, name: str, graph: bytes, tmp: Path) -> str:
    """Register a version with an ONNX export of ``graph``; return its manifest digest."""
    run_id = client.start_run("pinning")
    ckpt = tmp / f"ckpt-{graph.hex()[:8]}.pth"
    ckpt.write_bytes(graph * 4)
    info = client.register_version(name, run_id, ckpt, {"recipe": "bench-tiny"})
    client.end_run(run_id)
    onnx = tmp / "model.onnx"
    onnx.write_bytes(graph)
    info = client.attach_export(info, [onnx], _manifest(onnx, name, info.version))
    return info.tags["export.onnx.manifest_sha256"]


@pytest.fixture
def two_versions(registry: RegistryClient, model_name: str, tmp_path: Path) -> tuple[str, str, str]:
    """``model_name`` with versions 1 and 2 exported, champion on 1; returns (name, digest1, digest2)."""
    d1 = _register_export(registry, model_name, b"graph one", tmp_path)
    d2 = _register_export(registry, model_name, b"graph two", tmp_path)
    registry.promote(f"{model_name}/1")
    return model_name, d1, d2


def _source(registry: RegistryClient, ref: str, pin: Pin | None, cache: Path) -> RegistryModelSource:
    return RegistryModelSource(ref, lambda: registry, cache, pin=pin)


def test_pinned_alias_loads_the_pinned_version_and_refuses_another(
    registry: RegistryClient, two_versions: tuple[str, str, str], tmp_path: Path
) -> None:
    name, d1, _ = two_versions
    pin = Pin(f"{name}/1", d1)
    artifact = _source(registry, f"{name}@champion", pin, tmp_path / "cache").fetch()
    assert (artifact.name, artifact.version) == (name, "1")
    assert artifact.onnx_path.read_bytes() == b"graph one"

    registry.promote(f"{name}/2")  # the registry now says champion is version 2
    with pytest.raises(
        ModelSourceError, match=rf"resolves to {name}/2, but this service is pinned to {name}/1"
    ):
        _source(registry, f"{name}@champion", pin, tmp_path / "cache2").fetch()
    assert not (tmp_path / "cache2").exists() or not any((tmp_path / "cache2").rglob("model.onnx"))


def test_pin_refuses_a_version_whose_export_and_tags_were_rewritten(
    registry: RegistryClient, two_versions: tuple[str, str, str], tmp_path: Path
) -> None:
    name, d1, _ = two_versions
    # Another writer replaces version 1's export and rewrites the digest tag to match its manifest.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.onnx").write_bytes(b"someone else's graph")
    registry.attach_export(f"{name}/1", [evil / "model.onnx"], _manifest(evil / "model.onnx", name, "1"))
    rewritten = registry.resolve(f"{name}/1").tags["export.onnx.manifest_sha256"]
    assert rewritten != d1

    # The tag-based check alone accepts it: the artifacts match the (rewritten) tags.
    onnx, _, _ = registry.fetch_exported(f"{name}/1", tmp_path / "unpinned")
    assert onnx.read_bytes() == b"someone else's graph"

    # The pinned source refuses it and leaves nothing in its cache.
    cache = tmp_path / "cache"
    with pytest.raises(ModelSourceError, match=rf"pinned to {d1} \(VITBENCH_PIN_SHA256\)"):
        _source(registry, f"{name}/1", Pin(f"{name}/1", d1), cache).fetch()
    assert not list(cache.rglob("model.onnx")) and not list(cache.rglob(MANIFEST_FILE))


def test_service_settings_pin_alone_serves_the_pin(
    registry: RegistryClient, registry_home: Path, two_versions: tuple[str, str, str], tmp_path: Path
) -> None:
    name, d1, d2 = two_versions
    settings = ServiceSettings(
        pin_model=f"{name}/2", pin_sha256=d2.upper(), home=registry_home, cache_dir=tmp_path / "c"
    )
    assert settings.model == f"{name}/2" and settings.pin_sha256 == d2
    source = source_from_settings(settings)
    assert "pinned to" in source.describe()
    assert source.fetch().onnx_path.read_bytes() == b"graph two"
    wrong = ServiceSettings(
        pin_model=f"{name}/2", pin_sha256=d1, home=registry_home, cache_dir=tmp_path / "d"
    )
    with pytest.raises(ModelSourceError, match="the registered artifacts changed since the pin was taken"):
        source_from_settings(wrong).fetch()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pin_model": "m/1"}, "needs both pin_model"),
        ({"pin_sha256": "a" * 64}, "needs both pin_model"),
        ({"pin_model": "m@champion", "pin_sha256": "a" * 64}, "must be NAME/VERSION"),
        ({"pin_model": "m/1", "pin_sha256": "xyz"}, "is not a SHA-256 digest"),
        ({"model": "m/2", "pin_model": "m/1", "pin_sha256": "a" * 64}, "is not the pinned version"),
        (
            {"model_dir": "/tmp", "pin_model": "m/1", "pin_sha256": "a" * 64},
            "cannot be combined with model_dir",
        ),
    ],
)
def test_bad_pins_are_refused_at_startup(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ServiceSettings(**kwargs)  # type: ignore[arg-type]


def test_pin_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITBENCH_PIN_MODEL", "coco-vitdet/3")
    monkeypatch.setenv("VITBENCH_PIN_SHA256", "b" * 64)
    monkeypatch.setenv("VITBENCH_MODEL", "coco-vitdet@champion")
    s = ServiceSettings()
    assert (s.model, s.pin_model, s.pin_sha256) == ("coco-vitdet@champion", "coco-vitdet/3", "b" * 64)
