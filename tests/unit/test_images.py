"""Decoding rules of fruits_spark.images (no Spark needed)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from fruits_spark.images import ImageRejected, decode_rgb
from fruits_spark.paths import canonical_uri, escape_glob, is_image_path, label_of


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_transparent_pixels_become_white_background():
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    image.paste((200, 10, 10, 255), (10, 10, 30, 30))
    pixels, width, height = decode_rgb(encode(image, "PNG"), 40)
    assert (width, height) == (40, 40)
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[20, 20]) == (200, 10, 10)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.full((20, 20), 32768, dtype=np.uint16)
    pixels, _, _ = decode_rgb(encode(Image.fromarray(values), "PNG"), 20)
    assert 120 <= pixels[0, 0, 0] <= 135 and pixels[0, 0, 0] == pixels[0, 0, 2]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 30), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    pixels, width, height = decode_rgb(encode(image, "JPEG", exif=exif.tobytes()), 32)
    assert (width, height) == (60, 30) and pixels.shape == (32, 32, 3)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "1", "LA"])
def test_any_mode_becomes_rgb_of_the_requested_size(mode):
    image = Image.new("RGB", (123, 77), (30, 160, 60)).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    pixels, width, height = decode_rgb(encode(image, fmt), 48)
    assert pixels.shape == (48, 48, 3) and pixels.dtype == np.uint8
    assert (width, height) == (123, 77)


def test_pixel_limit_refuses_before_decoding():
    data = encode(Image.new("RGB", (400, 300), "red"), "PNG")
    with pytest.raises(ImageRejected, match=r"too many pixels: 400x300 = 120,000 is above the limit of 100,000"):
        decode_rgb(data, 32, max_pixels=100_000)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file (0 bytes)"),
    (b"hello, not an image", "not a decodable image"),
])
def test_undecodable_bytes_are_rejected(data, reason):
    with pytest.raises(ImageRejected, match=re.escape(reason)):
        decode_rgb(data, 32)


def test_truncated_jpeg_is_rejected():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=95)
    with pytest.raises(ImageRejected, match="cannot decode image"):
        decode_rgb(data[: len(data) // 2], 32)


def test_paths_helpers():
    assert is_image_path("a/B.JPG") and is_image_path("x.jpeg") and is_image_path("y.Png")
    assert not is_image_path("notes.txt") and not is_image_path("x.jpg.txt")
    assert canonical_uri("file:///tmp/Apple%20Red%201/r_1_100.jpg", encoded=True) == "file:/tmp/Apple Red 1/r_1_100.jpg"
    assert canonical_uri("file:///tmp/a b/x.jpg") == "file:/tmp/a b/x.jpg"
    assert canonical_uri("/tmp/./a/x.jpg") == "file:/tmp/a/x.jpg"
    assert canonical_uri("s3://bucket/Pêche de vigne/x.jpg") == "s3://bucket/Pêche de vigne/x.jpg"
    assert label_of("s3://bucket/landing/Apple Red 1/r_1_100.jpg") == "Apple Red 1"
    assert escape_glob("/a/r_[1]_{x}*.jpg") == r"/a/r_\[1\]_\{x\}\*.jpg"
