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
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import median, time_calls
from hostinfo import cpu_description
from tables import write_json

from vitbench.trainer.export.onnx import ExportableDetector, export_onnx, preprocess
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import apply_overrides, get_recipe


def _time(fn: Callable[[], Any], warmup: int, repeats: int, device: str = "cpu") -> float:
    """Median wall time of ``fn`` in milliseconds."""
    return median(time_calls(fn, warmup, repeats, device)) * 1000.0


RUNTIMES = ("ort-cpu", "ort-cuda", "trt")


def run_benchmark(
    recipe_name: str,
    *,
    image_size: int | None = None,
    device: str = "cpu",
    runtimes: Sequence[str] | None = None,
    num_classes: int = 80,
    score_thresh: float = 0.0,
    warmup: int = 2,
    repeats: int = 10,
    threads: int | None = None,
    parity_count: int = 0,
    interleave: bool = False,
    profile: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Export the recipe's detector (random weights, seed 0) and time eager PyTorch on ``device`` against
    each ONNX Runtime path in ``runtimes`` (``ort-cpu``, ``ort-cuda``, ``trt``: TensorRT EP fp16 backbone +
    CUDA EP tail) on one pre-processed canvas. With ``parity_count`` > 0, also run the export parity check
    (:func:`trainer.export.parity.run_parity`) of each runtime against eager on that many synthetic images
    plus the wide and the flat one. On the CPU, ``interleave`` times eager and ONNX Runtime alternately run
    by run (both see the same load) and ``profile`` adds ORT's kernel time per op type. Returns latencies
    (ms), ratios and parity summaries."""
    import onnxruntime as ort

    from vitbench.trainer.export.parity import onnx_runner, run_parity, torch_runner
    from vitbench.trainer.export.pipeline import parity_images, torch_runner_cuda

    runtimes = list(runtimes or (["ort-cpu"] if device == "cpu" else ["ort-cuda", "trt"]))
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; expected some of {', '.join(RUNTIMES)}")
    overrides = [f"heads.score_thresh={score_thresh}"]
    if image_size:
        overrides.append(f"input.image_size={image_size}")
    recipe = apply_overrides(get_recipe(recipe_name), overrides)
    size = recipe.input.image_size
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False  # fp32 eager reference, as the exported graph computes
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = build_detector(recipe, num_classes).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(size, size * 3 // 4, 3), dtype=np.uint8)
    x, _ = preprocess(image, model)
    wrapper = ExportableDetector(model, size).eval()
    results: dict[str, Any] = {
        "recipe": recipe.name,
        "image_size": size,
        "device": device,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu": cpu_description(),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "latency_ms": {},
        "parity": {},
    }
    lat: dict[str, float] = results["latency_ms"]
    images = parity_images(model, parity_count) if parity_count else []
    with tempfile.TemporaryDirectory() as tmp:
        log(f"  exporting {recipe.name} at {size} px to ONNX")
        onnx_path = export_onnx(model, size, Path(tmp) / "model.onnx", sample=x).path
        if "trt" in runtimes:
            from vitbench.trainer.export.tensorrt import export_split, require_tensorrt

            require_tensorrt()
            split = export_split(model, size, Path(tmp))  # before the model moves to the GPU
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        feed = {"images": x.numpy()}
        if device == "cuda":
            results["gpu"] = torch.cuda.get_device_name(0)
            eager_module = ExportableDetector(model.cuda(), size).eval()
            eager = torch_runner_cuda(eager_module)
            xd = x.cuda()
        else:
            eager_module, eager, xd = wrapper, torch_runner(wrapper), x
        with torch.no_grad():
            n_det = len(eager_module(xd)[1])
            lat[f"pytorch_eager_{device}"] = _time(lambda: eager_module(xd), warmup, repeats, device)
        runners: dict[str, Any] = {}
        for runtime in runtimes:
            log(f"  {runtime}")
            if runtime == "trt":
                from vitbench.registry.hashing import sha256_file
                from vitbench.trainer.export.tensorrt import TensorRTDetector

                trt = TensorRTDetector(split, size, Path(tmp) / "trt-cache", sha256_file(split.backbone))
                build_start = time.perf_counter()
                trt(feed["images"])  # the first run builds the engine
                results["tensorrt_engine_build_s"] = time.perf_counter() - build_start
                results["tensorrt"] = trt.info()
                key, runner = "tensorrt_fp16_backbone_cuda_tail", trt
            else:
                provider = "CPUExecutionProvider" if runtime == "ort-cpu" else "CUDAExecutionProvider"
                sess = ort.InferenceSession(str(onnx_path), opts, providers=[provider])
                key, runner = f"onnxruntime_{runtime.removeprefix('ort-')}", onnx_runner(sess)
            if interleave and runtime == "ort-cpu":  # eager and ORT alternate: both see the same load
                with torch.no_grad():
                    lat[f"pytorch_eager_{device}"], lat[key] = _time_interleaved(
                        lambda: eager_module(xd), lambda r=runner: r(feed["images"]), warmup, repeats
                    )
            else:
                lat[key] = _time(lambda r=runner: r(feed["images"]), warmup, repeats)
            if profile and runtime == "ort-cpu":
                results["ort_profile_ms_by_op"] = profile_ops(onnx_path, opts, feed, Path(tmp))
            results[f"ratio_{key}_over_eager"] = lat[key] / lat[f"pytorch_eager_{device}"]
            runners[key] = runner
        for key, runner in runners.items():
            if not images:
                break
            report = run_parity(eager, runner, images, key, float(recipe.heads.score_thresh))
            box = [r.min_box_iou for r in report.images if r.min_box_iou is not None]
            score = [r.max_score_diff for r in report.images if r.max_score_diff is not None]
            results["parity"][key] = {
                "passed": report.passed,
                "images": len(report.images),
                "passed_images": sum(r.passed for r in report.images),
                "min_box_iou": min(box) if box else None,
                "max_score_diff": max(score) if score else None,
            }
        results["detections"] = n_det
    return results


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
    return median(times_a), median(times_b)


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
    parser.add_argument(
        "--parity", type=int, default=0, help="also check export parity on N synthetic images (+2 edge cases)"
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

    results = run_benchmark(
        args.recipe,
        image_size=args.image_size,
        device=args.device,
        num_classes=args.num_classes,
        score_thresh=args.score_thresh,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        parity_count=args.parity,
        interleave=args.interleave,
        profile=args.profile,
    )
    lat = results["latency_ms"]
    width = max(len(k) for k in lat)
    print(
        f"{results['recipe']} @ {results['image_size']}px, {args.device}, "
        f"{results['detections']} detections, median of {args.repeats}"
    )
    print(f"  on {results['cpu']}")
    for key, ms in lat.items():
        print(f"  {key:<{width}}  {ms:9.1f} ms")
    for key, val in results.items():
        if key.startswith("ratio_"):
            print(f"  {key}: {val:.2f}")
    for key, rep in results["parity"].items():
        print(f"  parity {key}: {rep['passed_images']}/{rep['images']} images passed")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
