"""ONNX export of both necks: graph layout, parity against eager PyTorch, CLI round trip via the registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from vitbench.registry.client import RegistryClient
from vitbench.registry.manifest import ModelManifest
from vitbench.trainer.engine.checkpoint import atomic_save
from vitbench.trainer.export.onnx import ExportableDetector, preprocess
from vitbench.trainer.export.pipeline import ExportOutcome, export_checkpoint
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import get_recipe

CLASSES = ["circle", "rectangle", "triangle"]


def _checkpoint(recipe_name: str, path: Path) -> Path:
    torch.manual_seed(0)
    recipe = get_recipe(recipe_name)
    model = build_detector(recipe, len(CLASSES))
    meta = {"init": "random", "num_classes": 3, "class_names": CLASSES, "dataset": "synth", "iteration": 0}
    atomic_save({"model": model.state_dict(), "recipe": recipe.model_dump(mode="json"), "meta": meta}, path)
    return path


def _op_types(graph: onnx.GraphProto) -> set[str]:
    """Op types in ``graph`` and its subgraphs (NMS sits inside ``If`` branches)."""
    ops: set[str] = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= _op_types(attr.g)
    return ops


@pytest.fixture(scope="module")
def vitdet_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportOutcome]:
    root = tmp_path_factory.mktemp("vitdet-export")
    ckpt = _checkpoint("vitdet-tiny", root / "model_final.pth")
    return ckpt, export_checkpoint(ckpt, root / "out", parity_count=1)


def test_vitdet_export_graph_and_manifest(vitdet_export: tuple[Path, ExportOutcome]) -> None:
    ckpt, outcome = vitdet_export
    m = outcome.manifest
    assert outcome.parity.passed, outcome.parity
    assert [im.image for im in outcome.parity.images] == ["synthetic-0", "wide", "flat"]
    assert "batch 1 and within one batch of 3" in outcome.parity.runtime
    assert all(im.n_matched == im.n_eager == im.n_exported for im in outcome.parity.images)
    assert m.recipe == "vitdet-tiny" and m.neck == "simple_fpn" and m.opset == 17
    assert m.input.size == 128 and m.class_names == tuple(CLASSES)
    assert m.input.pixel_mean == get_recipe("vitdet-tiny").input.pixel_mean
    assert m.source_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    onnx_path = outcome.files[0]
    assert m.files == {"model.onnx": hashlib.sha256(onnx_path.read_bytes()).hexdigest()}
    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == ["images"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["B", 3, 128, 128]  # dynamic batch
    assert [o.name for o in graph.output] == ["boxes", "scores", "labels", "mask_logits", "batch_index"]
    assert [o.name for o in m.outputs][-1] == "batch_index"  # the manifest says the graph batches
    ops = _op_types(graph)
    assert {"NonMaxSuppression", "RoiAlign"} <= ops and "Loop" not in ops  # no mask pasting in the graph
    assert "If" not in ops and "ScatterElements" not in ops  # no traced-in script branches


def test_onnx_matches_eager_on_a_fresh_image(vitdet_export: tuple[Path, ExportOutcome]) -> None:
    """Independent of the parity module: a new image, compared output by output after sorting by score."""
    from vitbench.trainer.engine.checkpoint import load_inference_model

    ckpt, outcome = vitdet_export
    model, _, _ = load_inference_model(ckpt)
    rng = np.random.default_rng(123)
    image = rng.integers(0, 255, size=(100, 128, 3), dtype=np.uint8)
    x, scale = preprocess(image, model)
    assert scale == 1.0 and tuple(x.shape) == (1, 3, 128, 128)
    with torch.no_grad():
        eager = [t.numpy() for t in ExportableDetector(model, 128).eval()(x)[:4]]
    sess = ort.InferenceSession(str(outcome.files[0]), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x.numpy()})[:4]
    assert out[0].dtype == np.float32 and out[2].dtype == np.int64 and out[3].shape[1:] == (28, 28)
    assert len(out[1]) == len(eager[1]) > 0
    e_order, o_order = np.argsort(-eager[1], kind="stable"), np.argsort(-out[1], kind="stable")
    np.testing.assert_allclose(out[1][o_order], eager[1][e_order], atol=1e-4)
    np.testing.assert_allclose(out[0][o_order], eager[0][e_order], atol=1e-2)
    np.testing.assert_array_equal(out[2][o_order], eager[2][e_order])
    np.testing.assert_allclose(out[3][o_order], eager[3][e_order], atol=1e-3)
    assert (out[3] >= 0).all() and (out[3] <= 1).all()  # probabilities, sigmoid applied


def test_preprocess_follows_the_manifest_contract() -> None:
    """Resize longest side to S, normalize with mean/std (0-255), pad bottom/right with zeros."""
    recipe = get_recipe("bench-tiny")
    model = build_detector(recipe, 2).eval()
    image = np.full((32, 64, 3), 200, dtype=np.uint8)
    x, scale = preprocess(image, model)
    assert scale == 2.0
    mean, std = np.array(recipe.input.pixel_mean), np.array(recipe.input.pixel_std)
    expected = (200 - mean) / std
    np.testing.assert_allclose(
        x[0, :, :64, :].numpy(), np.broadcast_to(expected[:, None, None], (3, 64, 128)), atol=1e-4
    )
    assert torch.count_nonzero(x[0, :, 64:, :]) == 0
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        preprocess(image.astype(np.float32), model)


def test_cli_export_bench_tiny_attaches_to_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``vitbench export`` downloads the registered checkpoint, exports, passes parity and uploads."""
    from vitbench.cli.main import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    client = RegistryClient.embedded(home)
    run_id = client.start_run("export-tests")
    ckpt = _checkpoint("bench-tiny", tmp_path / "model_final.pth")
    client.register_version("bench-tiny-random", run_id, ckpt, {"init": "random", "recipe": "bench-tiny"})
    client.promote("bench-tiny-random/1")
    res = CliRunner().invoke(
        app,
        [
            "export",
            "--model",
            "bench-tiny-random@champion",
            "--home",
            str(home),
            "--parity-images",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    printed = ModelManifest.model_validate_json(res.stdout)
    assert printed.parity is not None and printed.parity.passed and printed.neck == "multiscale_fpn"
    path, manifest, info = client.fetch_exported("bench-tiny-random@champion", tmp_path / "served")
    assert manifest == printed and info.version == "1"
    assert manifest.model_name == "bench-tiny-random" and manifest.model_version == "1"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores", "labels", "mask_logits", "batch_index"]


def test_cli_tensorrt_without_gpu_says_so(tmp_path: Path) -> None:
    from vitbench.cli.main import app

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the GPU tier covers TensorRT")
    res = CliRunner().invoke(
        app, ["export", "--model", "m@champion", "--format", "tensorrt", "--home", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "needs an NVIDIA GPU" in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize("recipe_name", ["bench-tiny", "vitdet-tiny"])
def test_batched_detector_reproduces_torchvision_per_image(recipe_name: str) -> None:
    """The batch-vectorised inference equals torchvision's RPN + RoIHeads image by image (eager)."""
    from vitbench.trainer.export.onnx import reference_detections

    torch.manual_seed(0)
    model = build_detector(get_recipe(recipe_name), len(CLASSES)).eval()
    rng = np.random.default_rng(7)
    sizes = [(128, 96), (60, 128), (128, 128)]  # different padding per image
    x = torch.cat([preprocess(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), model)[0] for h, w in sizes])
    with torch.no_grad():
        boxes, scores, labels, masks, index = ExportableDetector(model, 128).eval()(x)
    reference = reference_detections(model, x)
    assert sum(len(r["scores"]) for r in reference) > 0
    for i, ref in enumerate(reference):
        mine = index == i
        assert int(mine.sum()) == len(ref["scores"])
        torch.testing.assert_close(scores[mine], ref["scores"])  # both sorted by decreasing score
        torch.testing.assert_close(boxes[mine], ref["boxes"])
        torch.testing.assert_close(labels[mine], ref["labels"])
        torch.testing.assert_close(masks[mine], ref["masks"])


def test_one_batched_run_equals_single_image_runs(vitdet_export: tuple[Path, ExportOutcome]) -> None:
    """Three images in one session call give each image what a batch-1 call gives it."""
    from vitbench.trainer.engine.checkpoint import load_inference_model

    ckpt, outcome = vitdet_export
    model, _, _ = load_inference_model(ckpt)
    rng = np.random.default_rng(5)
    xs = [preprocess(rng.integers(0, 255, (128, 100, 3), dtype=np.uint8), model)[0].numpy() for _ in range(3)]
    sess = ort.InferenceSession(str(outcome.files[0]), providers=["CPUExecutionProvider"])
    boxes, scores, labels, masks, index = sess.run(None, {"images": np.concatenate(xs)})
    assert np.array_equal(index, np.sort(index, kind="stable"))  # image by image
    for i, x in enumerate(xs):
        b1, s1, l1, m1, i1 = sess.run(None, {"images": x})
        assert (i1 == 0).all() and len(s1) == int((index == i).sum()) > 0
        np.testing.assert_allclose(scores[index == i], s1, atol=1e-5)
        np.testing.assert_allclose(boxes[index == i], b1, atol=1e-3)
        np.testing.assert_array_equal(labels[index == i], l1)
        np.testing.assert_allclose(masks[index == i], m1, atol=1e-4)
