"""fruits_spark.image_inputs and binary_files in a local SparkSession: the featurize job's read
step gives one row per readable entry, hidden names included, and a reason for every other."""

from __future__ import annotations

import json

import pytest

from fruits_spark import hadoop_fs, image_inputs
from fruits_spark.runtime import JobError, local_frame


def uri(path) -> str:
    return f"file:{path}"


def test_a_manifest_plan_reads_every_readable_entry_once_and_rejects_the_others(local_spark, tmp_path):
    local_spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    files = {
        "Apple/1.jpg": b"a" * 10,
        "Apple/_DSC2.JPG": b"b" * 11,
        "Kiwi/.3.png": b"c" * 12,
        "Kiwi/empty.jpg": b"",
        "Kiwi/notes.txt": b"text",
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    reads = ["Apple/1.jpg", "Apple/_DSC2.JPG", "Kiwi/.3.png", "Kiwi/empty.jpg", "Kiwi/notes.txt", "Kiwi/gone.jpg"]
    entries = [
        {"source": f"s3://b/landing/{name}", "read": uri(tmp_path / name), "label": name.split("/")[0]}
        for name in reads
    ]
    entries.append({**entries[0], "source": "s3://b/landing/Apple/copy.jpg"})  # two sources, one read location
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))

    inputs = image_inputs.plan(local_spark, manifest_uri=str(manifest), images_uri=None)
    try:
        assert inputs.files == len(entries) and inputs.readable == 4
        rows = sorted((r.source, r.label, bytes(r.content)) for r in inputs.images.collect())
        assert rows == sorted(
            [
                ("s3://b/landing/Apple/1.jpg", "Apple", b"a" * 10),
                ("s3://b/landing/Apple/copy.jpg", "Apple", b"a" * 10),
                ("s3://b/landing/Apple/_DSC2.JPG", "Apple", b"b" * 11),  # from a scratch copy
                ("s3://b/landing/Kiwi/.3.png", "Kiwi", b"c" * 12),
            ]
        )
        reasons = {path.rsplit("/", 1)[1]: reason for path, _, reason, _ in inputs.rejects}
        assert reasons == {
            "empty.jpg": "empty file (0 bytes)",
            "gone.jpg": "file not found",
            "notes.txt": reasons["notes.txt"],
        } and reasons["notes.txt"].startswith("unsupported")
        assert inputs.scratch and hadoop_fs.exists(local_spark, inputs.scratch)
    finally:
        if inputs.scratch:
            hadoop_fs.delete(local_spark, inputs.scratch)


def test_a_missing_or_malformed_manifest_is_one_job_error(local_spark, tmp_path):
    with pytest.raises(JobError, match="manifest not found"):
        image_inputs.read_manifest(local_spark, str(tmp_path / "none.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "s3://b/x.jpg"\n')
    with pytest.raises(JobError, match="malformed manifest"):
        image_inputs.read_manifest(local_spark, str(bad))


def test_a_file_gone_since_the_listing_gets_its_reason(local_spark, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "full.jpg").write_bytes(b"x" * 5)
    assert (
        image_inputs.unread_reason(local_spark, uri(tmp_path / "gone.jpg"))
        == "file disappeared before it could be read"
    )
    assert image_inputs.unread_reason(local_spark, uri(tmp_path / "empty.jpg")) == "empty file (0 bytes)"
    assert "listed (5 bytes)" in image_inputs.unread_reason(local_spark, uri(tmp_path / "full.jpg"))


def test_a_local_frame_has_the_schema_with_or_without_rows(local_spark):
    local_spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    schema = [("path", "string"), ("size_bytes", "bigint")]
    empty = local_frame(local_spark, [], schema)
    assert [(f.name, f.dataType.simpleString()) for f in empty.schema.fields] == schema and empty.count() == 0
    full = local_frame(local_spark, [("a", 1), ("b", None)], schema)
    assert [(f.name, f.dataType.simpleString()) for f in full.schema.fields] == schema
    assert sorted(tuple(r) for r in full.collect()) == [("a", 1), ("b", None)]
