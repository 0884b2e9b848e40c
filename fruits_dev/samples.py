"""Generate a small Fruits-360-like image tree for tests, ``make demo`` and benchmarks.

The real dataset is large and cannot be downloaded in CI, so this module draws
synthetic look-alikes with the same layout::

    <root>/<Label>/r_<n>_100.jpg      100x100 RGB JPEG, one fruit on white

Each class has its own colour and shape (round, oval, pear, banana, grape
cluster) so that MobileNetV2 features -- and even plain mean colours -- form
visible clusters in the PCA scatter. Every file is derived from a per-file RNG
seeded with ``(seed, label, n, kind)``, so output is byte-for-byte reproducible
and a later call with a larger ``start_index`` adds new files without touching
existing ones (the demo's "add more images" step relies on this).

Optional extras exercise the jobs' input handling:

* ``awkward=True``: decodable but unusual images (grayscale, CMYK, RGBA, palette
  with transparency, 16-bit, upper-case ``.JPG``, ``.jpeg``, EXIF orientation 6,
  non-square) plus non-image files that must be ignored (``README.txt``,
  ``labels.csv``, ``.DS_Store``).
* ``modern_formats=True``: one WebP (``r_<n>_<size>.webp``) and one HEIC
  (``r_<n>_<size>.heic``, needs the pillow-heif package) per class, lossy as
  phones and web exports write them; :func:`webp_bytes` and :func:`heic_bytes`
  encode any pixels (lossless too, for exact comparisons).
* ``broken=True``: files with an image extension that must be rejected: an
  empty file, a truncated JPEG, a text file named ``.png`` and a
  decompression-bomb PNG whose header claims 30000x30000 pixels. With Pillow's
  default ``Image.MAX_IMAGE_PIXELS`` (~89.5 Mpx), ``Image.open`` on the bomb
  raises ``Image.DecompressionBombError`` straight from the header (9e8 px is
  more than twice the limit); with the limit disabled it opens lazily and
  reports ``size == (30000, 30000)``. Never call ``.load()`` on it.

Only numpy, Pillow and the standard library are used, so this runs anywhere
(no TensorFlow, Spark or Airflow needed). Run it as a script for a one-off
tree::

    python -m fruits_dev.samples --out /tmp/fruits --classes 4 --per-class 10
"""

from __future__ import annotations

import argparse
import colorsys
import io
import math
import os
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from fruits import contract

__all__ = [
    "AWKWARD_INDEX_BASE",
    "BROKEN_KINDS",
    "DEFAULT_LABELS",
    "IMAGE_EXTENSIONS",
    "FruitSpec",
    "SampleSet",
    "fruit_spec",
    "generate_samples",
    "iter_label_counts",
    "heic_bytes",
    "make_decompression_bomb_png",
    "webp_bytes",
    "render_fruit",
    "main",
]

#: Extensions (lower-cased) that the pipeline treats as images: the jobs' own list.
IMAGE_EXTENSIONS = frozenset(contract.IMAGE_EXTENSIONS)

#: Reason kinds used as values of :attr:`SampleSet.broken`.
BROKEN_KINDS = ("empty", "truncated", "not_an_image", "too_many_pixels")

#: Awkward files use ``n = AWKWARD_INDEX_BASE + start_index`` so their names can
#: never clash with normal ``r_<n>_100.jpg`` files, not even on case-insensitive
#: file systems (``R_<n>_100.JPG`` vs ``r_<n>_100.jpg``, e.g. macOS bind mounts).
AWKWARD_INDEX_BASE = 900_000
#: WebP and HEIC samples use ``n = FORMATS_INDEX_BASE + start_index`` (same reason).
FORMATS_INDEX_BASE = 800_000

BOMB_SIZE = (30_000, 30_000)
JPEG_QUALITY = 90
WHITE = 255.0


@dataclass(frozen=True)
class FruitSpec:
    """How one class is drawn: base colour, silhouette and decorations."""

    color: tuple[int, int, int]
    shape: str = "round"  # round | oval | pear | banana | cluster
    size: float = 0.78  # fruit radius as a fraction of half the image side
    aspect: float = 0.95  # minor/major axis ratio (round, oval)
    stem: bool = False
    texture: float = 4.0  # std-dev of per-pixel noise on the fruit, 0..255 scale


SHAPES = ("round", "oval", "pear", "banana", "cluster")

# Ordered so that the first few classes are well separated in colour and shape
# (the default n_classes=4 gives red / yellow / brown / green) and the only
# non-ASCII name comes late: small runs stay ASCII, n_classes >= 15 exercises
# non-ASCII folder names.
_SPECS: dict[str, FruitSpec] = {
    "Apple Red 1": FruitSpec((178, 24, 36), "round", 0.80, 0.93, stem=True),
    "Banana": FruitSpec((236, 206, 62), "banana", 0.92, texture=3.0),
    "Kiwi": FruitSpec((128, 96, 56), "oval", 0.78, 0.78, texture=11.0),
    "Pear Monster": FruitSpec((150, 192, 62), "pear", 0.86, stem=True),
    "Cherry Wax Red": FruitSpec((140, 8, 28), "round", 0.55, 0.97, stem=True, texture=2.0),
    "Lemon Meyer": FruitSpec((250, 190, 40), "oval", 0.78, 0.74),
    "Tomato Cherry Red": FruitSpec((226, 52, 30), "round", 0.62, 0.9, stem=True),
    "Grape White 2": FruitSpec((198, 206, 120), "cluster", 0.88, texture=3.0),
    "Blueberry": FruitSpec((48, 58, 110), "round", 0.5, 0.95, texture=3.0),
    "Orange": FruitSpec((246, 140, 22), "round", 0.84, 0.97, texture=6.0),
    "Plum": FruitSpec((92, 30, 72), "oval", 0.7, 0.85),
    "Avocado": FruitSpec((58, 80, 30), "pear", 0.86, texture=8.0),
    "Limes": FruitSpec((104, 166, 42), "oval", 0.7, 0.82),
    "Blackberry": FruitSpec((40, 28, 46), "cluster", 0.7, texture=6.0),
    "Pêche de vigne": FruitSpec((172, 70, 92), "round", 0.8, 0.95, texture=5.0),
    "Watermelon": FruitSpec((58, 118, 48), "oval", 0.84, 0.85, texture=9.0),
}

#: Default class names, in the order ``generate_samples`` uses them.
DEFAULT_LABELS: tuple[str, ...] = tuple(_SPECS)


def _crc(text: str) -> int:
    """Stable 32-bit hash of a string (``hash()`` is salted per process)."""
    return zlib.crc32(text.encode("utf-8")) & 0xFFFFFFFF


def fruit_spec(label: str) -> FruitSpec:
    """Return the drawing spec of a label; unknown labels get a stable hashed one.

    Explicit ``labels=`` and ``n_classes`` beyond the defaults must still give
    distinct-looking, reproducible classes.
    """
    if label in _SPECS:
        return _SPECS[label]
    h = _crc(label)
    hue = (h % 360) / 360.0
    sat = 0.45 + ((h >> 9) % 50) / 100.0
    val = 0.45 + ((h >> 15) % 50) / 100.0
    rgb = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))
    shape = SHAPES[(h >> 21) % len(SHAPES)]
    size = 0.6 + ((h >> 24) % 30) / 100.0
    aspect = 0.72 + ((h >> 27) % 25) / 100.0
    return FruitSpec(rgb, shape, size, aspect, stem=bool(h & 1))  # type: ignore[arg-type]


def _rng(seed: int, label: str, n: int, kind: int) -> np.random.Generator:
    """Per-file RNG: the same file always gets the same pixels, whatever else is generated."""
    return np.random.default_rng([seed, _crc(label), n, kind])


@lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, cached because every 100x100 image reuses them."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs += 0.5
    ys += 0.5
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def _soft(dist_inside: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (positive = inside)."""
    return np.clip(dist_inside + 0.5, 0.0, 1.0)


def _jitter_color(color: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Small hue / saturation / brightness change so images of a class are not identical."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in color))
    h = (h + rng.normal(0.0, 0.012)) % 1.0
    s = min(1.0, max(0.0, s * rng.normal(1.0, 0.06)))
    v = min(1.0, max(0.0, v * rng.normal(1.0, 0.06)))
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def render_fruit(
    spec: FruitSpec, rng: np.random.Generator, width: int = 100, height: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one fruit; return ``(rgb, alpha)``.

    ``rgb`` is a ``(height, width, 3)`` uint8 array already composited on a white
    background; ``alpha`` is the ``(height, width)`` float32 coverage in 0..1
    (used for the RGBA / palette variants). Everything is vectorised numpy on a
    cached grid, so a 100x100 image costs well under a millisecond.
    """
    xs, ys = _grid(width, height)
    side = min(width, height)
    cx = width / 2 + rng.uniform(-0.07, 0.07) * width
    cy = height / 2 + rng.uniform(-0.07, 0.07) * height
    scale = spec.size * side / 2 * rng.uniform(0.88, 1.06)  # major radius, px
    if spec.shape in ("round", "cluster"):
        angle = rng.uniform(-math.pi, math.pi)
    else:  # elongated fruits: mostly upright, like Fruits-360's spindle shots
        angle = rng.normal(0.0, 0.45)
    ca, sa = math.cos(angle), math.sin(angle)
    dx = xs - cx
    dy = ys - cy
    u = dx * ca + dy * sa  # along the fruit's horizontal axis
    v = -dx * sa + dy * ca  # along its vertical axis (negative = top)

    color = _jitter_color(spec.color, rng)
    top = scale  # distance from centre to the stem attachment point
    tips = None
    if spec.shape in ("round", "oval"):
        a = scale * spec.aspect * rng.uniform(0.96, 1.04)  # horizontal semi-axis
        b = scale
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        alpha = _soft((1.0 - r) * min(a, b))
        top = b
    elif spec.shape == "pear":
        r1 = np.sqrt(u**2 + (v - 0.32 * scale) ** 2) / (0.62 * scale)
        r2 = np.sqrt(u**2 + (v + 0.42 * scale) ** 2) / (0.42 * scale)
        alpha = np.maximum(_soft((1 - r1) * 0.62 * scale), _soft((1 - r2) * 0.42 * scale))
        r = np.minimum(r1, r2)
        top = 0.84 * scale
    elif spec.shape == "banana":
        # A crescent: an ellipse in (distance-to-arc, angle-along-arc) space.
        rc = 1.25 * scale
        d = np.sqrt(u**2 + (v - rc) ** 2)
        theta = np.arctan2(u, rc - v)
        half_span = 0.95 * scale / rc
        thick = 0.27 * scale
        along = theta / half_span
        r = np.sqrt(((d - rc) / thick) ** 2 + along**2)
        alpha = _soft((1.0 - r) * thick)
        tips = np.clip((np.abs(along) - 0.8) * 6.0, 0.0, 1.0)
    elif spec.shape == "cluster":
        berry = 0.3 * scale
        offsets = [(-0.6, -0.5), (0.0, -0.55), (0.6, -0.5), (-0.3, 0.0), (0.3, 0.0), (0.0, 0.5), (-0.62, 0.05)]
        r = np.full(xs.shape, 9.0, dtype=np.float32)
        for ou, ov in offsets:
            ju, jv = rng.normal(0.0, 0.05, 2)
            rb = np.sqrt((u - (ou + ju) * scale) ** 2 + (v - (ov + jv) * scale) ** 2) / berry
            np.minimum(r, rb, out=r)
        alpha = _soft((1.0 - r) * berry)
        top = 0.7 * scale
    else:
        raise ValueError(f"unknown shape {spec.shape!r}")

    # Shading: darker towards the rim, specular highlight from the upper left.
    rr = np.minimum(r, 1.0)
    shade = (1.0 - 0.42 * rr * rr)[..., None]
    rgb = color * shade
    if tips is not None:  # brown banana ends
        brown = np.array([96, 70, 30], dtype=np.float32)
        rgb = rgb + (brown - rgb) * tips[..., None]
    hx, hy = cx - 0.33 * scale, cy - 0.36 * scale
    sigma2 = 2 * (0.22 * scale) ** 2
    highlight = np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / sigma2)[..., None] * 0.5
    rgb = rgb + (WHITE - rgb) * highlight
    if spec.texture > 0:
        noise = rng.standard_normal(xs.shape, dtype=np.float32) * spec.texture
        rgb = rgb + noise[..., None]

    if spec.stem:
        # Segment from inside the top of the fruit outwards, slightly slanted.
        length = 0.32 * scale
        x0, y0 = 0.0, -0.85 * top
        x1, y1 = 0.12 * scale * (1 if rng.random() < 0.5 else -1), -top - length
        sx, sy = x1 - x0, y1 - y0
        t = np.clip(((u - x0) * sx + (v - y0) * sy) / (sx * sx + sy * sy), 0.0, 1.0)
        dist = np.sqrt((u - x0 - t * sx) ** 2 + (v - y0 - t * sy) ** 2)
        stem_alpha = _soft(max(1.0, 0.05 * scale) - dist)[..., None]
        stem_rgb = np.array([88, 62, 32], dtype=np.float32)
        rgb = rgb + (stem_rgb - rgb) * stem_alpha
        alpha = np.maximum(alpha, stem_alpha[..., 0])

    a3 = alpha[..., None]
    out = WHITE + (rgb - WHITE) * a3
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), alpha.astype(np.float32)


# --------------------------------------------------------------------------- #
# Encoding and writing
# --------------------------------------------------------------------------- #


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _jpeg(rgb: np.ndarray) -> bytes:
    return _encode(Image.fromarray(rgb), "JPEG", quality=JPEG_QUALITY)


def webp_bytes(rgb: np.ndarray, *, lossless: bool = False) -> bytes:
    """WebP, Pillow's own encoder: lossy (quality 90) by default, or pixel-exact."""
    if lossless:
        return _encode(Image.fromarray(rgb), "WEBP", lossless=True, quality=100, method=4)
    return _encode(Image.fromarray(rgb), "WEBP", quality=JPEG_QUALITY, method=4)


def heic_bytes(rgb: np.ndarray, *, lossless: bool = False) -> bytes:
    """HEIC (HEVC-coded HEIF, as iPhones write) through pillow-heif's encoder: lossy (quality 90,
    4:2:0 chroma) by default, or pixel-exact (lossless, RGB stored without YCbCr conversion).
    pillow-heif is imported here only, so the rest works without it."""
    import pillow_heif

    image = pillow_heif.from_pillow(Image.fromarray(rgb))
    buf = io.BytesIO()
    if lossless:
        image.save(buf, format="HEIF", quality=-1, chroma=444, matrix_coefficients=0)
    else:
        image.save(buf, format="HEIF", quality=JPEG_QUALITY)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    """Write atomically via a hidden temp file.

    A job listing the folder while the demo adds images must never see a
    half-written JPEG (it would be counted as broken); Spark/Hadoop also skip
    dot-files, so the temp name is invisible to it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def make_decompression_bomb_png(width: int = BOMB_SIZE[0], height: int = BOMB_SIZE[1]) -> bytes:
    """Hand-craft a tiny, well-formed PNG whose IHDR claims ``width x height`` pixels.

    1-bit grayscale, correct CRCs, but IDAT only holds a few rows: the point is
    the header, which is what a size guard must look at. Nothing large is ever
    allocated (a real 30000x30000 image would need ~900 MB once decoded).
    """

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit gray, no interlace
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed pixels
    idat = zlib.compress(row * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


@dataclass
class SampleSet:
    """What one :func:`generate_samples` call wrote (paths are absolute)."""

    root: Path
    images: list[Path] = field(default_factory=list)  # good, decodable: all counted as "images read"
    broken: dict[Path, str] = field(default_factory=dict)  # image extension but must be rejected -> kind
    ignored: list[Path] = field(default_factory=list)  # no image extension: jobs must skip silently
    labels: list[str] = field(default_factory=list)  # class folder names used

    def all_image_files(self) -> list[Path]:
        """Every file with an image extension (good + broken), i.e. what a job lists."""
        return sorted([*self.images, *self.broken])

    def merge(self, other: SampleSet) -> SampleSet:
        """Combine two calls on the same root (e.g. initial run + "add more images")."""
        if Path(other.root) != Path(self.root):
            raise ValueError(f"cannot merge sample sets of {self.root} and {other.root}")
        labels = list(dict.fromkeys([*self.labels, *other.labels]))
        return SampleSet(
            root=self.root,
            images=sorted(set(self.images) | set(other.images)),
            broken={**self.broken, **other.broken},
            ignored=sorted(set(self.ignored) | set(other.ignored)),
            labels=labels,
        )


def _resolve_labels(n_classes: int, labels: Sequence[str] | None) -> list[str]:
    """Explicit labels win; otherwise the first ``n_classes`` defaults, then ``Fruit <k>``."""
    if labels is not None:
        chosen = list(labels)
    else:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        chosen = list(DEFAULT_LABELS[:n_classes])
        chosen += [f"Fruit {k + 1}" for k in range(len(chosen), n_classes)]
    if not chosen:
        raise ValueError("labels must not be empty")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"duplicate labels: {chosen}")
    for label in chosen:
        if (
            not label
            or label in (".", "..")
            or "/" in label
            or "\\" in label
            or "\0" in label
            or label.strip() != label
        ):
            raise ValueError(f"label {label!r} is not usable as a folder name")
    return chosen


def _awkward_files(root: Path, labels: list[str], seed: int, n: int, image_size: int) -> tuple[list[Path], list[Path]]:
    """Write decodable-but-unusual images and non-image files; return (images, ignored)."""
    images: list[Path] = []

    def folder(k: int) -> Path:
        return root / labels[k % len(labels)]

    def draw(k: int, label: str, w: int = image_size, h: int = image_size):
        return render_fruit(fruit_spec(label), _rng(seed, label, n, 100 + k), w, h)

    def emit(k: int, name: str, data: bytes) -> None:
        images.append(_write(folder(k) / name, data))

    lab = lambda k: labels[k % len(labels)]  # noqa: E731

    rgb, _ = draw(0, lab(0))
    emit(0, f"r_{n}_gray.jpg", _encode(Image.fromarray(rgb).convert("L"), "JPEG", quality=JPEG_QUALITY))

    rgb, _ = draw(1, lab(1))
    emit(1, f"r_{n}_cmyk.jpg", _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=JPEG_QUALITY))

    rgb, alpha = draw(2, lab(2))
    a8 = np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)
    emit(2, f"r_{n}_rgba.png", _encode(Image.fromarray(np.dstack([rgb, a8])), "PNG"))

    rgb, alpha = draw(3, lab(3))
    pal_img = Image.fromarray(rgb).quantize(colors=255)
    idx = np.asarray(pal_img).copy()
    idx[alpha < 0.5] = 255  # reserved transparent white entry
    palette = (pal_img.getpalette() or [])[: 255 * 3]
    palette += [0] * (255 * 3 - len(palette)) + [255, 255, 255]
    p_img = Image.fromarray(idx)  # mode L ...
    p_img.putpalette(palette)  # ... becomes mode P
    emit(3, f"r_{n}_palette.png", _encode(p_img, "PNG", transparency=255))

    rgb, _ = draw(4, lab(4))
    gray16 = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
    emit(4, f"r_{n}_16bit.png", _encode(Image.fromarray(gray16), "PNG"))  # mode I;16

    rgb, _ = draw(5, lab(5))
    emit(5, f"R_{n}_100.JPG", _jpeg(rgb))

    rgb, _ = draw(6, lab(6))
    emit(6, f"r_{n}_ext.jpeg", _jpeg(rgb))

    # Stored rotated 90 degrees counter-clockwise with Orientation=6 ("rotate 90 CW
    # to display"): exif_transpose() restores the upright, portrait-shaped fruit.
    upright, _ = draw(7, lab(7), w=image_size * 4 // 5, h=image_size)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    emit(7, f"r_{n}_exif6.jpg", _encode(stored, "JPEG", quality=JPEG_QUALITY, exif=exif))

    rng = _rng(seed, lab(8), n, 199)
    w = int(rng.integers(120, 181))
    h = int(rng.integers(60, 101))
    rgb, _ = draw(8, lab(8), w=w, h=h)
    emit(8, f"r_{n}_wide.jpg", _jpeg(rgb))

    ignored = [
        _write(root / "README.txt", b"Synthetic Fruits-360-like samples (fruits/samples.py). Not an image.\n"),
        _write(
            root / labels[0] / "labels.csv",
            ("label\n" + "".join(f'"{lb}"\n' for lb in labels)).encode("utf-8"),
        ),
        _write(root / labels[1 % len(labels)] / ".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(24)),
    ]
    return images, ignored


def _broken_files(root: Path, labels: list[str], seed: int, image_size: int) -> dict[Path, str]:
    """Write files with an image extension that a job must reject; return path -> kind."""

    def folder(k: int) -> Path:
        return root / labels[k % len(labels)]

    broken: dict[Path, str] = {}
    broken[_write(folder(0) / "empty_0.jpg", b"")] = "empty"

    label = labels[1 % len(labels)]
    rgb, _ = render_fruit(fruit_spec(label), _rng(seed, label, 0, 200), image_size, image_size)
    data = _jpeg(rgb)
    broken[_write(folder(1) / "truncated_0.jpg", data[: int(len(data) * 0.4)])] = "truncated"

    broken[_write(folder(2) / "not_really.png", b"This is plain text, not a PNG.\n" * 4)] = "not_an_image"
    broken[_write(folder(3) / "huge.png", make_decompression_bomb_png())] = "too_many_pixels"
    return broken


def generate_samples(
    root: str | os.PathLike[str],
    *,
    n_classes: int = 4,
    per_class: int = 10,
    image_size: int = 100,
    seed: int = 0,
    start_index: int = 0,
    awkward: bool = False,
    broken: bool = False,
    original_size: int = 0,
    labels: Sequence[str] | None = None,
    modern_formats: bool = False,
) -> SampleSet:
    """Write a Fruits-360-like tree under ``root`` and describe what was written.

    * ``per_class`` images ``<Label>/r_<n>_<image_size>.jpg`` (``r_<n>_100.jpg`` by
      default), ``n`` from ``start_index``: calling again with a larger
      ``start_index`` only adds files.
    * ``original_size`` extra large, non-square ``r_<n>_orig.jpg`` per class (320-640 px wide).
    * ``awkward`` / ``broken``: see the module docstring; awkward names use
      ``n = AWKWARD_INDEX_BASE + start_index``; broken and ignored files have fixed
      names and identical content on every call.
    * ``modern_formats``: one ``.webp`` and one ``.heic`` per class (``n = FORMATS_INDEX_BASE + start_index``).
    * ``labels`` overrides the defaults (``n_classes`` is then ignored).

    The returned :class:`SampleSet` lists only the files written by this call; use
    :meth:`SampleSet.merge` to combine calls.
    """
    if per_class < 0 or original_size < 0 or start_index < 0:
        raise ValueError("per_class, original_size and start_index must be >= 0")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root_path = Path(root).absolute()
    chosen = _resolve_labels(n_classes, labels)
    result = SampleSet(root=root_path, labels=chosen)

    for label in chosen:
        spec = fruit_spec(label)
        folder = root_path / label
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(start_index, start_index + per_class):
            rgb, _ = render_fruit(spec, _rng(seed, label, n, 0), image_size, image_size)
            result.images.append(_write(folder / f"r_{n}_{image_size}.jpg", _jpeg(rgb)))
        for n in range(start_index, start_index + original_size):
            rng = _rng(seed, label, n, 1)
            width = int(rng.integers(320, 641))
            height = int(round(width * rng.choice([rng.uniform(0.6, 0.9), rng.uniform(1.1, 1.4)])))
            rgb, _ = render_fruit(spec, rng, width, height)
            result.images.append(_write(folder / f"r_{n}_orig.jpg", _jpeg(rgb)))

    if modern_formats:
        n = FORMATS_INDEX_BASE + start_index
        for label in chosen:
            for kind, (extension, encode) in enumerate(((".webp", webp_bytes), (".heic", heic_bytes))):
                rgb, _ = render_fruit(fruit_spec(label), _rng(seed, label, n, 300 + kind), image_size, image_size)
                result.images.append(_write(root_path / label / f"r_{n}_{image_size}{extension}", encode(rgb)))

    if awkward:
        imgs, ignored = _awkward_files(root_path, chosen, seed, AWKWARD_INDEX_BASE + start_index, image_size)
        result.images.extend(imgs)
        result.ignored.extend(ignored)
    if broken:
        result.broken.update(_broken_files(root_path, chosen, seed, image_size))

    result.images.sort()
    result.ignored.sort()
    return result


def iter_label_counts(sample_set: SampleSet) -> dict[str, int]:
    """Good images per label (the class folder directly under root), zero for empty labels."""
    counts = {label: 0 for label in sample_set.labels}
    for path in sample_set.images:
        label = Path(path).relative_to(sample_set.root).parts[0]
        counts[label] = counts.get(label, 0) + 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: generate a tree and print a one-line summary."""
    parser = argparse.ArgumentParser(description="Write Fruits-360-like sample images.")
    parser.add_argument("--out", required=True, type=Path, help="root folder to write into")
    parser.add_argument("--classes", type=int, default=4, help="number of default labels to use")
    parser.add_argument("--label", action="append", dest="labels", help="explicit label (repeatable)")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--awkward", action="store_true", help="add unusual but valid files")
    parser.add_argument("--broken", action="store_true", help="add files that must be rejected")
    parser.add_argument("--original-size", type=int, default=0, help="large r_<n>_orig.jpg per class")
    parser.add_argument("--modern-formats", action="store_true", help="add one .webp and one .heic per class")
    args = parser.parse_args(argv)
    try:
        s = generate_samples(
            args.out,
            n_classes=args.classes,
            per_class=args.per_class,
            image_size=args.image_size,
            seed=args.seed,
            start_index=args.start_index,
            awkward=args.awkward,
            broken=args.broken,
            original_size=args.original_size,
            labels=args.labels,
            modern_formats=args.modern_formats,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(
        f"wrote {len(s.images)} good images in {len(s.labels)} classes, "
        f"{len(s.broken)} broken, {len(s.ignored)} ignored files to {s.root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
