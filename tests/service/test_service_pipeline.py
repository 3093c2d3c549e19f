"""Preprocess, mask pasting and decoding checked against torchvision / pycocotools / Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from vitbench.service.backends import RawDetections
from vitbench.service.decode import DecodeError, decode_image, sniff_format
from vitbench.service.masks import PastedMask, encode_png, encode_polygon, encode_rle, paste_mask
from vitbench.service.postprocess import FilterOptions, postprocess, resolve_classes
from vitbench.service.preprocess import letterbox_for, preprocess, resize_bilinear
from vitbench.service.schemas import MaskFormat

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


@pytest.mark.parametrize(("height", "width"), [(100, 200), (37, 53), (333, 517), (64, 64), (90, 17), (1, 1)])
def test_preprocess_matches_torchvision_transform(height: int, width: int) -> None:
    """Same resize (sizes and values) and normalization as GeneralizedRCNNTransform(min=max=S)."""
    size = 64
    rng = np.random.default_rng(height * 1000 + width)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    transform = GeneralizedRCNNTransform(
        size, size, [m / 255 for m in MEAN], [s / 255 for s in STD], size_divisible=1
    ).eval()
    with torch.no_grad():
        images, _ = transform([torch.from_numpy(pixels).permute(2, 0, 1).float() / 255])
    h, w = images.image_sizes[0]
    batch, box = preprocess(pixels, size, MEAN, STD)
    assert batch.shape == (1, 3, size, size) and batch.dtype == np.float32
    assert (box.resized_height, box.resized_width) == (h, w)
    np.testing.assert_allclose(batch[0, :, :h, :w], images.tensors[0, :, :h, :w].numpy(), atol=2e-4)
    assert not batch[0, :, h:, :].any() and not batch[0, :, :, w:].any()  # zero pad = mean colour


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [
        (480, 640, 128),
        (1080, 1920, 1024),
        (540, 960, 128),
        (37, 53, 64),
        (90, 17, 64),
        (1, 1, 64),
        (300, 200, 1024),
    ],
)
@pytest.mark.parametrize("native", [True, False], ids=["c", "numpy"])
def test_preprocess_gives_the_bits_of_resize_then_normalize(
    height: int, width: int, size: int, native: bool
) -> None:
    """Neither fast path (the C extension, numpy's lane-wise one) changes a bit of the graph input
    (shrinking and enlarging, odd sizes, a non-contiguous EXIF-rotated view), so responses stay what
    they were for the same image."""
    rng = np.random.default_rng(height * 7 + width)
    stored = rng.integers(0, 256, (width, height, 3), dtype=np.uint8)
    for pixels in (np.ascontiguousarray(np.rot90(stored, -1)), np.rot90(stored, -1)):
        batch, box = preprocess(pixels, size, MEAN, STD, native=native)
        h, w = box.resized_height, box.resized_width
        resized = resize_bilinear(pixels.astype(np.float32), h, w)
        reference = (resized - np.float32(MEAN)) / np.float32(STD)  # [h, w, 3]
        np.testing.assert_array_equal(batch[0, :, :h, :w], reference.transpose(2, 0, 1))
        assert not batch[0, :, h:, :].any() and not batch[0, :, :, w:].any()


def test_preprocess_refuses_anything_but_uint8_rgb() -> None:
    with pytest.raises(ValueError, match="uint8 RGB image"):
        preprocess(np.zeros((8, 8, 3), np.float32), 64, MEAN, STD)
    with pytest.raises(ValueError, match=r"shape \(8, 8\)"):
        preprocess(np.zeros((8, 8), np.uint8), 64, MEAN, STD)


def test_letterbox_longest_side_and_ratios() -> None:
    box = letterbox_for(480, 640, 1024)
    assert (box.resized_height, box.resized_width) == (768, 1024)
    assert box.ratio_x == box.ratio_y == 640 / 1024
    assert letterbox_for(5, 3000, 64).resized_height == 1  # never zero-sized


@pytest.mark.parametrize(("out_h", "out_w"), [(64, 91), (20, 30), (5, 100), (1, 1)])
def test_resize_matches_f_interpolate(out_h: int, out_w: int) -> None:
    image = np.random.default_rng(0).uniform(0, 255, (37, 53, 3)).astype(np.float32)
    ref = F.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None],
        size=(out_h, out_w),
        mode="bilinear",
        align_corners=False,
    )[0].permute(1, 2, 0)
    np.testing.assert_allclose(resize_bilinear(image, out_h, out_w), ref.numpy(), atol=1e-3)


def test_paste_matches_torchvision() -> None:
    rng = np.random.default_rng(1)
    probs = rng.uniform(0, 1, (6, 28, 28)).astype(np.float32)
    boxes = np.array(
        [
            [10.3, 5.2, 60.7, 40.1],
            [-5, -3, 20, 30],
            [90, 70, 130, 120],
            [0, 0, 99.9, 79.9],
            [50, 40, 50.5, 40.2],
            [150, 150, 160, 170],
        ],
        dtype=np.float32,
    )
    ref = (
        paste_masks_in_image(torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), (80, 100))[:, 0] > 0.5
    )
    for i in range(len(boxes)):
        pasted = paste_mask(probs[i], boxes[i], 80, 100)
        assert np.array_equal(pasted.full(), ref[i].numpy()), f"box {i}"


def _disk_mask() -> PastedMask:
    yy, xx = np.mgrid[0:120, 0:150]
    disk = ((yy - 60) ** 2 + (xx - 70) ** 2) < 40**2
    return PastedMask(disk[10:110, 20:130].copy(), 20, 10, 120, 150)


def test_rle_png_polygon_encoders() -> None:
    mask = _disk_mask()
    full = mask.full()
    rle = encode_rle(mask)
    assert rle["size"] == [120, 150]
    assert np.array_equal(mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}), full)
    reference = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
    assert rle["counts"] == reference["counts"].decode()
    png = Image.open(io.BytesIO(__import__("base64").b64decode(encode_png(mask)["data"])))
    assert png.mode == "1" and np.array_equal(np.asarray(png), full)
    polygons = encode_polygon(mask)["polygons"]
    assert len(polygons) == 1 and 8 <= len(polygons[0]) // 2 <= 64  # simplified outline
    drawn = mask_utils.decode(mask_utils.frPyObjects(polygons, 120, 150)[0]).astype(bool)
    assert (drawn & full).sum() / (drawn | full).sum() > 0.97


def test_empty_mask_encodes() -> None:
    empty = PastedMask(np.zeros((0, 0), bool), 0, 0, 10, 20)
    assert encode_polygon(empty)["polygons"] == []
    assert mask_utils.area({"size": [10, 20], "counts": encode_rle(empty)["counts"].encode()}) == 0


def test_postprocess_filters_before_pasting() -> None:
    raw = RawDetections(
        boxes=np.array([[0, 0, 32, 32], [10, 10, 20, 20], [0, 0, 64, 64], [1, 1, 2, 2]], np.float32),
        scores=np.array([0.3, 0.9, 0.8, 0.99], np.float32),
        labels=np.array([1, 2, 1, 7], np.int64),  # label 7 is out of range: dropped
        masks=np.full((4, 28, 28), 0.9, np.float32),
    )
    box = letterbox_for(32, 64, 64)  # resized 32x64, ratio 1
    opts = FilterOptions(0.5, 10, None, MaskFormat.none)
    dets = postprocess(raw, box, ("a", "b"), opts)
    assert [d["score"] for d in dets] == [0.9, 0.8]
    assert dets[1]["box"] == [0.0, 0.0, 64.0, 32.0]  # clipped to the 64x32 image
    opts = FilterOptions(0.0, 1, frozenset({1}), MaskFormat.rle)
    (only,) = postprocess(raw, box, ("a", "b"), opts)
    assert only["label"] == 1 and only["mask"]["size"] == [32, 64]


def test_resolve_classes() -> None:
    names = ("person", "car", "dog")
    assert resolve_classes(["person,3"], names) == frozenset({1, 3})
    assert resolve_classes(None, names) is None
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['cat', '4'\]"):
        resolve_classes(["cat", "4"], names)


def _encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def test_decode_converts_modes() -> None:
    gray16 = Image.fromarray(np.full((10, 12), 65535, np.uint16))
    decoded = decode_image(_encode(gray16, "PNG"), 10_000)
    assert decoded.pixels.shape == (10, 12, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.pixels == 255).all() and decoded.source_mode.startswith("I")
    half = decode_image(_encode(Image.fromarray(np.full((4, 4), 32896, np.uint16)), "PNG"), 100)
    assert (half.pixels == 128).all()
    cmyk = decode_image(_encode(Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "TIFF"), 100)
    assert tuple(cmyk.pixels[0, 0]) == (255, 0, 0) and cmyk.source_mode == "CMYK"
    pal = Image.new("P", (5, 5))
    pal.putpalette([0, 0, 0, 10, 200, 30])
    pal.putpixel((0, 0), 1)
    assert tuple(decode_image(_encode(pal, "PNG"), 100).pixels[0, 0]) == (10, 200, 30)
    rgba = decode_image(_encode(Image.new("RGBA", (3, 3), (1, 2, 3, 0)), "PNG"), 100)
    assert tuple(rgba.pixels[1, 1]) == (1, 2, 3)
    one_bit = decode_image(_encode(Image.new("1", (3, 3), 1), "BMP"), 100)
    assert (one_bit.pixels == 255).all()


def test_decode_errors_carry_status() -> None:
    with pytest.raises(DecodeError) as not_image:
        decode_image(b"%PDF-1.7 ...", 100)
    assert not_image.value.status == 415
    jpeg = _encode(Image.new("RGB", (64, 64), (10, 20, 30)), "JPEG")
    with pytest.raises(DecodeError) as truncated:
        decode_image(jpeg[: len(jpeg) // 2], 10_000)
    assert truncated.value.status == 422
    with pytest.raises(DecodeError) as too_big:
        decode_image(jpeg, 64 * 64 - 1)
    assert too_big.value.status == 413


def test_bomb_header_is_refused_before_decoding() -> None:
    """A PNG claiming 200000x200000 pixels (40 G) is refused from its header; nothing is allocated."""
    data = bytearray(_encode(Image.new("L", (4, 4)), "PNG"))
    data[16:24] = struct.pack(">II", 200_000, 200_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    for limit in (40_000_000, 10**12):  # our limit, then Pillow's own bomb guard
        with pytest.raises(DecodeError) as bomb:
            decode_image(bytes(data), limit)
        assert bomb.value.status == 413


def test_sniff_format() -> None:
    assert sniff_format(b"RIFF\0\0\0\0WEBPVP8 ") == "WEBP"
    assert sniff_format(b"II*\0rest") == "TIFF" and sniff_format(b"MM\0*rest") == "TIFF"
    assert sniff_format(b"GIF89a") is None and sniff_format(b"") is None


def test_large_jpeg_is_decoded_at_reduced_scale_with_original_size() -> None:
    from vitbench.service.decode import draft_denominator

    data = _encode(Image.new("RGB", (1920, 1080), (200, 30, 40)), "JPEG")
    full = decode_image(data, 10**8)
    assert full.pixels.shape == (1080, 1920, 3) and full.scale_denom == 1
    for target, denom in ((128, 8), (240, 8), (241, 4), (481, 2), (961, 1)):
        assert draft_denominator(1920, 1080, target) == denom
        image = decode_image(data, 10**8, target)
        assert image.scale_denom == denom
        assert image.pixels.shape[:2] == (-(-1080 // denom), -(-1920 // denom))
        assert (image.original_height, image.original_width) == (1080, 1920)
        assert max(image.pixels.shape[:2]) >= target
        assert np.abs(image.pixels.astype(int) - (200, 30, 40)).max() <= 6  # the same colour
    png = decode_image(_encode(Image.new("RGB", (1920, 1080)), "PNG"), 10**8, 128)
    assert png.pixels.shape == (1080, 1920, 3)  # other formats: full size, resized once later


def test_reduced_jpeg_with_exif_rotation_reports_rotated_original_size() -> None:
    image = Image.new("RGB", (1600, 800), (10, 120, 200))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° when displayed
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue(), 10**8, 300)
    assert decoded.scale_denom == 4
    assert decoded.pixels.shape[:2] == (400, 200)  # rotated
    assert (decoded.original_height, decoded.original_width) == (1600, 800)


def test_letterbox_maps_reduced_decode_back_to_original_pixels() -> None:
    pixels = np.zeros((135, 240, 3), np.uint8)  # 1920x1080 decoded at 1/8
    _, box = preprocess(pixels, 128, MEAN, STD, (1080, 1920))
    assert (box.resized_height, box.resized_width) == (72, 128)
    assert (box.original_height, box.original_width) == (1080, 1920)
    assert box.ratio_x == 1920 / 128 and box.ratio_y == 1080 / 72


def _pillow_reference(data: bytes, denom: int) -> np.ndarray:
    """What Pillow alone decodes: DCT scale 1/``denom``, EXIF orientation applied, RGB."""
    from PIL import ImageOps

    image = Image.open(io.BytesIO(data))
    if denom > 1:
        image.draft(image.mode, (image.width // denom, image.height // denom))
    image.load()
    return np.asarray((ImageOps.exif_transpose(image) or image).convert("RGB"))


def _photograph(size: tuple[int, int]) -> Image.Image:
    import matplotlib

    path = f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg"
    return Image.open(path).convert("RGB").resize(size, Image.Resampling.BILINEAR)


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("RGB", {"subsampling": 2, "quality": 90}),  # 4:2:0, what cameras write
        ("RGB", {"subsampling": 1, "quality": 75}),  # 4:2:2
        ("RGB", {"subsampling": 0, "quality": 95}),  # 4:4:4
        ("RGB", {"progressive": True, "quality": 85}),
        ("L", {"quality": 90}),
    ],
)
def test_libjpeg_turbo_decode_gives_pillows_pixels(mode: str, options: dict[str, object]) -> None:
    """YCbCr and grey JPEGs decoded by libjpeg-turbo are Pillow's pixels, at every DCT scale and at
    odd sizes (sides that the scaling rounds up)."""
    for size in ((1021, 677), (1920, 1080), (333, 517)):
        data = _encode(_photograph(size).convert(mode), "JPEG", **options)
        for target, denom in ((None, 1), (max(size) // 2, 2), (max(size) // 4, 4), (max(size) // 8, 8)):
            decoded = decode_image(data, 10**8, target)
            assert decoded.scale_denom == denom
            assert decoded.source_mode == mode
            expected = _pillow_reference(data, denom)
            assert decoded.pixels.shape == expected.shape == (-(-size[1] // denom), -(-size[0] // denom), 3)
            np.testing.assert_array_equal(decoded.pixels, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientations_match_pillows_transpose(orientation: int) -> None:
    """Each EXIF orientation turns the pixels as Pillow's ``exif_transpose`` does, full and reduced."""
    image = _photograph((320, 200))
    exif = image.getexif()
    exif[0x0112] = orientation
    data = _encode(image, "JPEG", exif=exif.tobytes(), quality=90)
    swapped = orientation in (5, 6, 7, 8)
    for target, denom in ((None, 1), (160, 2)):
        decoded = decode_image(data, 10**6, target)
        np.testing.assert_array_equal(decoded.pixels, _pillow_reference(data, denom))
        assert decoded.pixels.flags.c_contiguous
        assert (decoded.original_width, decoded.original_height) == ((200, 320) if swapped else (320, 200))


def test_cmyk_jpeg_is_decoded_by_pillow() -> None:
    data = _encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95)
    decoded = decode_image(data, 10_000, 20)
    assert decoded.source_mode == "CMYK" and decoded.scale_denom == 2
    np.testing.assert_array_equal(decoded.pixels, _pillow_reference(data, 2))
    assert np.abs(decoded.pixels.astype(int) - (255, 0, 0)).max() <= 3


def test_corrupt_jpeg_scan_is_refused_with_422() -> None:
    data = bytearray(_encode(_photograph((64, 48)), "JPEG"))
    sos = data.index(b"\xff\xda")
    data[sos + 20 : sos + 60] = b"\xff" * 40  # marker bytes in the middle of the entropy-coded data
    with pytest.raises(DecodeError) as corrupt:
        decode_image(bytes(data), 10_000)
    assert corrupt.value.status == 422


def test_jpeg_the_turbojpeg_api_refuses_is_decoded_by_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """TurboJPEG refuses some files libjpeg decodes (unusual sampling factors); Pillow decides then."""
    import simplejpeg

    def refuse(*args: object, **kwargs: object) -> object:
        raise ValueError("tjDecompressHeader3(): Could not determine subsampling level of JPEG image")

    data = _encode(_photograph((320, 200)), "JPEG", quality=90)
    monkeypatch.setattr(simplejpeg, "decode_jpeg_header", refuse)
    decoded = decode_image(data, 10**6, 160)
    assert decoded.scale_denom == 2
    np.testing.assert_array_equal(decoded.pixels, _pillow_reference(data, 2))
    with pytest.raises(DecodeError) as truncated:  # and Pillow still refuses what is broken
        decode_image(data[: len(data) // 2], 10**6, 160)
    assert truncated.value.status == 422
