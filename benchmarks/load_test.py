"""Load test of the inference service: concurrent clients for a fixed time, with and without batching.

Starts ``vitbench serve`` in a subprocess for each configuration (dynamic batching off: max batch 1;
on: max batch N), drives it with C concurrent HTTP clients (asyncio + httpx, keep-alive) posting one
JPEG for D seconds per concurrency level, and reports throughput, p50/p90/p99 latency, the status
codes seen, and the service's overhead over the raw model latency (ONNX Runtime ``run`` on the same
pre-processed input, same provider and threads, measured in this process while the server is idle).

Example (the figures in docs/benchmarks.md; both servers run side by side and each load level is
measured on one then the other, so drift in machine load hits both alike):

    .venv/bin/python benchmarks/load_test.py --export-tiny --duration 15 --concurrency 1,2,4,16,48 \\
        --queue-size 16 --max-batch-size 8 --json benchmarks/results/load_test.json

On a GPU machine pass ``--model-dir`` with a real export and ``--providers CUDAExecutionProvider,...``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hostinfo import cpu_description  # noqa: E402 (needs the path set above)
from tables import write_json  # noqa: E402 (needs the path set above)


@dataclass
class Point:
    """One (configuration, concurrency) measurement."""

    config: str
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    statuses: dict[str, int]
    throughput_rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    server_inference_p50_ms: float | None
    server_queue_p50_ms: float | None
    overhead_p50_ms: float | None
    batch_sizes: dict[str, float] = field(default_factory=dict)
    stage_p50_ms: dict[str, float] = field(default_factory=dict)
    detections_per_image: float = 0.0


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """``--model-dir DIR`` or ``--export-tiny`` (exactly one): the model a service benchmark serves."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="exported folder (model.onnx + manifest.json)")
    source.add_argument("--export-tiny", action="store_true", help="export bench-tiny (random weights) first")


def export_tiny(out: Path) -> Path:
    """Export ``bench-tiny`` with seeded random weights (the same model as the service's tests)."""
    return export_seeded(out, "bench-tiny", ["circle", "square", "triangle"], "bench-tiny-random")


def export_seeded(out: Path, recipe_name: str, classes: list[str], model_name: str) -> Path:
    """Export ``recipe_name``'s detector with weights drawn from seed 0 (no checkpoint) to ``out``
    (``model.onnx`` with a dynamic batch + ``manifest.json``), as ``vitbench export`` lays it out."""
    import torch

    from vitbench.registry.hashing import sha256_file
    from vitbench.trainer.export.onnx import build_manifest, export_onnx
    from vitbench.trainer.models.detector import build_detector
    from vitbench.trainer.recipes import get_recipe

    torch.manual_seed(0)
    recipe = get_recipe(recipe_name)
    model = build_detector(recipe, len(classes)).eval()
    result = export_onnx(model, recipe.input.image_size, out / "model.onnx")
    build_manifest(
        recipe,
        {"class_names": classes, "num_classes": len(classes)},
        opset=result.opset,
        exporter=result.exporter,
        files={"model.onnx": sha256_file(result.path)},
        model_name=model_name,
        model_version="1",
    ).save(out / "manifest.json")
    return out


def make_image(width: int, height: int) -> bytes:
    """A JPEG with a gradient and a few shapes (deterministic)."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 120)], -1).astype(np.uint8)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.1, height * 0.2, width * 0.4, height * 0.7), fill=(230, 40, 40))
    draw.rectangle((width * 0.55, height * 0.3, width * 0.9, height * 0.8), fill=(40, 40, 230))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def raw_model_latency_ms(
    model_dir: Path, image: bytes, providers: list[str], threads: int, runs: int
) -> float:
    """Median ``session.run`` time on the pre-processed image (no HTTP, no decode, no postprocess)."""
    from vitbench.registry.manifest import ModelManifest
    from vitbench.service.backends import OnnxBackend
    from vitbench.service.decode import decode_image
    from vitbench.service.preprocess import preprocess

    manifest = ModelManifest.load(model_dir / "manifest.json")
    backend = OnnxBackend(model_dir / "model.onnx", manifest.input.size, providers, intra_op_threads=threads)
    pixels = decode_image(image, 10**9).pixels
    batch, _ = preprocess(pixels, manifest.input.size, manifest.input.pixel_mean, manifest.input.pixel_std)
    for _ in range(3):
        backend.run(batch)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.run(batch)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(model_dir: Path, port: int, env_overrides: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, **env_overrides, "VITBENCH_LOG_LEVEL": "WARNING", "VITBENCH_DRAIN_SECONDS": "0"}
    cmd = [
        sys.executable,
        "-m",
        "vitbench.cli.main",
        "serve",
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready in 120 s")


def stop_servers(*procs: subprocess.Popen[bytes]) -> None:
    """SIGTERM every server started by :func:`start_server`, then wait for each (30 s) and kill the
    ones still running."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def batch_histogram(metrics_text: str) -> tuple[float, float]:
    """(count, sum) of ``vitbench_batch_size`` from the metrics page."""
    count = total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("vitbench_batch_size_count"):
            count = float(line.split()[-1])
        elif line.startswith("vitbench_batch_size_sum"):
            total = float(line.split()[-1])
    return count, total


async def drive(
    base: str, image: bytes, concurrency: int, duration_s: float, score_threshold: float = 0.05
) -> tuple[list[float], Counter, list]:
    """``concurrency`` clients posting ``image`` back to back for ``duration_s`` seconds."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    server_timings: list[dict[str, float]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        stop_at = time.perf_counter() + duration_s

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    resp = await client.post(
                        "/detect",
                        params={"mask_format": "rle", "score_threshold": score_threshold},
                        content=image,
                        headers={"content-type": "image/jpeg"},
                    )
                except httpx.TransportError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                elapsed = (time.perf_counter() - t0) * 1000
                statuses[str(resp.status_code)] += 1
                if resp.status_code == 200:
                    body = resp.json()
                    latencies.append(elapsed)
                    server_timings.append(
                        {**body["timings_ms"], "_detections": float(len(body["detections"]))}
                    )
                elif resp.status_code == 503:
                    await asyncio.sleep(0.01)  # a real client would honour Retry-After; keep pressure on

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, server_timings


def measure(name: str, base: str, image: bytes, concurrency: int, duration_s: float, score: float) -> Point:
    """One level of load against one running server."""
    before = batch_histogram(httpx.get(f"{base}/metrics").text)
    t0 = time.perf_counter()
    latencies, statuses, timings = asyncio.run(drive(base, image, concurrency, duration_s, score))
    wall = time.perf_counter() - t0
    after = batch_histogram(httpx.get(f"{base}/metrics").text)
    batches = after[0] - before[0]
    stages = ("decode", "preprocess", "postprocess")
    point = Point(
        config=name,
        concurrency=concurrency,
        duration_s=round(wall, 2),
        requests=sum(statuses.values()),
        ok=len(latencies),
        statuses=dict(statuses),
        throughput_rps=round(len(latencies) / wall, 2),
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        server_inference_p50_ms=percentile([t["inference"] for t in timings], 50),
        server_queue_p50_ms=percentile([t["queue"] for t in timings], 50),
        overhead_p50_ms=percentile(
            [lat - t["inference"] - t["queue"] for lat, t in zip(latencies, timings, strict=True)], 50
        ),
        batch_sizes={
            "batches": batches,
            "mean": round((after[1] - before[1]) / batches, 2) if batches else 0,
        },
        stage_p50_ms={k: round(percentile([t[k] for t in timings], 50) or 0.0, 2) for k in stages},
        detections_per_image=detections_seen(latencies, timings),
    )
    print(
        f"  {name:>12} c={concurrency:<3} {point.throughput_rps:7.2f} req/s  p50 {fmt(point.p50_ms)}  "
        f"p99 {fmt(point.p99_ms)}  statuses {dict(statuses)}",
        flush=True,
    )
    return point


def detections_seen(latencies: list[float], timings: list[dict[str, float]]) -> float:
    """Mean detections per answered request (recorded by :func:`drive`)."""
    counts = [t.get("_detections", 0.0) for t in timings]
    return round(sum(counts) / len(counts), 1) if counts else 0.0


def run_configs(
    configs: dict[str, dict[str, str]],
    model_dir: Path,
    image: bytes,
    concurrencies: list[int],
    duration_s: float,
    score: float,
) -> list[Point]:
    """Start one server per config, then measure every level on each config back to back (less drift)."""
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    points: list[Point] = []
    try:
        for name, env in configs.items():
            port = free_port()
            procs[name] = (start_server(model_dir, port, env), f"http://127.0.0.1:{port}")
            asyncio.run(drive(procs[name][1], image, 1, 2.0))  # warm the path (connections, allocator)
        for c in concurrencies:
            for name, (_, base) in procs.items():
                points.append(measure(name, base, image, c, duration_s, score))
    finally:
        stop_servers(*(proc for proc, _ in procs.values()))
    return points


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:7.1f} ms"


def markdown(points: list[Point], raw_ms: tuple[float, float]) -> str:
    lines = [
        "| config | clients | req/s | p50 ms | p90 ms | p99 ms | 200 | 503 | other | mean batch "
        "| batch run p50 ms | overhead p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        other = sum(v for k, v in p.statuses.items() if k not in ("200", "503"))
        cells = [
            p.config,
            str(p.concurrency),
            f"{p.throughput_rps:.2f}",
            *(f"{v or 0:.1f}" for v in (p.p50_ms, p.p90_ms, p.p99_ms)),
            str(p.ok),
            str(p.statuses.get("503", 0)),
            str(other),
            str(p.batch_sizes.get("mean", 0)),
            f"{p.server_inference_p50_ms or 0:.1f}",
            f"{p.overhead_p50_ms or 0:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Raw model (ORT `run` on the same pre-processed input, before / after): p50 {raw_ms[0]:.1f} / "
        f"{raw_ms[1]:.1f} ms. `overhead` = client latency − (queue wait + batch run) per request: HTTP, "
        "decode, preprocess, postprocess (mask paste + RLE) and JSON."
    )
    single = [p for p in points if p.concurrency == 1 and p.p50_ms is not None]
    for p in single:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in p.stage_p50_ms.items())
        lines.append(
            f"At 1 client, {p.config}: end-to-end p50 {p.p50_ms:.1f} ms; server stages p50 (ms): {stages}; "
            f"{p.detections_per_image:g} detections per image."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_source(parser)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--concurrency", default="1,2,4,16,48", help="comma-separated client counts")
    parser.add_argument("--max-batch-size", type=int, default=8, help="batch size of the batching config")
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0, help="batching window (ms)")
    parser.add_argument("--queue-size", type=int, default=16, help="queue bound (503 beyond it)")
    parser.add_argument("--providers", default="CPUExecutionProvider", help="ORT providers, best first")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT default)")
    parser.add_argument("--image-size", default="640x480", help="WxH of the posted JPEG")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.05,
        help="sent with each request (low = many masks to paste)",
    )
    parser.add_argument("--json", type=Path, help="write all points here")
    args = parser.parse_args()

    width, height = (int(v) for v in args.image_size.split("x"))
    image = make_image(width, height)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or export_tiny(Path(tmp))
        providers = args.providers.split(",")
        raw_before = raw_model_latency_ms(model_dir, image, providers, args.threads, runs=30)
        print(f"raw model latency p50: {raw_before:.1f} ms", flush=True)
        common = {
            "VITBENCH_PROVIDERS": args.providers,
            "VITBENCH_INTRA_OP_THREADS": str(args.threads),
            "VITBENCH_QUEUE_SIZE": str(args.queue_size),
            "VITBENCH_REQUEST_TIMEOUT_S": "60",
            "VITBENCH_MAX_QUEUE_DELAY_MS": str(args.max_queue_delay_ms),
        }
        configs = {
            "no batching": {**common, "VITBENCH_MAX_BATCH_SIZE": "1"},
            f"batch ≤{args.max_batch_size}": {**common, "VITBENCH_MAX_BATCH_SIZE": str(args.max_batch_size)},
        }
        points = run_configs(configs, model_dir, image, concurrencies, args.duration, args.score_threshold)
        raw_after = raw_model_latency_ms(model_dir, image, providers, args.threads, runs=30)
    raw = (raw_before, raw_after)
    table = markdown(points, raw)
    print(table)
    if args.json:
        payload = {
            "machine": {
                "cpus": os.cpu_count(),
                "cpu": cpu_description(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "args": {k: str(v) for k, v in vars(args).items()},
            "raw_model_p50_ms": raw,
            "points": [asdict(p) for p in points],
            "markdown": table,
        }
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
