"""CPU and wall time of one ONNX Runtime run per intra-op thread count, on the service's input.

Why the service runs queued batches on a second session with fewer threads per run
(``VITBENCH_STREAM_INTRA_OP_THREADS``): handing a run's work to more threads makes it finish sooner
alone, but costs CPU, which several runs at once on a loaded machine cannot spare. For each thread
count (default 1 and the cores), one session on the same model file with the service's options
(``OnnxBackend``, CPU provider, no spinning) runs the service's graph input for a 1920×1080
photograph (decoded and preprocessed as ``POST /detect`` does); the sessions take turns in blocks of
``--block`` runs, ``--rounds`` times. Reported per thread count: the median over blocks of the
process CPU time (``time.process_time``: every thread, ORT's pool included) and of the wall time per run.

    .venv/bin/python benchmarks/intra_op_threads.py --export-tiny
    .venv/bin/python benchmarks/intra_op_threads.py --model-dir .vitbench/serving/vitbench-demo_champion
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load_test import add_model_source, export_tiny
from service_throughput import photograph
from tables import print_table, write_json


def measure(model_dir: Path, thread_counts: list[int], rounds: int, block: int) -> list[dict[str, Any]]:
    """One row per thread count: median CPU and wall milliseconds per run."""
    from vitbench.registry.manifest import ModelManifest
    from vitbench.service.backends import OnnxBackend
    from vitbench.service.decode import decode_image, draft_target
    from vitbench.service.preprocess import preprocess
    from vitbench.service.settings import ServiceSettings

    spec = ModelManifest.load(model_dir / "manifest.json").input
    target = draft_target(ServiceSettings().jpeg_draft_factor, spec.size)
    pixels = decode_image(photograph(1920, 1080), 10**9, target).pixels
    images, _ = preprocess(pixels, spec.size, spec.pixel_mean, spec.pixel_std)
    backends = {
        n: OnnxBackend(model_dir / "model.onnx", spec.size, ["CPUExecutionProvider"], intra_op_threads=n)
        for n in thread_counts
    }
    for backend in backends.values():  # warm-up
        for _ in range(3):
            backend.run(images)
    samples: dict[int, list[tuple[float, float]]] = {n: [] for n in thread_counts}
    for _ in range(rounds):
        for n, backend in backends.items():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(block):
                backend.run(images)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            samples[n].append((cpu * 1000 / block, wall * 1000 / block))
    rows = []
    for n, values in samples.items():
        rows.append(
            {
                "intra_op_threads": n,
                "cpu_ms_per_run": round(statistics.median(c for c, _ in values), 2),
                "wall_ms_per_run": round(statistics.median(w for _, w in values), 2),
            }
        )
    first = rows[0]["cpu_ms_per_run"]
    for row in rows:
        row["cpu_vs_first"] = round(row["cpu_ms_per_run"] / first, 3) if first > 0 else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_source(parser)
    parser.add_argument(
        "--threads",
        default=f"1,{os.cpu_count() or 1}",
        help="intra-op thread counts (default: 1 and the cores)",
    )
    parser.add_argument("--rounds", type=int, default=8, help="turns per session")
    parser.add_argument("--block", type=int, default=20, help="runs per turn")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or export_tiny(Path(tmp))
        rows = measure(model_dir, thread_counts, args.rounds, args.block)
    print_table(
        ["intra-op threads", "CPU ms per run", "wall ms per run", f"CPU ÷ {thread_counts[0]} thread(s)"],
        [True] * 4,
        (
            [
                str(r["intra_op_threads"]),
                f"{r['cpu_ms_per_run']:.1f}",
                f"{r['wall_ms_per_run']:.1f}",
                "—" if r["cpu_vs_first"] is None else f"**{r['cpu_vs_first']:.2f}**",
            ]
            for r in rows
        ),
    )
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
