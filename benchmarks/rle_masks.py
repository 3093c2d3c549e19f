"""Thread CPU of the service's COCO RLE step on a served model's own masks: numpy and the C encoder.

For each image size (default 640×480 and 1920×1080: service_throughput.py's photograph), the photograph
goes through the service's decode (its default JPEG draft factor), preprocess and ONNX session, and
the first ``--masks`` masks with their boxes in original-image pixels are what ``POST /detect`` encodes
with ``mask_format=rle`` and ``score_threshold=0``. Reported per size: the median thread-CPU
milliseconds (``time.thread_time``) of one ``rle_counts_many`` call over all masks (numpy's counts), in
this checkout and — with ``--compare-with ROOT`` — in ``ROOT/service/masks.py`` (e.g. main's), loaded
into the same process and timed alternately on the same masks; then of the whole encoding to strings
(``encode_rle_many``) with numpy and with the C encoder (``vitbench.service._rle``, when built), timed
alternately; the runs per mask; whether the counts equal the per-pixel reference
``rle_counts(paste_mask(...))``, mask by mask, and whether both encoders give the same strings.

    .venv/bin/python benchmarks/rle_masks.py --export-tiny --compare-with ../vitbench-23287a5
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load_test import add_model_source, export_tiny
from service_throughput import photograph


def load_masks_module(root: Path) -> ModuleType:
    """``ROOT/service/masks.py`` as a module of its own (it imports the rest from this checkout)."""
    path = root / "service" / "masks.py"
    spec = importlib.util.spec_from_file_location("compared_masks", path)
    if not path.is_file() or spec is None or spec.loader is None:
        raise SystemExit(f"--compare-with: no service/masks.py under {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compared_masks"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def served_masks(model_dir: Path, width: int, height: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` mask probabilities [K, M, M] and original-pixel boxes [K, 4] the service
    would encode for the photograph at ``width``×``height``."""
    from vitbench.registry.manifest import ModelManifest
    from vitbench.service.backends import OnnxBackend
    from vitbench.service.decode import decode_image, draft_target
    from vitbench.service.postprocess import scale_boxes
    from vitbench.service.preprocess import preprocess
    from vitbench.service.settings import ServiceSettings

    manifest = ModelManifest.load(model_dir / "manifest.json")
    size = manifest.input.size
    backend = OnnxBackend(model_dir / "model.onnx", size, ["CPUExecutionProvider"])
    image = decode_image(
        photograph(width, height), 10**9, draft_target(ServiceSettings().jpeg_draft_factor, size)
    )
    batch, letterbox = preprocess(
        image.pixels, size, manifest.input.pixel_mean, manifest.input.pixel_std, (height, width)
    )
    raw = backend.run(batch)
    return raw.masks[:count], scale_boxes(raw.boxes, letterbox)[:count]


def median_ms(calls: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median thread-CPU ms of each call, timed alternately ``repeats`` times after one warm-up each."""
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, out in zip(calls, times, strict=True):
            start = time.thread_time()
            call()
            out.append((time.thread_time() - start) * 1000)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_source(parser)
    parser.add_argument("--sizes", default="640x480,1920x1080", help="WxH,... (default: %(default)s)")
    parser.add_argument("--masks", type=int, default=20, help="masks per image (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per side (default: %(default)s)")
    parser.add_argument("--compare-with", type=Path, help="another checkout's root, timed alongside")
    args = parser.parse_args(argv)

    from vitbench.service import masks

    compared = load_masks_module(args.compare_with) if args.compare_with else None
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or export_tiny(Path(scratch))
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            probs, boxes = served_masks(model_dir, width, height, args.masks)
            ours = masks.rle_counts_many(probs, boxes, height, width)
            exact = all(
                np.array_equal(counts, masks.rle_counts(masks.paste_mask(p, b, height, width)))
                for counts, p, b in zip(ours, probs, boxes, strict=True)
            )
            calls: list[Callable[[], Any]] = [partial(masks.rle_counts_many, probs, boxes, height, width)]
            if compared is not None:
                calls.append(partial(compared.rle_counts_many, probs, boxes, height, width))
                theirs = compared.rle_counts_many(probs, boxes, height, width)
                exact = exact and all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
            encoders = [partial(masks.encode_rle_many, probs, boxes, height, width, native=False)]
            if masks.NATIVE_RLE:
                encoders.append(partial(masks.encode_rle_many, probs, boxes, height, width, native=True))
            timed = median_ms(calls + encoders, args.repeats)
            runs = [len(c) // 2 for c in ours]
            line = f"{width}x{height}: {len(ours)} masks, runs per mask {min(runs)}-{max(runs)}, "
            line += f"identical counts: {exact}; rle_counts_many {timed[0]:.2f} ms"
            if compared is not None:
                line += f", compared {timed[1]:.2f} ms ({timed[1] / timed[0]:.1f}x)"
            line += f"; encode_rle_many numpy {timed[len(calls)]:.2f} ms"
            if masks.NATIVE_RLE:
                same = encoders[0]() == encoders[1]()
                native_ms = timed[len(calls) + 1]
                line += f", native {native_ms:.2f} ms ({native_ms / timed[len(calls)]:.2f} of numpy), "
                line += f"identical strings: {same}"
            else:
                line += " (the C encoder is not built)"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
