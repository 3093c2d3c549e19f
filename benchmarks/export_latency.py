"""Latency of the exported detector against PyTorch eager on the same model and the same input.

CPU (any machine): ONNX Runtime CPUExecutionProvider vs PyTorch eager.
GPU (``--device cuda``): PyTorch eager on CUDA vs ONNX Runtime CUDAExecutionProvider vs the
TensorRT path (backbone on the TensorRT EP in fp16, tail on the CUDA EP), typically at 1024 px:

    python benchmarks/export_latency.py --recipe bench-tiny --repeats 20
    python benchmarks/export_latency.py --recipe vitdet-b --image-size 1024 --device cuda --repeats 50

The model has random weights (seeded), 80 classes and ``score_thresh`` 0 by default, so it returns
``detections_per_img`` boxes (the worst case for the mask head). Latency is per image (batch 1)
on an already pre-processed ``(1, 3, S, S)`` canvas; the median of ``--repeats`` timed runs after
``--warmup`` runs is reported, with the ratio to eager measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitbench.trainer.export.onnx import ExportableDetector, export_onnx, preprocess
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import apply_overrides, get_recipe


def _time(fn: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def profile_ops(onnx_path: Path, opts: Any, feed: dict[str, Any], tmp: Path) -> dict[str, float]:
    """Kernel milliseconds per ONNX op type in one profiled run (ORT's ``enable_profiling``).

    Control-flow nodes (``If``, ``Loop``) include the time of the nodes inside them.
    """
    import collections

    import onnxruntime as ort

    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "ort-profile")
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feed)  # warm-up, then the profiled run is the last ``model_run``
    sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    opts.enable_profiling = False
    last = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        inside = last["ts"] <= e.get("ts", -1) <= last["ts"] + last["dur"]
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and inside:
            per_op[e["args"]["op_name"]] += e["dur"] / 1000.0
    print(f"ORT profile, one run of {last['dur'] / 1000:.1f} ms, kernel ms per op type:")
    for op, ms in per_op.most_common(12):
        print(f"  {op:<24} {ms:9.1f} ms  {100 * ms / (last['dur'] / 1000):5.1f} %")
    return {op: round(ms, 1) for op, ms in per_op.most_common()}


def _time_interleaved(
    a: Callable[[], Any], b: Callable[[], Any], warmup: int, repeats: int
) -> tuple[float, float]:
    """Median ms of ``a`` and of ``b``, run alternately (a, b, a, b, ...) after ``warmup`` rounds."""
    for _ in range(warmup):
        a()
        b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, out in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times_a), statistics.median(times_b)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and optionally write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="bench-tiny", help="recipe name (default bench-tiny)")
    parser.add_argument("--image-size", type=int, default=None, help="override input.image_size (pixels)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=0.0,
        help="override heads.score_thresh; 0 keeps detections_per_img boxes (worst case for the heads)",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch / ORT intra-op threads (default: all)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="CPU: alternate eager and ORT runs (fair on a machine whose load changes)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="CPU: also run ORT once with its profiler and print the time per op type",
    )
    args = parser.parse_args(argv)

    import onnxruntime as ort

    recipe = get_recipe(args.recipe)
    overrides = [f"heads.score_thresh={args.score_thresh}"]
    if args.image_size:
        overrides.append(f"input.image_size={args.image_size}")
    recipe = apply_overrides(recipe, overrides)
    size = recipe.input.image_size
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_detector(recipe, args.num_classes).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(size, size * 3 // 4, 3), dtype=np.uint8)
    x, _ = preprocess(image, model)
    wrapper = ExportableDetector(model, size).eval()
    results: dict[str, Any] = {
        "recipe": recipe.name,
        "image_size": size,
        "device": args.device,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "latency_ms": {},
    }
    lat: dict[str, float] = results["latency_ms"]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, size, Path(tmp) / "model.onnx", sample=x).path
        opts = ort.SessionOptions()
        if args.threads:
            opts.intra_op_num_threads = args.threads
        feed = {"images": x.numpy()}
        if args.device == "cpu":
            sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
            with torch.no_grad():
                n_det = len(wrapper(x)[1])
                if args.interleave:  # eager and ORT alternate run by run: both see the same load
                    eager_ms, ort_ms = _time_interleaved(
                        lambda: wrapper(x), lambda: sess.run(None, feed), args.warmup, args.repeats
                    )
                    lat["pytorch_eager_cpu"], lat["onnxruntime_cpu"] = eager_ms, ort_ms
                else:
                    lat["pytorch_eager_cpu"] = _time(lambda: wrapper(x), args.warmup, args.repeats)
            if not args.interleave:
                lat["onnxruntime_cpu"] = _time(lambda: sess.run(None, feed), args.warmup, args.repeats)
            results["ratio_ort_cpu_over_eager"] = lat["onnxruntime_cpu"] / lat["pytorch_eager_cpu"]
            if args.profile:
                results["ort_profile_ms_by_op"] = profile_ops(onnx_path, opts, feed, Path(tmp))
        else:
            from vitbench.trainer.export.tensorrt import TensorRTDetector, export_split, require_tensorrt

            require_tensorrt()
            results["gpu"] = torch.cuda.get_device_name(0)
            model_gpu = wrapper.cuda()
            xg = x.cuda()
            with torch.no_grad():
                n_det = len(model_gpu(xg)[1])
                lat["pytorch_eager_cuda"] = _time(
                    lambda: model_gpu(xg), args.warmup, args.repeats, torch.cuda.synchronize
                )
            cuda = ort.InferenceSession(str(onnx_path), opts, providers=["CUDAExecutionProvider"])
            lat["onnxruntime_cuda"] = _time(lambda: cuda.run(None, feed), args.warmup, args.repeats)
            split = export_split(model.cpu(), size, Path(tmp))
            from vitbench.registry.hashing import sha256_file

            trt = TensorRTDetector(split, size, Path(tmp) / "trt-cache", sha256_file(split.backbone))
            build_start = time.perf_counter()
            trt(feed["images"])  # first run builds the engine
            results["tensorrt_engine_build_s"] = time.perf_counter() - build_start
            lat["tensorrt_fp16_backbone_cuda_tail"] = _time(
                lambda: trt(feed["images"]), args.warmup, args.repeats
            )
            results["tensorrt"] = trt.info()
            for key in ("onnxruntime_cuda", "tensorrt_fp16_backbone_cuda_tail"):
                results[f"ratio_{key}_over_eager"] = lat[key] / lat["pytorch_eager_cuda"]
        results["detections"] = n_det
    width = max(len(k) for k in lat)
    print(f"{recipe.name} @ {size}px, {args.device}, {n_det} detections, median of {args.repeats}")
    for key, ms in lat.items():
        print(f"  {key:<{width}}  {ms:9.1f} ms")
    for key, val in results.items():
        if key.startswith("ratio_"):
            print(f"  {key}: {val:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
