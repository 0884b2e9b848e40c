"""Decoding rules of fruits_spark.images (no Spark needed)."""

from __future__ import annotations

import io
import re
import subprocess
import sys

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


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file (0 bytes)"),
        (b"hello, not an image", "not a decodable image"),
    ],
)
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


# --------------------------------------------------------------------------- #
# Accepted formats: WebP (Pillow's own) and HEIC/HEIF (pillow-heif)
# --------------------------------------------------------------------------- #


def fruit_pixels() -> np.ndarray:
    from fruits_dev.samples import fruit_spec, render_fruit

    rgb, _ = render_fruit(fruit_spec("Banana"), np.random.default_rng(7), 64, 48)
    return rgb


@pytest.mark.parametrize("encoder", ["webp_bytes", "heic_bytes"])
def test_lossless_webp_and_heic_decode_to_the_pngs_pixels(encoder):
    from fruits_dev import samples

    rgb = fruit_pixels()
    expected, _, _ = decode_rgb(encode(Image.fromarray(rgb), "PNG"), 40)
    pixels, width, height = decode_rgb(getattr(samples, encoder)(rgb, lossless=True), 40)
    assert (width, height) == (64, 48)
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize("encoder", ["webp_bytes", "heic_bytes"])
def test_lossy_webp_and_heic_decode_close_to_the_pngs_pixels(encoder):
    from fruits_dev import samples

    rgb = fruit_pixels()
    expected, _, _ = decode_rgb(encode(Image.fromarray(rgb), "PNG"), 40)
    pixels, _, _ = decode_rgb(getattr(samples, encoder)(rgb), 40)
    difference = np.abs(pixels.astype(int) - expected.astype(int))
    assert difference.mean() < 3 and difference.max() < 80


def test_heic_pixel_limit_refuses_before_decoding():
    from fruits_dev.samples import heic_bytes

    data = heic_bytes(np.zeros((300, 400, 3), dtype=np.uint8))
    with pytest.raises(ImageRejected, match=r"too many pixels: 400x300"):
        decode_rgb(data, 32, max_pixels=100_000)


def test_a_missing_heif_plugin_rejects_the_heic_image_and_still_decodes_the_others(tmp_path):
    """A fresh interpreter where `import pillow_heif` fails: the HEIC file is one reject naming the
    package, the PNG beside it is decoded."""
    from fruits_dev.samples import heic_bytes

    rgb = fruit_pixels()
    script = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from fruits_spark.images import ImageRejected, decode_rgb\n"
        "heic, png = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read()\n"
        "try:\n"
        "    decode_rgb(heic, 32)\n"
        "except ImageRejected as exc:\n"
        "    print('rejected:', exc)\n"
        "print('png:', decode_rgb(png, 32)[0].shape)\n"
    )
    heic, png = tmp_path / "a.heic", tmp_path / "b.png"
    heic.write_bytes(heic_bytes(rgb))
    png.write_bytes(encode(Image.fromarray(rgb), "PNG"))
    out = subprocess.run(
        [sys.executable, "-c", script, str(heic), str(png)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert (
        "rejected: HEIC/HEIF image but its decoder is not installed (Python package pillow-heif on the executors)"
    ) in out.stdout
    assert "png: (32, 32, 3)" in out.stdout


def test_only_heif_brands_count_as_heif():
    from fruits_spark.images import looks_like_heif

    assert looks_like_heif(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00")
    assert looks_like_heif(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00")
    assert not looks_like_heif(b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00")  # an MP4 video
    assert not looks_like_heif(b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00")
    assert not looks_like_heif(b"\xff\xd8\xff\xe0")


# --------------------------------------------------------------------------- #
# The one list of accepted extensions
# --------------------------------------------------------------------------- #


def test_accepted_extensions_are_listed_once_and_the_regex_follows_them():
    from fruits_spark.interface import IMAGE_EXTENSIONS
    from fruits_spark.paths import IMAGE_PATH_REGEX, unsupported_type_reason

    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")
    java_regex = re.compile(IMAGE_PATH_REGEX.replace("(?i)", ""), re.IGNORECASE)  # same syntax here
    names = (
        [f"x{ext}" for ext in IMAGE_EXTENSIONS]
        + [f"X{ext.upper()}" for ext in IMAGE_EXTENSIONS]
        + ["x.gif", "x.tiff", "x.avif", "x.jpg.txt", "xjpg", "x.hei", "x.webpp", "x.", "README"]
    )
    for name in names:
        assert bool(java_regex.search(name)) == is_image_path(name), name
    assert unsupported_type_reason() == "unsupported file type (expected .jpg, .jpeg, .png, .webp, .heic or .heif)"


def test_names_spark_hides_are_recognised():
    from fruits_spark.paths import hidden_from_spark

    assert hidden_from_spark("s3://b/landing/Apple/_DSC0001.JPG")
    assert hidden_from_spark("file:/x/.hidden.jpg")
    assert not hidden_from_spark("s3://b/_landing/Apple/DSC0001.JPG")  # only the file name counts
    assert not hidden_from_spark("file:/x/a_b.jpg")


def test_the_pca_scatter_draws_unlabelled_images_beside_labelled_ones():
    """An image right under the landing prefix has no label (None): it must never break the plot
    (it once failed every PCA run of a batch holding one, for good)."""
    import numpy as np

    from fruits_spark import pca_report

    png = pca_report.scatter_png(np.arange(8.0).reshape(4, 2), ["Apple", None, "Kiwi", None], [0.6, 0.3])
    assert png.startswith(b"\x89PNG") and pca_report.UNLABELLED == "(no label)"
