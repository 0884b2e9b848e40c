"""spark_jobs/featurize.py run through spark-submit on generated Fruits-360-like images."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import TEST_IMAGE_SIZE, summary_of
from fruits_dev.samples import generate_samples
from fruits_spark.inference import DEFAULT_RUNTIME, RUNTIMES
from fruits_spark.paths import canonical_uri

pytestmark = pytest.mark.spark

LABELS = ["Apple Red 1", "Pêche de vigne", "Banana"]
CAMERA_NAMES = ["_DSC0001.JPG", ".hidden.jpg"]
UNSUPPORTED = "unsupported file type (expected .jpg, .jpeg, .png, .webp, .heic or .heif)"


def uri(path) -> str:
    return canonical_uri(str(path))


@pytest.fixture(scope="module")
def images_run(tmp_path_factory, spark_submit_cmd):
    """One featurize run over a folder with good, awkward, broken and ignored files."""
    root = tmp_path_factory.mktemp("images")
    samples = generate_samples(
        root / "Test",
        labels=LABELS,
        n_classes=3,
        per_class=5,
        awkward=True,
        broken=True,
        original_size=1,
        seed=3,
        modern_formats=True,
    )
    # Camera names Spark's own listing hides (leading _ or .): images all the same. A folder whose
    # name starts with "." (a thumbnail cache) is not part of the input.
    first = samples.images[0]
    for name in CAMERA_NAMES:
        samples.images.append(first.parent / name)
        shutil.copyfile(first, first.parent / name)
    (first.parent / ".thumbnails").mkdir()
    samples.ignored.append(first.parent / ".thumbnails" / first.name)
    shutil.copyfile(first, samples.ignored[-1])
    out = tmp_path_factory.mktemp("out")
    proc = spark_submit_cmd(
        "featurize.py",
        "--images",
        str(root / "Test"),
        "--output",
        str(out / "features"),
        "--rejects",
        str(out / "rejects"),
        "--weights",
        "none",
        "--image-size",
        str(TEST_IMAGE_SIZE),
        "--batch-size",
        "4",
    )
    features = pq.read_table(out / "features")
    rejects = pq.read_table(out / "rejects").to_pandas()
    return samples, proc, features, rejects


def test_every_image_file_lands_exactly_once(images_run):
    samples, proc, features, rejects = images_run
    expected = {uri(p) for p in samples.all_image_files()}
    featured = features.column("path").to_pylist()
    rejected = rejects["path"].tolist()
    assert len(featured) == len(set(featured)) and len(rejected) == len(set(rejected))
    assert set(featured).isdisjoint(rejected)
    assert set(featured) | set(rejected) == expected
    assert set(featured) == {uri(p) for p in samples.images}
    summary = summary_of(proc, "featurize")
    assert int(summary["images_read"]) == len(expected)
    assert int(summary["featurized"]) == len(samples.images)
    assert int(summary["rejected"]) == len(samples.broken)
    assert float(summary["images_per_s"]) > 0


def test_non_image_files_are_ignored(images_run):
    samples, _, features, rejects = images_run
    ignored = {uri(p) for p in samples.ignored}
    assert ignored, "the sample set should contain files without an image extension"
    assert ignored.isdisjoint(features.column("path").to_pylist())
    assert ignored.isdisjoint(rejects["path"].tolist())


def test_labels_are_parent_folder_names_with_spaces_and_accents(images_run):
    samples, _, features, _ = images_run
    table = features.to_pandas()
    for path, label in zip(table["path"], table["label"]):
        assert label == path.split("/")[-2]
    assert set(table["label"]) == set(LABELS)


def test_features_are_1280_finite_floats(images_run):
    _, _, features, _ = images_run
    assert str(features.schema.field("features").type) == "list<element: float>"
    matrix = np.stack(features.column("features").to_numpy(zero_copy_only=False))
    assert matrix.shape == (features.num_rows, 1280)
    assert np.isfinite(matrix).all()
    assert matrix.std(axis=0).max() > 0, "different images must give different features"


def test_awkward_images_are_featurized_with_their_original_size(images_run):
    samples, _, features, _ = images_run
    table = features.to_pandas().set_index("path")
    for path in samples.images:
        row = table.loc[uri(path)]
        assert row["size_bytes"] == path.stat().st_size
        assert len(row["sha256"]) == 64
    originals = [p for p in samples.images if p.name.endswith("_orig.jpg")]
    assert originals and all(table.loc[uri(p), "width"] > 100 for p in originals)
    upper = [p for p in samples.images if p.suffix in (".JPG", ".jpeg", ".png")]
    assert len(upper) >= 3


def test_webp_heic_and_camera_names_are_featurized_from_a_folder(images_run):
    """`_DSC0001.JPG` and `.hidden.jpg` (names Spark's listing hides) are read, with the features of
    the file they copy; WebP and HEIC files are images like any other."""
    samples, _, features, _ = images_run
    table = features.to_pandas().set_index("path")
    modern = [p for p in samples.images if p.suffix in (".webp", ".heic")]
    assert len(modern) == 2 * len(LABELS)
    for path in modern:
        assert table.loc[uri(path), "width"] == 100 and table.loc[uri(path), "label"] == path.parent.name
    cameras = [p for p in samples.images if p.name in CAMERA_NAMES]
    assert len(cameras) == len(CAMERA_NAMES)
    for path in cameras:
        row = table.loc[uri(path)]
        assert row["label"] == path.parent.name
        twins = table[(table["sha256"] == row["sha256"]) & ~table.index.isin([uri(p) for p in cameras])]
        assert len(twins) == 1
        np.testing.assert_allclose(row["features"], twins["features"].iloc[0], rtol=1e-5, atol=1e-6)


def test_broken_files_are_rejected_with_readable_reasons(images_run):
    samples, _, _, rejects = images_run
    reasons = dict(zip(rejects["path"], rejects["reason"]))
    expected_words = {
        "empty": "empty file (0 bytes)",
        "truncated": "cannot decode image",
        "not_an_image": "not a decodable image",
        "too_many_pixels": "too many pixels",
    }
    for path, kind in samples.broken.items():
        assert expected_words[kind] in reasons[uri(path)], (path, reasons[uri(path)])
    labels = dict(zip(rejects["path"], rejects["label"]))
    assert all(labels[uri(p)] == p.parent.name for p in samples.broken)


def test_each_worker_builds_the_model_once(images_run):
    samples, proc, _, _ = images_run
    builds = [line for line in proc.stderr.splitlines() if "built MobileNetV2" in line]
    batches = len(samples.images) / 4
    assert 1 <= len(builds) <= 2, builds  # local[2]: at most one build per Python worker
    assert batches > 2 * len(builds)


def test_manifest_mode_reads_exactly_the_listed_files(images_run, tmp_path, spark_submit_cmd):
    """Manifest entries in any form; missing, duplicate and non-image entries; glob characters;
    names Spark hides (`_DSC0001.JPG`, `.hidden.jpg`); and weights from a Keras weights file equal
    to the seeded ones."""
    from fruits_spark.model import build_feature_extractor, seeded_weights

    samples, _, reference, _ = images_run
    chosen = samples.images[:4]
    cameras = [p for p in samples.images if p.name in CAMERA_NAMES]
    bracketed = chosen[0].parent / "r_[1]_100.jpg"
    shutil.copyfile(chosen[0], bracketed)
    lines = [
        str(chosen[0]),
        "file://" + str(chosen[1]),
        uri(chosen[2]),
        str(chosen[2]),
        "",
        "# a comment",
        str(chosen[3]),
        str(bracketed),
        str(chosen[0].parent / "missing.jpg"),
        str(samples.ignored[0]),
        str(cameras[0]),
        "file://" + str(cameras[1]),
    ]
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")

    model = build_feature_extractor(TEST_IMAGE_SIZE)
    model.set_weights(seeded_weights(model.get_weights(), 42))
    weights_file = tmp_path / "mobilenet.weights.h5"
    model.save_weights(str(weights_file))

    proc = spark_submit_cmd(
        "featurize.py",
        "--manifest",
        str(manifest),
        "--output",
        str(tmp_path / "f"),
        "--rejects",
        str(tmp_path / "r"),
        "--weights",
        "file://" + str(weights_file),
        "--image-size",
        str(TEST_IMAGE_SIZE),
    )
    features = pq.read_table(tmp_path / "f").to_pandas()
    rejects = pq.read_table(tmp_path / "r").to_pandas()
    assert sorted(features["path"]) == sorted([uri(p) for p in chosen + cameras] + [uri(bracketed)])
    assert dict(zip(features["path"], features["label"])) == {
        uri(p): p.parent.name for p in chosen + cameras + [bracketed]
    }
    reasons = dict(zip(rejects["path"], rejects["reason"]))
    assert reasons == {
        uri(chosen[0].parent / "missing.jpg"): "file not found",
        uri(samples.ignored[0]): UNSUPPORTED,
    }
    assert summary_of(proc, "featurize")["images_read"] == "9"
    assert_scratch_removed(proc)

    # Same weights as --weights none (seed 42) -> same features for the same images.
    ours = features.set_index("path")["features"]
    theirs = reference.to_pandas().set_index("path")["features"]
    for path in map(uri, chosen + cameras):
        np.testing.assert_allclose(ours[path], theirs[path], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours[uri(bracketed)], theirs[uri(chosen[0])], rtol=1e-4, atol=1e-5)


def assert_scratch_removed(proc) -> None:
    """The copies of hidden-named files were made, and their folder is gone after the job."""
    [copied] = [line for line in (proc.stdout + proc.stderr).splitlines() if "whose names Spark hides" in line]
    scratch = copied.rsplit(" to ", 1)[1]
    assert scratch.startswith("file:/") and not os.path.exists(scratch[len("file:") :]), scratch


def test_jsonl_manifest_rows_are_sources_with_the_manifests_labels(images_run, tmp_path, spark_submit_cmd):
    """The DAG's manifest: bytes from `read` (safe copies, or a hidden name), rows named by `source`,
    labels from the manifest (null: unlabelled); every entry in exactly one output; WebP and HEIC of
    a PNG's pixels give the PNG's features (lossless: equal; lossy: nearest)."""
    from PIL import Image

    from fruits_dev.samples import fruit_spec, heic_bytes, render_fruit, webp_bytes

    samples, _, reference, _ = images_run
    images = tmp_path / "work" / "batches" / "b1" / "images"
    images.mkdir(parents=True)
    landing = "s3://bucket/landing"
    entries, originals = [], {}

    def stage(source: str, label, data: bytes | None, name: str | None = None) -> None:
        read = images / (name or f"{len(entries):06d}{os.path.splitext(source)[1].lower()}")
        if data is not None:
            read.write_bytes(data)
        entries.append({"source": source, "read": str(read), "label": label, "size": len(data or b""), "etag": '"x"'})

    for original in samples.images[:2]:
        originals[f"{landing}/{original.parent.name}/{original.name}"] = original
    originals[f"{landing}/Apple/_DSC0001.JPG"] = samples.images[2]  # a camera name, read from a safe copy
    originals[f"{landing}/Apple/.hidden.jpg"] = samples.images[3]  # read from a hidden name itself
    originals[f"{landing}/top.jpg"] = samples.images[4]  # directly under landing: no label
    originals[f"{landing}/Odd/line\u2028sep.jpg"] = samples.images[5]
    for source, original in originals.items():
        label = None if source == f"{landing}/top.jpg" else source.split("/")[-2]
        stage(source, label, original.read_bytes(), "_DSC0002.JPG" if "hidden" in source else None)
    entries.append(dict(entries[0], source=f"{landing}/Again/same-bytes.jpg", label="Again"))  # shares a read

    rgb, _ = render_fruit(fruit_spec("Banana"), np.random.default_rng(11), 100, 100)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    parity = {
        "png": png.getvalue(),
        "lossless.webp": webp_bytes(rgb, lossless=True),
        "lossless.heic": heic_bytes(rgb, lossless=True),
        "lossy.webp": webp_bytes(rgb),
        "lossy.heic": heic_bytes(rgb),
    }
    for name, data in parity.items():
        stage(f"{landing}/Parity/fruit.{name}", "Parity", data)

    stage(f"{landing}/Apple/gone.jpg", "Apple", None)  # read does not exist
    stage(f"{landing}/Apple/notes.txt", "Apple", b"not an image type")
    stage(f"{landing}/Apple/empty.jpg", "Apple", b"")
    stage(f"{landing}/Apple/text.jpg", "Apple", b"plain text with a .jpg name")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")

    proc = spark_submit_cmd(
        "featurize.py",
        "--manifest",
        str(manifest),
        "--output",
        str(tmp_path / "f"),
        "--rejects",
        str(tmp_path / "r"),
        "--weights",
        "none",
        "--image-size",
        str(TEST_IMAGE_SIZE),
        "--batch-size",
        "4",
    )
    features = pq.read_table(tmp_path / "f").to_pandas().set_index("path")
    rejects = pq.read_table(tmp_path / "r").to_pandas().set_index("path")
    sources = [e["source"] for e in entries]
    assert sorted(features.index.tolist() + rejects.index.tolist()) == sorted(sources)
    labels = {**features["label"].to_dict(), **rejects["label"].to_dict()}
    assert labels == {e["source"]: e["label"] for e in entries}
    assert labels[f"{landing}/top.jpg"] is None
    assert rejects["reason"].to_dict() == {
        f"{landing}/Apple/gone.jpg": "file not found",
        f"{landing}/Apple/notes.txt": UNSUPPORTED,
        f"{landing}/Apple/empty.jpg": "empty file (0 bytes)",
        f"{landing}/Apple/text.jpg": "not a decodable image (format not recognised)",
    }
    assert summary_of(proc, "featurize")["images_read"] == str(len(entries))
    assert_scratch_removed(proc)

    theirs = reference.to_pandas().set_index("path")["features"]
    originals[f"{landing}/Again/same-bytes.jpg"] = samples.images[0]
    for source, original in originals.items():
        np.testing.assert_allclose(features.at[source, "features"], theirs[uri(original)], rtol=1e-4, atol=1e-5)
        assert features.at[source, "size_bytes"] == original.stat().st_size

    vectors = {name: np.asarray(features.at[f"{landing}/Parity/fruit.{name}", "features"]) for name in parity}
    for name in ("lossless.webp", "lossless.heic"):
        np.testing.assert_allclose(vectors[name], vectors["png"], rtol=1e-4, atol=1e-5)
    others = [np.asarray(v) for path, v in features["features"].items() if "/Parity/" not in path]
    for name in ("lossy.webp", "lossy.heic"):
        distance = np.linalg.norm(vectors[name] - vectors["png"])
        assert distance < 0.1 * np.linalg.norm(vectors["png"]), name
        assert distance < min(np.linalg.norm(vectors["png"] - other) for other in others), name


def test_a_malformed_jsonl_manifest_fails_in_one_line_naming_the_line(tmp_path, spark_submit_cmd):
    manifest = tmp_path / "manifest.jsonl"
    good = json.dumps({"source": "s3://b/landing/A/x.jpg", "read": str(tmp_path / "x.jpg"), "label": "A"})
    manifest.write_text(good + "\n" + '{"source": "s3://b/landing/A/y.jpg", "label": }\n', encoding="utf-8")
    proc = spark_submit_cmd(
        "featurize.py",
        "--manifest",
        str(manifest),
        "--output",
        str(tmp_path / "f"),
        "--rejects",
        str(tmp_path / "r"),
        "--weights",
        "none",
        check=False,
    )
    assert proc.returncode == 2, proc.stdout[-3000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("featurize: error: ")]
    assert errors == [
        f"featurize: error: malformed manifest {manifest}: line 2: not a JSON object (Expecting value at column 47)"
    ], proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "f").exists() and not (tmp_path / "r").exists()


def test_bad_arguments_fail_with_a_clear_message(tmp_path, spark_submit_cmd):
    proc = spark_submit_cmd(
        "featurize.py",
        "--manifest",
        str(tmp_path / "nope.txt"),
        "--output",
        str(tmp_path / "f"),
        "--rejects",
        str(tmp_path / "r"),
        "--weights",
        "none",
        check=False,
    )
    assert proc.returncode == 2
    # spark-submit merges the Python driver's stderr into its stdout.
    assert f"featurize: error: manifest not found: {tmp_path / 'nope.txt'}" in proc.stdout


def test_workers_of_the_default_runtime_do_not_import_tensorflow(images_run):
    _, proc, _, _ = images_run
    builds = [line for line in proc.stderr.splitlines() if "built MobileNetV2" in line]
    assert builds and all(f"for {DEFAULT_RUNTIME} " in line for line in builds), builds
    assert all(line.endswith("TensorFlow loaded: no") for line in builds), builds
    assert summary_of(proc, "featurize")["runtime"] == DEFAULT_RUNTIME


@pytest.mark.parametrize("runtime", sorted(set(RUNTIMES) - {DEFAULT_RUNTIME}))
def test_every_runtime_gives_the_same_rows_and_features(images_run, tmp_path, spark_submit_cmd, runtime):
    """The same files through another runtime: the same rows, rejects and features (1e-4 relative)."""
    samples, _, reference, reference_rejects = images_run
    manifest = tmp_path / "manifest.txt"  # the fixture's files (other tests add files to its folder)
    manifest.write_text("".join(f"{path}\n" for path in samples.all_image_files()), encoding="utf-8")
    proc = spark_submit_cmd(
        "featurize.py",
        "--manifest",
        str(manifest),
        "--output",
        str(tmp_path / "f"),
        "--rejects",
        str(tmp_path / "r"),
        "--weights",
        "none",
        "--image-size",
        str(TEST_IMAGE_SIZE),
        "--batch-size",
        "4",
        "--runtime",
        runtime,
    )
    builds = [line for line in proc.stderr.splitlines() if "built MobileNetV2" in line]
    assert builds and all(f"for {runtime} " in line for line in builds), builds
    loaded = "yes" if runtime == "tensorflow" else "no"
    assert all(line.endswith(f"TensorFlow loaded: {loaded}") for line in builds), builds
    ours = pq.read_table(tmp_path / "f").to_pandas().set_index("path")
    theirs = reference.to_pandas().set_index("path")
    assert sorted(ours.index) == sorted(theirs.index)
    columns = ["label", "width", "height", "size_bytes", "sha256"]
    assert ours.loc[theirs.index, columns].equals(theirs[columns])
    for path in theirs.index:
        expected = np.asarray(theirs.at[path, "features"])
        assert np.abs(np.asarray(ours.at[path, "features"]) - expected).max() <= 1e-4 * np.abs(expected).max()
    rejects = pq.read_table(tmp_path / "r").to_pandas().sort_values("path").reset_index(drop=True)
    assert rejects.equals(reference_rejects.sort_values("path").reset_index(drop=True))


def test_a_corrupt_weights_file_ends_the_job_in_one_line_before_any_featurizing(images_run, tmp_path, spark_submit_cmd):
    samples, _, _, _ = images_run
    corrupt = tmp_path / "mobilenet.weights.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really HDF5" * 64)
    proc = spark_submit_cmd(
        "featurize.py",
        "--images",
        str(samples.root),
        "--output",
        str(tmp_path / "f"),
        "--rejects",
        str(tmp_path / "r"),
        "--weights",
        str(corrupt),
        "--image-size",
        str(TEST_IMAGE_SIZE),
        check=False,
    )
    assert proc.returncode == 2, proc.stdout[-3000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("featurize: error: ")]
    assert len(errors) == 1, proc.stdout[-3000:]
    assert errors[0].startswith(f"featurize: error: cannot load the weights file {corrupt}: ")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "f").exists() and not (tmp_path / "r").exists()
    assert "built MobileNetV2" not in proc.stderr


def test_a_converted_model_is_cached_and_the_cached_one_gives_the_same_features(images_run, tmp_path, spark_submit_cmd):
    """--model-cache: the first job converts and stores; the next one loads the entry instead (no
    conversion child, no TensorFlow in the driver's family) and gives the same features."""
    samples, _, reference, _ = images_run
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("".join(f"{path}\n" for path in samples.images[:6]), encoding="utf-8")
    cache = tmp_path / "model-cache"

    def run(out: str) -> str:
        proc = spark_submit_cmd(
            "featurize.py",
            "--manifest",
            str(manifest),
            "--output",
            str(tmp_path / out / "f"),
            "--rejects",
            str(tmp_path / out / "r"),
            "--weights",
            "none",
            "--image-size",
            str(TEST_IMAGE_SIZE),
            "--batch-size",
            "4",
            "--model-cache",
            str(cache),
        )
        return proc.stdout + proc.stderr  # spark-submit passes the driver's log to its stdout

    cold = run("cold")
    [entry] = list(cache.iterdir())
    assert "model cache miss" in cold and "model cache: stored" in cold
    warm = run("warm")
    assert "model cache hit" in warm and "building MobileNetV2 (weights" not in warm
    assert list(cache.iterdir()) == [entry]
    expected = reference.to_pandas().set_index("path")
    for out in ("cold", "warm"):
        ours = pq.read_table(tmp_path / out / "f").to_pandas().set_index("path")
        assert len(ours) == 6
        for path in ours.index:
            assert np.array_equal(np.asarray(ours.at[path, "features"]), np.asarray(expected.at[path, "features"]))
    entry.write_bytes(b"damaged")  # an unusable entry is a miss, converted again and replaced
    again = run("again")
    assert "ignoring an unreadable model cache entry" in again and "model cache: stored" in again


def test_a_file_deleted_after_the_listing_is_a_reject_and_the_others_are_featurized(local_spark, tmp_path):
    """The job's own functions in this process, with a file deleted between the plan (listing and
    Spark's file index) and the read: that file is a reject with its reason, the others get rows."""
    from conftest import load_job
    from fruits_spark import image_inputs, inference
    from fruits_spark.model import load_model

    featurize = load_job("featurize")
    samples = generate_samples(tmp_path / "Test", labels=LABELS[:2], n_classes=2, per_class=3, seed=5)
    args = featurize.parse_args(
        [
            "--images",
            str(tmp_path / "Test"),
            "--output",
            str(tmp_path / "features"),
            "--rejects",
            str(tmp_path / "rejects"),
            "--weights",
            "none",
            "--image-size",
            str(TEST_IMAGE_SIZE),
            "--batch-size",
            "4",
        ]
    )
    for key, value in featurize.session_conf(args.batch_size).items():
        if key.startswith("spark.sql."):  # the others are fixed when a session starts
            local_spark.conf.set(key, value)
    inputs = image_inputs.plan(local_spark, manifest_uri=args.manifest, images_uri=args.images)
    assert inputs.readable == len(samples.images) and not inputs.rejects
    gone = samples.images[1]
    gone.unlink()
    model = inference.convert(load_model("none", TEST_IMAGE_SIZE, 42), args.runtime, TEST_IMAGE_SIZE)
    undecodable = featurize.featurize_and_write(local_spark, args, inputs, local_spark.sparkContext.broadcast(model))
    featured = pq.read_table(tmp_path / "features").column("path").to_pylist()
    assert sorted(featured) == sorted(uri(p) for p in samples.images if p != gone)
    assert undecodable == [
        (uri(gone), gone.parent.name, "file disappeared before it could be read", inputs.lengths[uri(gone)])
    ]
