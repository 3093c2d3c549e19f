"""A ViTDet model-zoo `.pkl` (numpy arrays under ``model``, detectron2 names) loads as a complete detector."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from vitbench.trainer.inits import load_initialization
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import get_recipe

K = 3  # classes (the zoo files have 80)


def _d2_model(
    net_shapes: dict[str, tuple[int, ...]], width: int, out: int, box: int, fc: int, mask: int, anchors: int
) -> dict[str, np.ndarray]:
    """detectron2 ``mask_rcnn_vitdet`` state names and shapes (LN in pyramid and heads)."""
    shapes: dict[str, tuple[int, ...]] = {f"backbone.net.{k}": s for k, s in net_shapes.items()}

    def conv_ln(name: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.norm.weight"] = shapes[f"{name}.norm.bias"] = (cout,)

    shapes |= {
        "backbone.simfp_2.0.weight": (width, width // 2, 2, 2),
        "backbone.simfp_2.0.bias": (width // 2,),
        "backbone.simfp_2.1.weight": (width // 2,),
        "backbone.simfp_2.1.bias": (width // 2,),
        "backbone.simfp_2.3.weight": (width // 2, width // 4, 2, 2),
        "backbone.simfp_2.3.bias": (width // 4,),
        "backbone.simfp_3.0.weight": (width, width // 2, 2, 2),
        "backbone.simfp_3.0.bias": (width // 2,),
    }
    for stage, first, cin in ((2, 4, width // 4), (3, 1, width // 2), (4, 0, width), (5, 1, width)):
        conv_ln(f"backbone.simfp_{stage}.{first}", cin, out, 1)
        conv_ln(f"backbone.simfp_{stage}.{first + 1}", out, out, 3)
    rpn = "proposal_generator.rpn_head"
    for i in range(2):
        shapes[f"{rpn}.conv.conv{i}.weight"], shapes[f"{rpn}.conv.conv{i}.bias"] = (out, out, 3, 3), (out,)
    shapes |= {
        f"{rpn}.objectness_logits.weight": (anchors, out, 1, 1),
        f"{rpn}.objectness_logits.bias": (anchors,),
        f"{rpn}.anchor_deltas.weight": (4 * anchors, out, 1, 1),
        f"{rpn}.anchor_deltas.bias": (4 * anchors,),
    }
    for i in range(1, 5):
        conv_ln(f"roi_heads.box_head.conv{i}", out if i == 1 else box, box, 3)
        conv_ln(f"roi_heads.mask_head.mask_fcn{i}", out if i == 1 else mask, mask, 3)
    shapes |= {
        "roi_heads.box_head.fc1.weight": (fc, box * 49),
        "roi_heads.box_head.fc1.bias": (fc,),
        "roi_heads.box_predictor.cls_score.weight": (K + 1, fc),
        "roi_heads.box_predictor.cls_score.bias": (K + 1,),
        "roi_heads.box_predictor.bbox_pred.weight": (4 * K, fc),
        "roi_heads.box_predictor.bbox_pred.bias": (4 * K,),
        "roi_heads.mask_head.deconv.weight": (mask, mask, 2, 2),
        "roi_heads.mask_head.deconv.bias": (mask,),
        "roi_heads.mask_head.predictor.weight": (K, mask, 1, 1),
        "roi_heads.mask_head.predictor.bias": (K,),
    }
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_vitdet_zoo_pickle_loads_complete_detector(tmp_path: Path) -> None:
    recipe = get_recipe("vitdet-tiny")
    model = build_detector(recipe, num_classes=K)
    net = {
        k.removeprefix("backbone.net."): tuple(v.shape)
        for k, v in model.state_dict().items()
        if k.startswith("backbone.net.")
    }
    h = recipe.heads
    d2 = _d2_model(
        net,
        recipe.backbone.embed_dim,
        recipe.neck.out_channels,
        h.box_conv_dim,
        h.box_fc,
        h.mask_conv_dim,
        len(h.aspect_ratios),
    )
    path = tmp_path / "model_final_61ccd1.pkl"
    path.write_bytes(pickle.dumps({"model": d2, "__author__": "Detectron2 Model Zoo"}, protocol=2))

    report = load_initialization(model, recipe, "detectron2", str(path))
    assert report.ok, report.failure_message()
    assert report.missing == () and report.unexpected == ()
    assert len(report.loaded) == len(model.state_dict())

    s = model.state_dict()
    t = {k: torch.from_numpy(v) for k, v in d2.items()}
    torch.testing.assert_close(
        s["backbone.net.blocks.1.attn.rel_pos_h"], t["backbone.net.blocks.1.attn.rel_pos_h"]
    )
    torch.testing.assert_close(s["backbone.neck.simfp_2.4.norm.weight"], t["backbone.simfp_2.4.norm.weight"])
    torch.testing.assert_close(
        s["rpn.head.conv.1.0.weight"], t["proposal_generator.rpn_head.conv.conv1.weight"]
    )
    torch.testing.assert_close(s["roi_heads.box_head.3.1.bias"], t["roi_heads.box_head.conv4.norm.bias"])
    torch.testing.assert_close(s["roi_heads.box_head.5.weight"], t["roi_heads.box_head.fc1.weight"])
    torch.testing.assert_close(s["roi_heads.mask_head.0.0.weight"], t["roi_heads.mask_head.mask_fcn1.weight"])
    # detectron2: background is the last logit; torchvision: index 0. Class k -> label k + 1.
    cls = t["roi_heads.box_predictor.cls_score.weight"]
    torch.testing.assert_close(s["roi_heads.box_predictor.cls_score.weight"], torch.cat([cls[K:], cls[:K]]))
    box = s["roi_heads.box_predictor.bbox_pred.weight"]
    assert box[:4].abs().sum() == 0
    torch.testing.assert_close(box[4:], t["roi_heads.box_predictor.bbox_pred.weight"])
    logits = s["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    torch.testing.assert_close(logits[1:], t["roi_heads.mask_head.predictor.weight"])

    # the imported detector runs end to end
    model.eval()
    with torch.no_grad():
        (pred,) = model([torch.rand(3, 96, 128)])
    assert set(pred) == {"boxes", "labels", "scores", "masks"}
