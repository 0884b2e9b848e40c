"""spark_jobs/featurize.py run through spark-submit on generated Fruits-360-like images."""

from __future__ import annotations

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


def uri(path) -> str:
    return canonical_uri(str(path))


@pytest.fixture(scope="module")
def images_run(tmp_path_factory, spark_submit_cmd):
    """One featurize run over a folder with good, awkward, broken and ignored files."""
    root = tmp_path_factory.mktemp("images")
    samples = generate_samples(root / "Test", labels=LABELS, n_classes=3, per_class=5, awkward=True,
                               broken=True, original_size=1, seed=3)
    out = tmp_path_factory.mktemp("out")
    proc = spark_submit_cmd(
        "featurize.py", "--images", str(root / "Test"), "--output", str(out / "features"),
        "--rejects", str(out / "rejects"), "--weights", "none", "--image-size", str(TEST_IMAGE_SIZE),
        "--batch-size", "4",
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
    and weights from a Keras weights file equal to the seeded ones."""
    from fruits_spark.model import build_feature_extractor, seeded_weights

    samples, _, reference, _ = images_run
    chosen = samples.images[:4]
    bracketed = chosen[0].parent / "r_[1]_100.jpg"
    shutil.copyfile(chosen[0], bracketed)
    lines = [str(chosen[0]), "file://" + str(chosen[1]), uri(chosen[2]), str(chosen[2]), "",
             "# a comment", str(chosen[3]), str(bracketed), str(chosen[0].parent / "missing.jpg"),
             str(samples.ignored[0])]
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")

    model = build_feature_extractor(TEST_IMAGE_SIZE)
    model.set_weights(seeded_weights(model.get_weights(), 42))
    weights_file = tmp_path / "mobilenet.weights.h5"
    model.save_weights(str(weights_file))

    proc = spark_submit_cmd(
        "featurize.py", "--manifest", str(manifest), "--output", str(tmp_path / "f"),
        "--rejects", str(tmp_path / "r"), "--weights", "file://" + str(weights_file),
        "--image-size", str(TEST_IMAGE_SIZE),
    )
    features = pq.read_table(tmp_path / "f").to_pandas()
    rejects = pq.read_table(tmp_path / "r").to_pandas()
    assert sorted(features["path"]) == sorted([uri(p) for p in chosen] + [uri(bracketed)])
    reasons = dict(zip(rejects["path"], rejects["reason"]))
    assert reasons == {
        uri(chosen[0].parent / "missing.jpg"): "file not found",
        uri(samples.ignored[0]): "unsupported file type (expected .jpg, .jpeg or .png)",
    }
    assert summary_of(proc, "featurize")["images_read"] == "7"

    # Same weights as --weights none (seed 42) -> same features for the same images.
    ours = features.set_index("path")["features"]
    theirs = reference.to_pandas().set_index("path")["features"]
    for path in map(uri, chosen):
        np.testing.assert_allclose(ours[path], theirs[path], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours[uri(bracketed)], theirs[uri(chosen[0])], rtol=1e-4, atol=1e-5)


def test_bad_arguments_fail_with_a_clear_message(tmp_path, spark_submit_cmd):
    proc = spark_submit_cmd("featurize.py", "--manifest", str(tmp_path / "nope.txt"), "--output",
                            str(tmp_path / "f"), "--rejects", str(tmp_path / "r"), "--weights", "none",
                            check=False)
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
        "featurize.py", "--manifest", str(manifest), "--output", str(tmp_path / "f"),
        "--rejects", str(tmp_path / "r"), "--weights", "none", "--image-size", str(TEST_IMAGE_SIZE),
        "--batch-size", "4", "--runtime", runtime,
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


def test_a_corrupt_weights_file_ends_the_job_in_one_line_before_any_featurizing(images_run, tmp_path,
                                                                               spark_submit_cmd):
    samples, _, _, _ = images_run
    corrupt = tmp_path / "mobilenet.weights.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really HDF5" * 64)
    proc = spark_submit_cmd(
        "featurize.py", "--images", str(samples.root), "--output", str(tmp_path / "f"),
        "--rejects", str(tmp_path / "r"), "--weights", str(corrupt), "--image-size", str(TEST_IMAGE_SIZE),
        check=False,
    )
    assert proc.returncode == 2, proc.stdout[-3000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("featurize: error: ")]
    assert len(errors) == 1, proc.stdout[-3000:]
    assert errors[0].startswith(f"featurize: error: cannot load the weights file {corrupt}: ")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "f").exists() and not (tmp_path / "r").exists()
    assert "built MobileNetV2" not in proc.stderr
