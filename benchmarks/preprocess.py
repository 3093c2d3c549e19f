"""Thread CPU of the service's preprocessing against the plain resize-then-normalize it reproduces.

For each photograph size (default 640×480 and 1920×1080: service_throughput.py's photograph, decoded
the way ``POST /detect`` decodes it, DCT-scaled for the canvas) and each canvas side S, the decoded
pixels are turned into the [1, 3, S, S] graph input three ways: ``service.preprocess.preprocess`` with
its C extension (one pass into the canvas; skipped when it is not built), the same with numpy
(``native=False``: lane-wise, gathering before converting), and the straightforward composition:
``resize_bilinear`` on the whole [h, w, 3] image, ``(x - mean) / std`` over the channel axis, zero
padding. They alternate in one process, ``--repeats`` times each after one warm-up. Reported: the
median thread-CPU milliseconds (``time.thread_time``) of each, the service's ratios to the plain one,
and whether all inputs are the same bits.

    .venv/bin/python benchmarks/preprocess.py
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rle_masks import median_ms
from service_throughput import photograph
from tables import print_table, write_json

MEAN = (123.675, 116.28, 103.53)  # the study's ImageNet mean/std on the 0–255 scale
STD = (58.395, 57.12, 57.375)


def plain(pixels: np.ndarray, canvas: int) -> np.ndarray:
    """float32 [1, 3, S, S]: resize the whole image, normalize over the channel axis, pad."""
    from vitbench.service.preprocess import letterbox_for, resize_bilinear

    box = letterbox_for(pixels.shape[0], pixels.shape[1], canvas)
    resized = resize_bilinear(pixels, box.resized_height, box.resized_width)  # [h, w, 3]
    normalized = (resized - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    batch = np.zeros((1, 3, canvas, canvas), dtype=np.float32)
    batch[0, :, : box.resized_height, : box.resized_width] = normalized.transpose(2, 0, 1)
    return batch


def measure(width: int, height: int, canvas: int, draft_factor: float, repeats: int) -> dict[str, Any]:
    from vitbench.service.decode import decode_image, draft_target
    from vitbench.service.preprocess import NATIVE_PREPROCESS, preprocess

    pixels = decode_image(photograph(width, height), 10**9, draft_target(draft_factor, canvas)).pixels
    ways = {"numpy": partial(preprocess, pixels, canvas, MEAN, STD, native=False)}
    if NATIVE_PREPROCESS:
        ways["c"] = partial(preprocess, pixels, canvas, MEAN, STD, native=True)
    ways["plain"] = partial(plain, pixels, canvas)
    medians = dict(zip(ways, median_ms(list(ways.values()), repeats), strict=True))  # alternated
    reference = plain(pixels, canvas)
    paths = (False, True) if NATIVE_PREPROCESS else (False,)
    inputs = [preprocess(pixels, canvas, MEAN, STD, native=native)[0] for native in paths]
    return {
        "image": f"{width}x{height}",
        "decoded": f"{pixels.shape[1]}x{pixels.shape[0]}",
        "canvas": canvas,
        "c_ms": round(medians["c"], 3) if "c" in medians else None,
        "numpy_ms": round(medians["numpy"], 3),
        "plain_ms": round(medians["plain"], 3),
        "c_ratio": round(medians["c"] / medians["plain"], 3) if "c" in medians else None,
        "numpy_ratio": round(medians["numpy"] / medians["plain"], 3),
        "same_bits": all(np.array_equal(batch, reference) for batch in inputs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="640x480,1920x1080", help="WxH of the photographs")
    parser.add_argument("--canvas", default="128,1024", help="model input sides S (tiny: 128, ViT-B: 1024)")
    parser.add_argument("--repeats", type=int, default=300, help="preprocessings of each kind per case")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    from vitbench.service.settings import ServiceSettings

    draft_factor = ServiceSettings().jpeg_draft_factor
    rows = []
    for canvas in (int(c) for c in args.canvas.split(",")):
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            rows.append(measure(width, height, canvas, draft_factor, args.repeats))
    print_table(
        [
            "image",
            "decoded",
            "canvas",
            "C ms",
            "numpy ms",
            "plain ms",
            "C ÷ plain",
            "numpy ÷ plain",
            "same bits",
        ],
        [False, False, True, True, True, True, True, True, False],
        (
            [
                r["image"],
                r["decoded"],
                str(r["canvas"]),
                "—" if r["c_ms"] is None else f"{r['c_ms']:.2f}",
                f"{r['numpy_ms']:.2f}",
                f"{r['plain_ms']:.2f}",
                "—" if r["c_ratio"] is None else f"**{r['c_ratio']:.2f}**",
                f"{r['numpy_ratio']:.2f}",
                "yes" if r["same_bits"] else "NO",
            ]
            for r in rows
        ),
    )
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
