"""storage.Bucket: the one S3 layer of the orchestration side, on moto through a real S3Hook."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits import storage
from fruits.storage import Bucket


def test_text_json_and_bytes_round_trip(bucket: Bucket):
    bucket.write_text("a/b.txt", "élan\n")
    bucket.write_json("a/c.json", {"k": [1, 2], "label": "Pêche"})
    bucket.write_bytes("a/d.bin", b"\x00\xff")
    assert bucket.read_text("a/b.txt") == "élan\n"
    assert bucket.read_json("a/c.json") == {"k": [1, 2], "label": "Pêche"}
    assert bucket.read_bytes("a/d.bin") == b"\x00\xff" and bucket.size("a/d.bin") == 2
    assert bucket.read_json("a/missing.json", default={"none": True}) == {"none": True}
    assert bucket.exists("a/b.txt") and not bucket.exists("a/missing.json")


def test_list_keys_is_sorted_and_leaves_out_folder_markers(bucket: Bucket):
    for key in ("p/z.jpg", "p/Apple Red 1/a.jpg", "p/folder/", "q/other.jpg"):
        bucket.write_text(key, "x")
    assert bucket.list_keys("p/") == ["p/Apple Red 1/a.jpg", "p/z.jpg"]
    assert bucket.list_keys("nothing/") == []


def test_uris_and_keys_of_this_bucket_only(bucket: Bucket):
    assert bucket.uri("features/batch=b1/") == "s3://fruits-unit/features/batch=b1/"
    assert bucket.key_of("s3://fruits-unit/pca/run=r/report.json") == "pca/run=r/report.json"
    with pytest.raises(ValueError, match="not in bucket fruits-unit"):
        bucket.key_of("s3://other-bucket/secret.jpg")
    with pytest.raises(ValueError):
        bucket.key_of("s3://fruits-unit-2/x")  # a bucket whose name starts like ours


def test_delete_prefix_removes_more_than_one_request_holds(bucket: Bucket, monkeypatch):
    monkeypatch.setattr(storage, "DELETE_BATCH", 2)  # as 1,000 does for 1,001+ keys, without writing them
    for i in range(5):
        bucket.write_text(f"old/{i:04d}", "")
    bucket.write_text("keep/x", "")
    assert bucket.delete_prefix("old/") == 5
    assert bucket.list_keys("old/") == [] and bucket.list_keys("keep/") == ["keep/x"]


def _parquet(table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_read_parquet_joins_every_part_and_names_a_missing_dataset(bucket: Bucket):
    bucket.write_bytes("d/part-0.parquet", _parquet(pa.table({"path": ["a"], "n": [1]})))
    bucket.write_bytes("d/part-1.parquet", _parquet(pa.table({"path": ["b", "c"], "n": [2, 3]})))
    bucket.write_text("d/_SUCCESS", "")
    table = bucket.read_parquet("d/", ["path"])
    assert table.column_names == ["path"] and table.column("path").to_pylist() == ["a", "b", "c"]
    with pytest.raises(FileNotFoundError, match="no parquet files under s3://fruits-unit/empty/"):
        bucket.read_parquet("empty/")


def test_region_reads_the_bucket_location(bucket: Bucket):
    assert bucket.region() == "eu-west-3"
