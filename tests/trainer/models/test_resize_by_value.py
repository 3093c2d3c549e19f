"""Every resize of a position parameter, checked by value against timm's own functions on random inputs.

References (timm 1.0): ``timm.layers.resample_abs_pos_embed`` (bicubic, here without antialias as in
detectron2's ``get_abs_pos``), ``timm.layers.resize_rel_pos_bias_table_simple`` (the bicubic table
resize that MIMDet's benchmarking re-implementation applies to BEiT's shared table),
``timm.layers.gen_relative_position_index`` (BEiT's index), and ``timm.models.vision_transformer_sam``'s
``get_rel_pos`` / ``get_decomposed_rel_pos_bias`` (copies of detectron2's ViTDet utilities).
Random (not constant) inputs: a constant survives any interpolation, so it proves nothing.
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import gen_relative_position_index, resample_abs_pos_embed, resize_rel_pos_bias_table_simple
from timm.models.vision_transformer_sam import get_decomposed_rel_pos_bias
from timm.models.vision_transformer_sam import get_rel_pos as sam_get_rel_pos

from vitbench.trainer.inits.converters import resize_bias_table, resize_pos_embed
from vitbench.trainer.models.attention import RelativePositionBias, decomposed_rel_pos_bias, get_rel_pos
from vitbench.trainer.models.vit import get_abs_pos


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("hw"), [(8, 8), (5, 9), (20, 13)])
def test_runtime_pos_embed_resize_equals_timm(hw: tuple[int, int]) -> None:
    pos = _rand(1, 1 + 14 * 14, 24)  # pre-training shape with the cls slot
    ours = get_abs_pos(pos, True, hw)  # (1, H, W, C)
    ref = resample_abs_pos_embed(pos, list(hw), num_prefix_tokens=1, antialias=False)[:, 1:]
    torch.testing.assert_close(ours.reshape(1, hw[0] * hw[1], 24), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("src", "dst"), [(14, 4), (14, 64), (7, 7)])
def test_load_time_pos_embed_resize_equals_timm(src: int, dst: int) -> None:
    pos = _rand(1, 1 + src * src, 16, seed=1)
    ours = resize_pos_embed(pos, 1 + dst * dst)
    ref = resample_abs_pos_embed(pos, [dst, dst], num_prefix_tokens=1, antialias=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[:, :1], pos[:, :1])  # the cls slot is carried over untouched


@pytest.mark.parametrize("dst_window", [4, 8, 64])
def test_beit_table_resize_equals_timm(dst_window: int) -> None:
    """BEiT's shared table ((2*14-1)^2 + 3 cls rows, nH) into a (2w-1)^2 table: the cls rows go."""
    table = _rand(27 * 27 + 3, 3, seed=2)
    rows = (2 * dst_window - 1) ** 2
    ours = resize_bias_table(table, rows, extra_rows=3)
    ref = resize_rel_pos_bias_table_simple(table, (dst_window, dst_window), (rows + 3, 3))[:rows]
    assert ours.shape == (rows, 3)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("size", "hw"), [(4, (4, 4)), (4, (6, 5)), (8, (3, 7))])
def test_shared_bias_for_any_grid_equals_timm_resize_and_beit_index(size: int, hw: tuple[int, int]) -> None:
    """The (1, nH, HW, HW) bias of a table stored for S x S, read for an H x W grid (runtime resize)."""
    nH = 3
    rpb = RelativePositionBias(size, nH)
    with torch.no_grad():
        rpb.relative_position_bias_table.copy_(_rand((2 * size - 1) ** 2, nH, seed=3))
    H, W = hw
    table = resize_rel_pos_bias_table_simple(
        rpb.relative_position_bias_table.detach(), (H, W), ((2 * H - 1) * (2 * W - 1), nH)
    )
    index = gen_relative_position_index((H, W))  # (HW, HW) into the (2H-1)(2W-1) table
    ref = table[index.reshape(-1)].reshape(H * W, H * W, nH).permute(2, 0, 1)[None]
    with torch.no_grad():
        torch.testing.assert_close(rpb((H, W)), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("q", "k", "rows"), [(5, 5, 9), (5, 5, 27), (4, 8, 15), (8, 4, 7), (6, 6, 11)])
def test_decomposed_rel_pos_lookup_equals_detectron2(q: int, k: int, rows: int) -> None:
    """``get_rel_pos`` resizes (linear) a table of any length and reads it for q/k sizes that may differ."""
    rel = _rand(rows, 8, seed=4)
    torch.testing.assert_close(get_rel_pos(q, k, rel), sam_get_rel_pos(q, k, rel), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("hw", "rows"), [((4, 6), (7, 11)), ((5, 5), (27, 27)), ((3, 7), (9, 9))])
def test_decomposed_rel_pos_bias_equals_detectron2(hw: tuple[int, int], rows: tuple[int, int]) -> None:
    B, nH, hd = 2, 3, 8
    q = _rand(B, nH, hw[0] * hw[1], hd, seed=5)
    rel_h, rel_w = _rand(rows[0], hd, seed=6), _rand(rows[1], hd, seed=7)
    ours = decomposed_rel_pos_bias(q, rel_h, rel_w, hw, hw)
    ref = get_decomposed_rel_pos_bias(q.reshape(B * nH, hw[0] * hw[1], hd), rel_h, rel_w, hw, hw)
    torch.testing.assert_close(ours, ref.reshape(B, nH, hw[0] * hw[1], hw[0] * hw[1]), atol=1e-5, rtol=1e-5)
