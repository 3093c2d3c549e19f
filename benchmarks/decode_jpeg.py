"""Thread CPU of the service's image decode against Pillow alone, on the benchmark photographs.

For each image size (default 640×480 and 1920×1080: service_throughput.py's photograph, JPEG quality
90) the photograph is decoded the way ``POST /detect`` does (``service.decode.decode_image`` with the
service's default JPEG draft factor for a ``--canvas``-pixel model: libjpeg-turbo through simplejpeg
for YCbCr/grey JPEGs) and the way Pillow alone does it (``Image.open``, ``draft`` at the same DCT
scale, ``load``, ``np.asarray``), alternately in one process, ``--repeats`` times each after one
warm-up. Reported per
size: the DCT scale, the median thread-CPU milliseconds (``time.thread_time``) of each, their ratio,
and whether the two give the same pixels.

    .venv/bin/python benchmarks/decode_jpeg.py
"""

from __future__ import annotations

import argparse
import io
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


def pillow_decode(data: bytes, denom: int) -> np.ndarray:
    """RGB uint8 [ceil(h / d), ceil(w / d), 3] decoded by Pillow at DCT scale 1/``denom``."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if denom > 1:
        image.draft(image.mode, (image.width // denom, image.height // denom))
    image.load()
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)


def measure(width: int, height: int, canvas: int, draft_factor: float, repeats: int) -> dict[str, Any]:
    from vitbench.service.decode import decode_image, draft_target

    data = photograph(width, height)
    target = draft_target(draft_factor, canvas)
    service = decode_image(data, 10**9, target)
    pillow = pillow_decode(data, service.scale_denom)
    service_p50, pillow_p50 = median_ms(  # alternated, so both see the same machine
        [partial(decode_image, data, 10**9, target), partial(pillow_decode, data, service.scale_denom)],
        repeats,
    )
    return {
        "image": f"{width}x{height}",
        "jpeg_kib": round(len(data) / 1024, 1),
        "scale": f"1/{service.scale_denom}",
        "decoded": f"{service.width}x{service.height}",
        "service_ms": round(service_p50, 3),
        "pillow_ms": round(pillow_p50, 3),
        "ratio": round(service_p50 / pillow_p50, 3),
        "same_pixels": bool(np.array_equal(service.pixels, pillow)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="640x480,1920x1080", help="WxH of the photographs")
    parser.add_argument("--canvas", type=int, default=128, help="the model's input side S (tiny: 128)")
    parser.add_argument("--repeats", type=int, default=300, help="decodes of each kind per size")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    from vitbench.service.settings import ServiceSettings

    draft_factor = ServiceSettings().jpeg_draft_factor
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        rows.append(measure(width, height, args.canvas, draft_factor, args.repeats))
    print_table(
        [
            "image",
            "JPEG KiB",
            "scale",
            "decoded",
            "service ms",
            "Pillow ms",
            "service ÷ Pillow",
            "same pixels",
        ],
        [False, True, False, False, True, True, True, False],
        (
            [
                r["image"],
                str(r["jpeg_kib"]),
                r["scale"],
                r["decoded"],
                f"{r['service_ms']:.2f}",
                f"{r['pillow_ms']:.2f}",
                f"**{r['ratio']:.2f}**",
                "yes" if r["same_pixels"] else "NO",
            ]
            for r in rows
        ),
    )
    write_json(args.json, {"canvas": args.canvas, "rows": rows})


if __name__ == "__main__":
    main()
