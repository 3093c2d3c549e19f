"""Returned boxes always have an area: a detection that lies in the letterbox padding is dropped."""

from __future__ import annotations

import numpy as np

from vitbench.service.backends import RawDetections
from vitbench.service.postprocess import FilterOptions, postprocess
from vitbench.service.preprocess import letterbox_for
from vitbench.service.schemas import MaskFormat


def test_boxes_in_the_padding_are_dropped_before_the_top_k() -> None:
    box = letterbox_for(32, 64, 64)  # the 64x32 image fills rows 0..32 of the 64x64 canvas
    raw = RawDetections(
        boxes=np.array(
            [
                [10, 40, 20, 60],  # wholly in the bottom padding: clips to height 0
                [5, 31.999, 30, 50],  # 0.001 px inside the image: rounds to height 0 in the response
                [0, 0, 16, 16],  # a real detection, lower score
            ],
            np.float32,
        ),
        scores=np.array([0.99, 0.95, 0.6], np.float32),
        labels=np.array([1, 1, 1], np.int64),
        masks=np.full((3, 28, 28), 0.9, np.float32),
    )
    dets = postprocess(raw, box, ("a",), FilterOptions(0.5, 1, None, MaskFormat.rle))
    assert [d["box"] for d in dets] == [[0.0, 0.0, 16.0, 16.0]], "the top-1 is the one with an area"
    everything = postprocess(raw, box, ("a",), FilterOptions(0.0, 100, None, MaskFormat.none))
    for d in everything:
        x1, y1, x2, y2 = d["box"]
        assert x2 > x1 and y2 > y1
