"""Tests for the synthetic Fruits-360-like sample generator (fruits_dev/samples.py).

Tests, ``make demo`` and benchmarks all rely on these files being exactly what
the generator claims: good images decode, awkward ones need care, broken ones
fail in a specific way, and reruns are reproducible.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

import fruits_dev.samples
from fruits_dev.samples import (
    AWKWARD_INDEX_BASE,
    DEFAULT_LABELS,
    IMAGE_EXTENSIONS,
    SampleSet,
    generate_samples,
    iter_label_counts,
    make_decompression_bomb_png,
)


@pytest.fixture(scope="module")
def full_set(tmp_path_factory) -> SampleSet:
    """One tree with every option on, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("fruits")
    return generate_samples(root, n_classes=4, per_class=5, awkward=True, broken=True, original_size=1)


def _by_name(sample_set: SampleSet, name: str) -> Path:
    matches = [p for p in [*sample_set.images, *sample_set.broken, *sample_set.ignored] if p.name == name]
    assert len(matches) == 1, (name, matches)
    return matches[0]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- #
# Layout and normal images
# --------------------------------------------------------------------------- #


def test_normal_layout_and_counts(tmp_path):
    s = generate_samples(tmp_path, n_classes=3, per_class=4)
    assert s.root == tmp_path.absolute()
    assert s.labels == list(DEFAULT_LABELS[:3])
    assert s.broken == {} and s.ignored == []
    assert len(s.images) == 12
    assert s.images == sorted(s.images)
    assert iter_label_counts(s) == {label: 4 for label in s.labels}
    for label in s.labels:
        names = sorted(p.name for p in (tmp_path / label).iterdir())
        assert names == sorted(f"r_{n}_100.jpg" for n in range(4))
    # Nothing else (no temp files) left behind.
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == s.images


def test_normal_images_are_100px_rgb_jpegs_on_white(tmp_path):
    s = generate_samples(tmp_path, n_classes=4, per_class=3)
    for path in s.images:
        with Image.open(path) as im:
            assert im.format == "JPEG"
            assert im.mode == "RGB"
            assert im.size == (100, 100)
            arr = np.asarray(im)
        # White background in the corners, a coloured fruit in the middle.
        corners = np.concatenate([arr[:4, :4], arr[:4, -4:], arr[-4:, :4], arr[-4:, -4:]]).reshape(-1, 3)
        assert corners.min() >= 245, path
        assert (arr.min(axis=2) < 200).mean() > 0.1, path


def test_image_size_parameter(tmp_path):
    s = generate_samples(tmp_path, n_classes=1, per_class=1, image_size=64)
    (path,) = s.images
    assert path.name == "r_0_64.jpg"
    with Image.open(path) as im:
        assert im.size == (64, 64)


def test_original_size_images_are_large_and_non_square(full_set):
    originals = [p for p in full_set.images if p.name.endswith("_orig.jpg")]
    assert len(originals) == 4
    assert {p.parent.name for p in originals} == set(full_set.labels)
    for path in originals:
        assert path.name == "r_0_orig.jpg"
        with Image.open(path) as im:
            w, h = im.size
            assert im.mode == "RGB"
        assert 320 <= w <= 640 and w != h


# --------------------------------------------------------------------------- #
# Determinism and incremental generation
# --------------------------------------------------------------------------- #


def test_same_seed_gives_identical_bytes(tmp_path):
    kwargs = dict(n_classes=3, per_class=3, awkward=True, broken=True, original_size=1)
    generate_samples(tmp_path / "a", seed=7, **kwargs)
    generate_samples(tmp_path / "b", seed=7, **kwargs)
    generate_samples(tmp_path / "c", seed=8, **kwargs)
    a, b, c = (_tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a["Banana/r_0_100.jpg"] != c["Banana/r_0_100.jpg"]


def test_file_content_does_not_depend_on_other_files(tmp_path):
    # Seeded per (seed, label, n): r_3 is the same whether generated alone or in a batch.
    generate_samples(tmp_path / "batch", n_classes=2, per_class=5)
    generate_samples(tmp_path / "alone", n_classes=2, per_class=1, start_index=3)
    for label in DEFAULT_LABELS[:2]:
        rel = Path(label) / "r_3_100.jpg"
        assert (tmp_path / "batch" / rel).read_bytes() == (tmp_path / "alone" / rel).read_bytes()


def test_start_index_adds_new_files_without_overwriting(tmp_path):
    first = generate_samples(tmp_path, n_classes=2, per_class=3, awkward=True)
    before = _tree_bytes(tmp_path)
    second = generate_samples(tmp_path, n_classes=2, per_class=3, start_index=3, awkward=True)
    after = _tree_bytes(tmp_path)

    assert not set(first.images) & set(second.images)
    assert {p.name for p in second.images if p.name.endswith("_100.jpg") and p.name.startswith("r_")} == {
        f"r_{n}_100.jpg" for n in (3, 4, 5)
    }
    assert any(p.name == f"R_{AWKWARD_INDEX_BASE + 3}_100.JPG" for p in second.images)
    for rel, data in before.items():  # nothing rewritten with different content
        assert after[rel] == data, rel
    merged = first.merge(second)
    c1, c2 = iter_label_counts(first), iter_label_counts(second)
    assert iter_label_counts(merged) == {label: c1[label] + c2[label] for label in first.labels}
    assert len(merged.images) == len(first.images) + len(second.images)


def test_image_names_never_collide_case_insensitively(tmp_path):
    # Docker bind mounts on macOS are case-insensitive: R_<n>_100.JPG must not alias r_<n>_100.jpg.
    generate_samples(tmp_path, n_classes=1, per_class=20, awkward=True, broken=True)
    for folder in (p for p in tmp_path.rglob("*") if p.is_dir()):
        names = [p.name.lower() for p in folder.iterdir()]
        stems = [Path(n).stem for n in names if Path(n).suffix in IMAGE_EXTENSIONS]
        assert len(names) == len(set(names))
        assert len(stems) == len(set(stems)), folder


# --------------------------------------------------------------------------- #
# Awkward, ignored and broken files
# --------------------------------------------------------------------------- #


def test_awkward_files_decode_with_expected_modes(full_set):
    n = AWKWARD_INDEX_BASE
    expected = {
        f"r_{n}_gray.jpg": ("JPEG", "L"),
        f"r_{n}_cmyk.jpg": ("JPEG", "CMYK"),
        f"r_{n}_rgba.png": ("PNG", "RGBA"),
        f"r_{n}_palette.png": ("PNG", "P"),
        f"r_{n}_16bit.png": ("PNG", "I;16"),
        f"R_{n}_100.JPG": ("JPEG", "RGB"),
        f"r_{n}_ext.jpeg": ("JPEG", "RGB"),
        f"r_{n}_exif6.jpg": ("JPEG", "RGB"),
        f"r_{n}_wide.jpg": ("JPEG", "RGB"),
    }
    for name, (fmt, mode) in expected.items():
        path = _by_name(full_set, name)
        assert path.parent.name in full_set.labels
        with Image.open(path) as im:
            im.load()
            assert (im.format, im.mode) == (fmt, mode), name
            im.convert("RGB")  # what a featurizer would do


def test_awkward_transparency(full_set):
    with Image.open(_by_name(full_set, f"r_{AWKWARD_INDEX_BASE}_rgba.png")) as im:
        alpha = np.asarray(im)[..., 3]
    assert alpha[0, 0] == 0 and alpha.max() == 255
    with Image.open(_by_name(full_set, f"r_{AWKWARD_INDEX_BASE}_palette.png")) as im:
        assert im.info["transparency"] == 255
        assert np.asarray(im)[0, 0] == 255
        assert np.asarray(im.convert("RGBA"))[..., 3].max() == 255


def test_exif_orientation_6(full_set):
    with Image.open(_by_name(full_set, f"r_{AWKWARD_INDEX_BASE}_exif6.jpg")) as im:
        assert im.getexif()[0x0112] == 6
        assert im.size == (100, 80)  # stored landscape ...
        upright = ImageOps.exif_transpose(im)
    assert upright.size == (80, 100)  # ... displayed portrait


def test_wide_image_is_not_square(full_set):
    with Image.open(_by_name(full_set, f"r_{AWKWARD_INDEX_BASE}_wide.jpg")) as im:
        w, h = im.size
    assert w > h


def test_ignored_files(full_set):
    names = sorted(p.name for p in full_set.ignored)
    assert names == [".DS_Store", "README.txt", "labels.csv"]
    assert _by_name(full_set, "README.txt").parent == full_set.root
    for path in full_set.ignored:
        assert path.is_file()
        assert path.suffix.lower() not in IMAGE_EXTENSIONS
        assert path.parent == full_set.root or path.parent.name in full_set.labels


def test_counts_and_all_image_files(full_set):
    assert len(full_set.images) == 4 * 5 + 4 + 9
    assert sum(iter_label_counts(full_set).values()) == len(full_set.images)
    assert set(full_set.broken.values()) == {"empty", "truncated", "not_an_image", "too_many_pixels"}
    everything = full_set.all_image_files()
    assert everything == sorted(everything)
    assert set(everything) == set(full_set.images) | set(full_set.broken)
    assert all(p.suffix.lower() in IMAGE_EXTENSIONS for p in everything)
    on_disk = {p for p in full_set.root.rglob("*") if p.is_file()}
    assert on_disk == set(everything) | set(full_set.ignored)


def test_broken_empty_and_not_an_image(full_set):
    empty = _by_name(full_set, "empty_0.jpg")
    assert full_set.broken[empty] == "empty"
    assert empty.stat().st_size == 0
    text = _by_name(full_set, "not_really.png")
    assert full_set.broken[text] == "not_an_image"
    assert text.stat().st_size > 0
    for path in (empty, text):
        with pytest.raises(Image.UnidentifiedImageError):
            Image.open(path)


def test_broken_truncated_jpeg_fails_on_load(full_set, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    path = _by_name(full_set, "truncated_0.jpg")
    assert full_set.broken[path] == "truncated"
    with Image.open(path) as im:  # the header is intact, so open() succeeds ...
        assert im.format == "JPEG" and im.size == (100, 100)
        with pytest.raises(OSError, match="truncated"):
            im.load()  # ... and decoding fails


def test_broken_decompression_bomb(full_set, monkeypatch):
    path = _by_name(full_set, "huge.png")
    assert full_set.broken[path] == "too_many_pixels"
    data = path.read_bytes()
    assert len(data) < 1024
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, tag = struct.unpack(">I4s", data[8:16])
    assert (length, tag) == (13, b"IHDR")
    assert struct.unpack(">II", data[16:24]) == (30000, 30000)
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29]) & 0xFFFFFFFF

    # Pillow's default guard rejects it from the header alone (9e8 px > 2 * MAX_IMAGE_PIXELS) ...
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    # ... and without the guard it opens lazily, reporting the claimed size (never .load() it).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(path) as im:
        assert im.size == (30000, 30000)
        assert im.format == "PNG"


def test_make_decompression_bomb_png_custom_size():
    data = make_decompression_bomb_png(12345, 678)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (12345, 678)


# --------------------------------------------------------------------------- #
# Classes and labels
# --------------------------------------------------------------------------- #


def test_classes_differ_in_mean_colour(tmp_path):
    s = generate_samples(tmp_path, n_classes=4, per_class=8)
    feats: dict[str, list[np.ndarray]] = {}
    for path in s.images:
        with Image.open(path) as im:
            feats.setdefault(path.parent.name, []).append(np.asarray(im, dtype=np.float64).mean(axis=(0, 1)))
    centroids = {label: np.mean(v, axis=0) for label, v in feats.items()}
    labels = list(centroids)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            assert np.linalg.norm(centroids[a] - centroids[b]) > 15, (a, b)
    # Nearest-centroid on mean colour alone separates the classes: PCA will show clusters.
    correct = sum(
        min(labels, key=lambda lb: np.linalg.norm(f - centroids[lb])) == label
        for label, fs in feats.items()
        for f in fs
    )
    assert correct / len(s.images) >= 0.95


def test_default_labels():
    assert len(DEFAULT_LABELS) == 16
    assert len(set(DEFAULT_LABELS)) == 16
    assert all(label.isascii() for label in DEFAULT_LABELS[:8])
    non_ascii = [label for label in DEFAULT_LABELS if not label.isascii()]
    assert non_ascii == ["Pêche de vigne"]
    assert DEFAULT_LABELS.index("Pêche de vigne") >= 12


def test_small_runs_use_ascii_labels_with_spaces(tmp_path):
    s = generate_samples(tmp_path, n_classes=4, per_class=1)
    assert all(label.isascii() for label in s.labels)
    assert any(" " in label for label in s.labels)
    for label in s.labels:
        assert (tmp_path / label).is_dir()


def test_many_classes_include_non_ascii_folder(tmp_path):
    s = generate_samples(tmp_path, n_classes=18, per_class=1)
    assert "Pêche de vigne" in s.labels
    assert s.labels[16:] == ["Fruit 17", "Fruit 18"]
    assert (tmp_path / "Pêche de vigne" / "r_0_100.jpg").is_file()
    assert iter_label_counts(s) == {label: 1 for label in s.labels}


def test_explicit_labels(tmp_path):
    s = generate_samples(tmp_path, labels=["Kiwi", "Zucchini Dark 1", "Çilek"], per_class=2, n_classes=1)
    assert s.labels == ["Kiwi", "Zucchini Dark 1", "Çilek"]
    assert iter_label_counts(s) == {"Kiwi": 2, "Zucchini Dark 1": 2, "Çilek": 2}
    with Image.open(tmp_path / "Zucchini Dark 1" / "r_1_100.jpg") as im:
        assert im.size == (100, 100)


@pytest.mark.parametrize("labels", [["a/b"], [".."], [""], ["Kiwi", "Kiwi"], [" Kiwi"], []])
def test_bad_labels_rejected(tmp_path, labels):
    with pytest.raises(ValueError):
        generate_samples(tmp_path, labels=labels)


@pytest.mark.parametrize(
    "kwargs", [dict(n_classes=0), dict(per_class=-1), dict(seed=-1), dict(start_index=-1), dict(image_size=4)]
)
def test_bad_arguments_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_samples(tmp_path, **kwargs)


# --------------------------------------------------------------------------- #
# Module hygiene and CLI
# --------------------------------------------------------------------------- #


def test_module_has_no_heavy_imports():
    code = (
        "import sys; import fruits_dev.samples; "
        "heavy = [m for m in ('tensorflow', 'pyspark', 'airflow') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            fruits_dev.samples.__file__,
            "--out",
            str(out),
            "--classes",
            "2",
            "--per-class",
            "3",
            "--awkward",
            "--broken",
            "--original-size",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "17 good images in 2 classes, 4 broken, 3 ignored" in lines[0]
    assert str(out) in lines[0]
    assert (out / DEFAULT_LABELS[0] / "r_2_100.jpg").is_file()
