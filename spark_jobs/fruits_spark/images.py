"""Turn the bytes of one image file into a fixed-size RGB array, or say why it cannot be.

Runs on the executors, once per image, just before the model batch that needs it. It must
never raise anything but `ImageRejected`: one bad file costs one reject record, not the job.
JPEG, PNG and WebP are Pillow's own; HEIC/HEIF go through the pillow-heif plugin, registered
the first time a worker meets such a file.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Above this many pixels a file is refused before it is decoded (decompression bomb guard).
# 50 MP covers today's phone cameras (up to ~48 MP) and is ~150 MB of RGB once decoded.
DEFAULT_MAX_PIXELS = 50_000_000

_WHITE = (255, 255, 255)
# ISO base media "ftyp" brands of HEIF still images (HEVC-coded or generic); not AVIF, not video.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"heif"}
HEIF_PLUGIN = "pillow-heif"


class ImageRejected(Exception):
    """A file that cannot be featurized; the message is the reject reason users read."""


def decode_rgb(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, int, int]:
    """Decode `data` and resize it to `size`×`size` RGB uint8.

    Returns (array, original width, original height). Grayscale, CMYK, palette, 16-bit and
    transparent images are converted (transparency is flattened onto white, the background
    of the Fruits-360 photos); EXIF orientation is applied, as a phone photo expects.
    """
    if data is None or len(data) == 0:
        raise ImageRejected("empty file (0 bytes)")
    if looks_like_heif(data):
        missing = register_heif_opener()
        if missing:
            raise ImageRejected(missing)
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(
                    f"too many pixels: {width}x{height} = {width * height:,} is above the limit "
                    f"of {max_pixels:,} (possible decompression bomb)"
                )
            if image.format == "JPEG":
                # Let libjpeg decode at a reduced scale (still >= size): big photos get cheap.
                image.draft("RGB", (size, size))
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(rgb, dtype=np.uint8), width, height
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"too many pixels (possible decompression bomb): {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected("not a decodable image (format not recognised)") from None
    except Exception as exc:  # truncated streams, corrupt chunks, unsupported modes ...
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageRejected(f"cannot decode image: {message}") from None


def looks_like_heif(data: bytes) -> bool:
    """An ISO base media file whose major brand is a HEIF image one (iPhone photos: `heic`)."""
    return len(data) >= 12 and data[4:8] == b"ftyp" and bytes(data[8:12]) in _HEIF_BRANDS


@functools.cache
def register_heif_opener() -> str | None:
    """Teach Pillow HEIC/HEIF once per Python worker, on the first HEIF file it meets.

    Returns None, or the reject reason when the plugin is not installed (a per-image reject,
    not a crash: JPEG and PNG files of the same batch are still featurized).
    """
    try:
        import pillow_heif
    except ImportError:
        return f"HEIC/HEIF image but its decoder is not installed (Python package {HEIF_PLUGIN} on the executors)"
    pillow_heif.register_heif_opener()
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        # 16/32-bit or float grayscale: scale into 8 bits instead of clipping to white.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image
