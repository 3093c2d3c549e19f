"""A tiny ONNX graph that follows the exported detector contract, for tests where the model is not the point.

Input ``images`` float32 [1, 3, S, S]; outputs ``boxes`` [4, 4] (fixed, in the S×S canvas), ``scores`` [4]
(0.95, 0.7, 0.4 and sigmoid of the mean input value), ``labels`` int64 [4] (1, 2, 1, 3) and
``mask_logits`` [4, 28, 28] probabilities (a centred disk, a full square, a left half, a full square).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vitbench.registry.hashing import sha256_file
from vitbench.registry.manifest import InputSpec, ModelManifest

CLASS_NAMES = ("circle", "square", "triangle")
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
BASE_SCORES = np.array([0.95, 0.7, 0.4, 0.0], dtype=np.float32)
LABELS = np.array([1, 2, 1, 3], dtype=np.int64)


def canvas_boxes(size: int) -> np.ndarray:
    """The fixed boxes [4, 4] (x1, y1, x2, y2) in the S×S canvas."""
    return np.array(
        [
            [0.125, 0.25, 0.5, 0.5],
            [0.5, 0.125, 0.875, 0.375],
            [0.0, 0.0, 0.25, 0.25],
            [0.25, 0.25, 0.75, 0.75],
        ],
        dtype=np.float32,
    ) * np.float32(size)


def mask_probs(m: int = 28) -> np.ndarray:
    """The fixed mask probabilities [4, M, M]."""
    yy, xx = np.mgrid[0:m, 0:m].astype(np.float32) + 0.5
    disk = (((yy - m / 2) ** 2 + (xx - m / 2) ** 2) < (m * 0.4) ** 2).astype(np.float32) * 0.98 + 0.01
    square = np.full((m, m), 0.99, dtype=np.float32)
    half = np.zeros((m, m), dtype=np.float32)
    half[:, : m // 2] = 0.9
    return np.stack([disk, square, half, square])


def build_fake_detector(path: Path, size: int) -> Path:
    """Write the fake detector graph for canvas ``size`` to ``path`` (opset 17)."""
    const = [
        helper.make_node("Constant", [], ["boxes_c"], value=numpy_helper.from_array(canvas_boxes(size))),
        helper.make_node("Constant", [], ["base"], value=numpy_helper.from_array(BASE_SCORES)),
        helper.make_node(
            "Constant", [], ["onehot"], value=numpy_helper.from_array(np.array([0, 0, 0, 1], np.float32))
        ),
        helper.make_node("Constant", [], ["labels_c"], value=numpy_helper.from_array(LABELS)),
        helper.make_node("Constant", [], ["masks_c"], value=numpy_helper.from_array(mask_probs())),
    ]
    nodes = [
        *const,
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Sigmoid", ["mean"], ["mean_p"]),
        helper.make_node("Mul", ["onehot", "mean_p"], ["extra"]),
        helper.make_node("Add", ["base", "extra"], ["scores"]),
        helper.make_node("Identity", ["boxes_c"], ["boxes"]),
        helper.make_node("Identity", ["labels_c"], ["labels"]),
        helper.make_node("Identity", ["masks_c"], ["mask_logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fake_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("mask_logits", TensorProto.FLOAT, ["N", 28, 28]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_fake_model_dir(
    directory: Path, size: int = 64, name: str = "fake-detector", version: str = "3"
) -> Path:
    """An exported-model folder (``model.onnx`` + ``manifest.json``) holding the fake detector."""
    onnx_path = build_fake_detector(directory / "model.onnx", size)
    manifest = ModelManifest(
        model_name=name,
        model_version=version,
        recipe="bench-tiny",
        input=InputSpec(size=size, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD),
        class_names=CLASS_NAMES,
        opset=17,
        files={"model.onnx": sha256_file(onnx_path)},
    )
    manifest.save(directory / "manifest.json")
    return directory
